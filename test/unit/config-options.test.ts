// Flags, environment variables and help come from schemas/config.schema.json alone: every
// leaf option has all three, values land where the schema says, and an option added to the
// schema works without code.
import t from 'tap';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { configOptions, optionsHelp } from '../../src/config-options.js';
import { envOverrides, loadConfig, resolveConfig } from '../../src/config.js';
import { SchemaSet, SCHEMAS_DIR } from '../../src/schemas.js';
import { CLI } from '../../harness/agent.js';

const run = promisify(execFile);

t.test('every leaf of the config schema is a flag, a variable and a line of help', async (t) => {
  const leaves: string[] = [];
  const walk = (props: Record<string, { type?: string; properties?: object }>, prefix: string[]) => {
    for (const [k, v] of Object.entries(props)) {
      if (v.type === 'object' && v.properties) walk(v.properties as never, [...prefix, k]);
      else leaves.push([...prefix, k].join('.'));
    }
  };
  walk(JSON.parse(readFileSync(join(SCHEMAS_DIR, 'config.schema.json'), 'utf8')).properties, []);
  const options = configOptions();
  t.same(options.map((o) => o.path.join('.')).sort(), leaves.sort(), 'one option per leaf');
  const help = (await run(process.execPath, [CLI, 'serve', '--help'])).stdout;
  for (const o of options) {
    t.ok(
      help.includes(`--${o.negated ? 'no-' : ''}${o.flag}`) && help.includes(`(${o.env})`),
      `${o.path.join('.')}: --${o.flag} and ${o.env} in serve --help`,
    );
  }
  t.match(help, /--state-dir PATH {2}\(BLOCKCOPY_STATE_DIR\)\n.*Default: "\/var\/lib\/blockcopy-agent"/, 'defaults shown from the schema');
  t.match(
    options.find((o) => o.flag === 'state-dir'),
    { env: 'BLOCKCOPY_STATE_DIR' },
    'names as before: BLOCKCOPY_STATE_DIR',
  );
});

t.test('values from flags and environment land at the schema path, flags winning', async (t) => {
  const env = envOverrides({
    BLOCKCOPY_LIMITS_MAX_CONNECTIONS: '12',
    BLOCKCOPY_AUTH_ALLOW_UNAUTHENTICATED_LOOPBACK: 'true',
    BLOCKCOPY_ALLOWED_ROOTS: '/a:/b',
    BLOCKCOPY_LOG_LEVEL: 'warn',
  });
  const cfg = loadConfig(undefined, env, {
    'log-level': 'debug',
    'audit-file': '/var/log/bc.audit',
    'no-listen-enabled': true,
    'auth-read-only-principals': 'viewer,ops',
  });
  t.match(cfg, {
    limits: { maxConnections: 12, burst: 400 },
    auth: { allowUnauthenticatedLoopback: true, readOnlyPrincipals: ['viewer', 'ops'] },
    allowedRoots: ['/a', '/b'],
    logLevel: 'debug',
    audit: { file: '/var/log/bc.audit' },
    listen: { enabled: false, port: 7879 },
  });
  t.match(loadConfig(undefined, { listen: '[::1]:9000' }).listen, { host: '::1', port: 9000, enabled: true }, '--listen HOST:PORT');
  t.throws(
    () => loadConfig(undefined, { 'limits-burst': 'lots' }),
    /\/limits\/burst must be integer/,
    'a bad number is reported at its path',
  );
  t.throws(() => loadConfig(undefined, { 'listen-enabled': 'maybe' }), /\/listen\/enabled must be boolean/, 'a bad boolean too');
  t.throws(() => loadConfig(undefined, { 'no-such-option': 'x' }), /unknown option 'no-such-option'/);
});

t.test('an option added to the schema works without code', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bc-schemas-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(SCHEMAS_DIR, dir, { recursive: true });
  const file = join(dir, 'config.schema.json');
  const schema = JSON.parse(readFileSync(file, 'utf8'));
  schema.properties.allowedNetworkDestinations = {
    type: 'array',
    items: { type: 'string' },
    default: [],
    description: 'Network destinations (an example option).',
  };
  schema.properties.limits.properties.maxSubscriptions = {
    type: 'integer',
    minimum: 1,
    default: 64,
    description: 'An example nested option.',
  };
  writeFileSync(file, JSON.stringify(schema));
  const schemas = new SchemaSet(dir);
  const options = configOptions(schemas);
  t.match(
    options.find((o) => o.flag === 'allowed-network-destinations'),
    { env: 'BLOCKCOPY_ALLOWED_NETWORK_DESTINATIONS', kind: 'list' },
  );
  t.match(optionsHelp(options), /--limits-max-subscriptions N {2}\(BLOCKCOPY_LIMITS_MAX_SUBSCRIPTIONS\)\n.*Default: 64/);
  const env = envOverrides({ BLOCKCOPY_ALLOWED_NETWORK_DESTINATIONS: 'nbd://a:10809,nbd://b:10809' }, options);
  const cfg = resolveConfig({}, [env, { 'limits-max-subscriptions': '8' }], undefined, schemas) as unknown as Record<string, unknown>;
  t.same(cfg.allowedNetworkDestinations, ['nbd://a:10809', 'nbd://b:10809'], 'a list from the environment');
  t.match(cfg.limits, { maxSubscriptions: 8 }, 'a nested number from a flag');
});
