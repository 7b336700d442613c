// Documentation generated from tables in the code is current, and the tables are consistent.
import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { JSONRPCErrorCode } from 'json-rpc-2.0';
import { ERRORS, PROTOCOL_ERRORS } from '../../src/errors.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../../', import.meta.url));

t.test('docs/errors.md is generated from src/errors.ts and current', async (t) => {
  const r = await run(process.execPath, [join(root, 'scripts/gen-docs.mjs'), '--check']).then(
    () => 0,
    (e) => e.code,
  );
  t.equal(r, 0, 'scripts/gen-docs.mjs --check');
});

t.test('error tables: protocol codes as JSON-RPC 2.0 defines them, agent codes unique and in range', async (t) => {
  t.same(
    Object.values(PROTOCOL_ERRORS)
      .map((e) => e.code)
      .sort(),
    [
      JSONRPCErrorCode.ParseError,
      JSONRPCErrorCode.InvalidRequest,
      JSONRPCErrorCode.MethodNotFound,
      JSONRPCErrorCode.InvalidParams,
      JSONRPCErrorCode.InternalError,
    ].sort(),
  );
  const codes = Object.values(ERRORS).map((e) => e.code);
  t.equal(new Set(codes).size, codes.length, 'one code per name');
  t.ok(
    codes.every((c) => c <= -32000 && c >= -32099),
    'all in the server-error range -32000…-32099',
  );
});
