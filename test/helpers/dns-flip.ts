// Preloaded into an agent process (NODE_OPTIONS=--import=…): name resolution that changes
// between two looks, as /etc/hosts or DNS can. The name in BLOCKCOPY_TEST_FLIP_NAME resolves
// to 127.0.0.1 the first time and to 0.0.0.0 every time after; other names are untouched.
import dns from 'node:dns';
import { syncBuiltinESMExports } from 'node:module';

const NAME = process.env.BLOCKCOPY_TEST_FLIP_NAME;
let looks = 0;
const next = () => (looks++ === 0 ? '127.0.0.1' : '0.0.0.0');
const wantsAll = (o: unknown) => typeof o === 'object' && o !== null && (o as { all?: boolean }).all === true;

const lookup = dns.lookup;
const lookupP = dns.promises.lookup;

type Callback = (err: Error | null, address: unknown, family?: number) => void;

dns.lookup = function (host: string, options: unknown, callback?: Callback) {
  if (host !== NAME) return (lookup as (...a: unknown[]) => void).call(dns, host, options, callback);
  const cb = (typeof options === 'function' ? options : callback) as Callback;
  const address = next();
  process.nextTick(() => (wantsAll(options) ? cb(null, [{ address, family: 4 }]) : cb(null, address, 4)));
} as typeof dns.lookup;

dns.promises.lookup = async function (host: string, options?: unknown) {
  if (host !== NAME) return (lookupP as (...a: unknown[]) => Promise<unknown>)(host, options);
  const address = next();
  return wantsAll(options) ? [{ address, family: 4 }] : { address, family: 4 };
} as typeof dns.promises.lookup;

syncBuiltinESMExports();
