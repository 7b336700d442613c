// The metrics listener off loopback: refused when the configuration is loaded unless it has TLS
// and client authentication (a client CA, a tokens file, or both); loopback stays plain HTTP.
import t from 'tap';
import { resolveConfig } from '../../src/config.js';

const load = (metrics: Record<string, unknown>) => resolveConfig({ metrics: { enabled: true, ...metrics } }, []);
const tls = { cert: '/etc/x/metrics.pem', key: '/etc/x/metrics.key' };

t.test('loopback: plain HTTP as before, with or without credentials', async (t) => {
  for (const host of ['127.0.0.1', '127.0.0.3', '::1', 'localhost']) t.doesNotThrow(() => load({ host }), `${host} plain`);
  t.doesNotThrow(() => load({ host: '127.0.0.1', tokensFile: '/etc/x/t.json' }), 'a token over loopback');
  t.doesNotThrow(() => load({ host: '127.0.0.1', tls }), 'TLS without client authentication on loopback');
});

t.test('any other address: TLS and client authentication, or the configuration is refused', async (t) => {
  for (const host of ['0.0.0.0', '::', '192.0.2.10', 'metrics.example.net']) {
    t.throws(() => load({ host }), /is not a loopback address/, `${host} plain is refused`);
    t.throws(() => load({ host, tls }), /missing: metrics\.tls\.ca and\/or metrics\.tokensFile/, `${host} TLS without auth`);
    t.throws(() => load({ host, tokensFile: '/etc/x/t.json' }), /missing: metrics\.tls \(cert, key\)/, `${host} token without TLS`);
    t.doesNotThrow(() => load({ host, tls, tokensFile: '/etc/x/t.json' }), `${host} TLS and tokens`);
    t.doesNotThrow(() => load({ host, tls: { ...tls, ca: '/etc/x/ca.pem', requireClientCert: true } }), `${host} mTLS`);
  }
  t.throws(
    () => load({ host: '0.0.0.0' }),
    /\/metrics\/host 0\.0\.0\.0 is not a loopback address: .*only over TLS with client authentication/,
  );
  t.doesNotThrow(() => resolveConfig({ metrics: { enabled: false, host: '0.0.0.0' } }, []), 'metrics off: the host does not matter');
});

t.test('requireClientCert needs the CA it requires certificates from', async (t) => {
  t.throws(() => load({ tls: { ...tls, requireClientCert: true } }), /requireClientCert needs metrics\.tls\.ca/);
});

t.test('flags and variables reach the new keys', async (t) => {
  const cfg = resolveConfig({}, [
    {
      'metrics-enabled': true,
      'metrics-host': '0.0.0.0',
      'metrics-tls-cert': tls.cert,
      'metrics-tls-key': tls.key,
      'metrics-tokens-file': '/etc/x/t.json',
    },
  ]);
  t.same(cfg.metrics.tls, { ...tls, requireClientCert: false });
  t.equal(cfg.metrics.tokensFile, '/etc/x/t.json');
});
