// The client package's import graph (packages/client/tsconfig.json: the library entry and the
// client CLI, with every module they import, static or dynamic) holds nothing of the agent: no
// libvirt binding, no job core, no server. test/packaging/client-package.test.ts installs it.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** What the client may load: the client, the protocol, the generated types and the CLI's verbs. */
const ALLOWED = [
  /^src\/index\.ts$/,
  /^src\/client\//,
  /^src\/protocol\//,
  /^src\/generated\/api\.ts$/,
  /^src\/(errors|version|bandwidth|job-types)\.ts$/,
  /^src\/cli\/(client-main|verbs|args|connect|local-socket|output|await-job|copy|move|chain|backup)\.ts$/,
];

t.test('the client build compiles only the client, never the agent or its addon', async (t) => {
  const listed = execFileSync(
    process.execPath,
    [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', join(REPO, 'packages/client/tsconfig.json'), '--listFilesOnly'],
    { encoding: 'utf8' },
  )
    .trim()
    .split('\n')
    .map((f) => relative(REPO, f))
    .filter((f) => !f.startsWith('node_modules/') && !f.startsWith('..'));
  t.ok(listed.includes('src/cli/client-main.ts') && listed.includes('src/index.ts'), 'both entries are built');
  t.same(
    listed.filter((f) => !ALLOWED.some((re) => re.test(f))),
    [],
    'no module outside the client set (src/libvirt, src/jobs, src/agent.ts, native/…)',
  );
});

t.test('the client package.json: no addon, ws alone, the agent version', async (t) => {
  const agent = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
  const client = JSON.parse(readFileSync(join(REPO, 'packages/client/package.json'), 'utf8'));
  t.equal(client.version, agent.version, 'released together: one version');
  t.same(client.dependencies, { ws: agent.dependencies.ws }, 'ws, in the range the agent uses');
  t.notOk(client.gypfile || client.scripts, 'nothing to compile or run at install');
});
