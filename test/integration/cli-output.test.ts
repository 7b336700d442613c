// Every CLI verb, with stdout a pipe (not a terminal) and no --json: one JSON document per
// line, as the help promises, against the real agent and libvirtd.
import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as hv from '../../harness/hypervisor.js';
import { CLI, serveAgent } from '../../harness/agent.js';

interface Run {
  code: number | null;
  lines: unknown[];
  raw: string;
  stderr: string;
}

function cli(args: string[], onLine?: (doc: unknown, kill: () => void) => void): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let raw = '';
    let stderr = '';
    const lines: unknown[] = [];
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      raw += d;
      buf += d;
      for (let nl; (nl = buf.indexOf('\n')) >= 0; buf = buf.slice(nl + 1)) {
        const line = buf.slice(0, nl);
        let doc: unknown;
        try {
          doc = JSON.parse(line);
        } catch {
          doc = { notJson: line };
        }
        lines.push(doc);
        onLine?.(doc, () => child.kill('SIGINT'));
      }
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.once('exit', (code) => resolve({ code, lines, raw, stderr }));
  });
}

t.test('every verb prints JSON lines when stdout is not a terminal', async (t) => {
  const agent = await serveAgent(t);
  const dom = await hv.createDomain(t, { disks: ['vda', 'vdb', 'vdc', 'vdd'].map(() => ({ format: 'raw' as const, sizeMiB: 8 })) });
  // The token as users pass it: from a file (--token on the command line warns on stderr).
  const tokenFile = `${dom.dir}/token`;
  writeFileSync(tokenFile, agent.token, { mode: 0o600 });
  const conn = ['--url', agent.url, '--token-file', tokenFile];
  const d = (n: string) => `${dom.dir}/${n}.raw`;

  /** Runs a verb; every stdout line must be one JSON document, and `count` of them if given. */
  const verb = async (args: string[], count?: number): Promise<unknown[]> => {
    const r = await cli([...args, ...conn]);
    const what = args.slice(0, 2).join(' ');
    t.equal(r.code, 0, `${what}: exit 0 ${r.stderr}`);
    t.ok(r.raw.endsWith('\n') && r.lines.every((l) => !(l as { notJson?: string }).notJson), `${what}: every line is a JSON document`);
    if (count !== undefined) t.equal(r.lines.length, count, `${what}: ${count} line(s)`);
    return r.lines;
  };

  // watch: a stream of changes, started first so that it sees the copies below.
  let seen = 0;
  const watching = cli(['watch', dom.name, ...conn], (_doc, kill) => {
    if (++seen === 3) kill();
  });
  await new Promise((r) => setTimeout(r, 1500));

  const [started] = (await verb(['copy', dom.name, 'vda', d('a')], 1)) as Array<{ event: string; job: { jobId: string } }>;
  t.equal(started!.event, 'started', 'copy: started');
  const jobId = started!.job.jobId;
  t.match((await verb(['info', dom.name, 'vda'], 1))[0], { job: { jobId } }, 'info DOMAIN DISK');
  t.match((await verb(['info', '--job', jobId], 1))[0], { job: { jobId } }, 'info --job');
  // Other tests' copies on this host are adopted too: look for ours among them.
  const listed = async (args: string[]) =>
    ((await verb(args, 1))[0] as { jobs: Array<{ jobId: string }> }).jobs.some((j) => j.jobId === jobId);
  t.ok(await listed(['jobs']), 'jobs');
  t.ok(await listed(['jobs', dom.name]), 'jobs DOMAIN');
  t.match((await verb(['call', 'setSpeed', '--params', JSON.stringify({ jobId, bandwidth: 1048576 })], 1))[0], { job: { jobId } }, 'call');
  t.match((await verb(['abort', dom.name, 'vda'], 1))[0], { job: { jobId, state: 'cancelled' } }, 'abort');

  t.match((await verb(['copy', dom.name, 'vdb', d('b'), '--wait'])).at(-1), { event: 'ready' }, 'copy --wait');
  t.match((await verb(['pivot', dom.name, 'vdb'], 1))[0], { job: { state: 'pivoted' } }, 'pivot');
  const ready = (await verb(['copy', dom.name, 'vdc', d('c'), '--wait'])).at(-1) as { job: { jobId: string } };
  t.match((await verb(['finish', '--job', ready.job.jobId], 1))[0], { job: { state: 'finished' } }, 'finish');

  const group = async (id: string, n: string) => {
    t.match(
      (await verb(['copy-group', dom.name, `vdd=${d(n)}`, '--group-id', id, '--wait'])).at(-1),
      { event: 'group', group: { groupId: id, state: 'ready' } },
      `copy-group ${id}`,
    );
    t.match((await verb(['group', id], 1))[0], { group: { groupId: id } }, 'group');
  };
  await group('out-1', 'd1');
  t.match((await verb(['pivot-group', 'out-1'], 1))[0], { group: { state: 'pivoted' } }, 'pivot-group');
  await group('out-2', 'd2');
  t.match((await verb(['finish-group', 'out-2'], 1))[0], { group: { state: 'finished' } }, 'finish-group');
  await group('out-3', 'd3');
  t.match((await verb(['abort-group', 'out-3'], 1))[0], { group: { state: 'cancelled' } }, 'abort-group');

  const w = await watching;
  t.ok(
    w.lines.length >= 3 && w.lines.every((l) => (l as { event?: string }).event === 'job.changed'),
    `watch: ${w.lines.length} job.changed lines`,
  );

  const refused = await cli(['info', '--job', 'no-such', ...conn]);
  t.equal(refused.code, 1, 'an agent error: exit 1');
  t.equal(refused.raw, '', 'nothing on stdout');
  t.match(JSON.parse(refused.stderr), { error: 'noJob' }, 'the error as one JSON line on stderr');
});
