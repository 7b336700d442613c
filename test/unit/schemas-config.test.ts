// The schemas are the single source of truth: types are generated from them (and fresh),
// every field is documented, and the config file is validated by its schema.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SchemaSet } from '../../src/schemas.js';
import { configProblems, envOverrides, loadConfig } from '../../src/config.js';
import { CLI } from '../../harness/agent.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../../', import.meta.url));

t.test('generated types are fresh', async (t) => {
  const r = await run(process.execPath, [join(root, 'scripts/gen-types.mjs'), '--check']).then(
    () => 0,
    (e) => e.code,
  );
  t.equal(r, 0, 'scripts/gen-types.mjs --check: src/generated/api.ts matches schemas/');
});

t.test('every schema is strict and documented', async (t) => {
  const schemas = new SchemaSet();
  const undocumented: string[] = [];
  const open: string[] = [];
  const walk = (node: unknown, where: string) => {
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (n.type === 'object' && n.properties && n.additionalProperties !== false) open.push(where);
    if (n.properties) {
      for (const [k, v] of Object.entries(n.properties as Record<string, Record<string, unknown>>)) {
        // A bare $ref inherits the referenced schema's description (and default, copied by SchemaSet).
        const described =
          typeof v.description === 'string' || (typeof v.$ref === 'string' && Object.keys(v).every((k) => k === '$ref' || k === 'default'));
        if (!described) undocumented.push(`${where}.${k}`);
        walk(v, `${where}.${k}`);
      }
    }
    for (const k of ['items', 'oneOf', 'anyOf']) {
      const v = n[k];
      if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${where}.${k}[${i}]`));
      else walk(v, `${where}.${k}`);
    }
  };
  for (const [id, s] of schemas.byId) {
    t.ok(s.title, `${id} has a title`);
    t.ok(s.description || s.$ref, `${id} is described`);
    walk(s, id);
  }
  t.same(undocumented, [], 'every property has a description');
  t.same(open, [], 'every object forbids additional properties');
});

t.test('config: defaults, precedence, problems', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bc-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'agent.json');
  writeFileSync(file, JSON.stringify({ logLevel: 'debug', listen: { port: 9000 }, stateDir: '/var/lib/x' }));
  const cfg = loadConfig(file, envOverrides({ BLOCKCOPY_STATE_DIR: '/var/lib/from-env' }), { uri: 'test:///default' });
  t.match(cfg, {
    logLevel: 'debug',
    stateDir: '/var/lib/from-env',
    uri: 'test:///default',
    listen: { host: '127.0.0.1', port: 9000, enabled: true },
    pollIntervalMs: 2000,
  });
  t.match(configProblems({ listen: { port: 'x' }, bogus: 1 }).sort(), [/bogus/, /port must be integer/]);
  t.throws(() => loadConfig(undefined, { listen: 'nonsense' }), /HOST:PORT/);
});

t.test('blockcopy-agent config check FILE', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bc-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const good = join(dir, 'good.json');
  const bad = join(dir, 'bad.json');
  writeFileSync(good, '{"allowedRoots":["/var/lib/libvirt/images"]}');
  writeFileSync(bad, '{"pollIntervalMs": 5, "listen": {"hots": "x"}}');
  const ok = await run(process.execPath, [CLI, 'config', 'check', good]);
  t.match(JSON.parse(ok.stdout), { allowedRoots: ['/var/lib/libvirt/images'], listen: { port: 7879 } }, 'prints the effective config');
  const err = await run(process.execPath, [CLI, 'config', 'check', bad]).then(
    () => null,
    (e) => e,
  );
  t.equal(err?.code, 1, 'exits 1 on a bad file');
  t.match(err?.stderr, /pollIntervalMs must be >= 100/);
  t.match(err?.stderr, /hots/);
  const help = await run(process.execPath, [CLI, 'serve', '--help']);
  t.match(help.stdout, /--listen HOST:PORT/, 'serve --help documents its options');
});
