// Documentation generated from tables in the code is current, and the tables are consistent.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
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

t.test('every agent error name is documented, and the schemas name exactly the table', async (t) => {
  const md = readFileSync(join(root, 'docs/errors.md'), 'utf8');
  for (const [name, e] of Object.entries(ERRORS))
    t.ok(md.includes(`| \`${name}\` | ${e.code} | ${e.retryable ? 'yes' : 'no'} |`), `docs/errors.md has a row for ${name}`);
  const schema = JSON.parse(readFileSync(join(root, 'schemas/defs/error-name.json'), 'utf8')) as { enum: string[] };
  t.same(schema.enum, Object.keys(ERRORS), 'schemas/defs/error-name.json lists the names of src/errors.ts, in its order');
  // Every error object of the schemas (a required name beside a message) takes its name from that list.
  const loose: string[] = [];
  const walk = (node: unknown, where: string): void => {
    if (!node || typeof node !== 'object') return;
    const o = node as { properties?: Record<string, { $ref?: string }>; required?: string[] };
    if (o.properties?.name && o.properties.message && o.required?.includes('name') && !o.properties.name.$ref?.endsWith('error-name.json'))
      loose.push(where);
    for (const [k, v] of Object.entries(node)) walk(v, `${where}/${k}`);
  };
  for (const f of schemaFiles(join(root, 'schemas'))) walk(JSON.parse(readFileSync(f, 'utf8')), f.slice(root.length));
  t.same(loose, [], 'no error object in the schemas has a free-text name');
});

function schemaFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? schemaFiles(join(dir, e.name)) : e.name.endsWith('.json') ? [join(dir, e.name)] : [],
  );
}
