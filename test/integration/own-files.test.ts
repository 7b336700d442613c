// The agent's own files (state directory: lock, journal records and temp files; audit file;
// socket) cannot be redirected by anyone but root. Every file the agent writes is tried against
// every kind of attack: its directory (or a directory above it) writable by group or others,
// owned by another user, reached through a symbolic link; the file itself planted as a symbolic
// or hard link to a root-only file, or as another user's file. The agent refuses (to start, or
// the call), says which path and why, and the root-only file and the directory are unchanged.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import t, { type Test } from 'tap';
import { CLI } from '../../harness/agent.js';
import { AgentClient } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';

const NOBODY = 65534;

interface Launched {
  serving: boolean;
  code: number | null;
  log: string;
  port: number;
  token: string;
  proc: ChildProcess;
}

/** A scratch directory of the test's own (root, 0755), removed at the end. */
function scratch(t: Test, prefix: string): string {
  const d = hv.scratchDir(prefix);
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** `serve` on `stateDir` with `config`; resolves once it listens or has exited. */
function launch(t: Test, stateDir: string, config: Record<string, unknown> = {}): Promise<Launched> {
  const conf = scratch(t, 'conf-');
  const token = randomBytes(24).toString('hex');
  const tokensFile = join(conf, 'tokens.json');
  writeFileSync(tokensFile, JSON.stringify({ tokens: [{ name: 'test-admin', token }] }), { mode: 0o600 });
  writeFileSync(
    join(conf, 'config.json'),
    JSON.stringify({
      auth: { tokensFile },
      listen: { host: '127.0.0.1', port: 0 },
      socket: { path: join(conf, 'run', 'agent.sock') },
      allowedRoots: [hv.TEST_ROOT],
      ...config,
    }),
  );
  const proc = spawn(
    process.execPath,
    [CLI, 'serve', '--config', join(conf, 'config.json'), '--state-dir', stateDir, '--log-level', 'info'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  let log = '';
  return new Promise((resolve) => {
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => {
      log += d;
      const m = /"msg":"listening"[^\n]*"port":(\d+)/.exec(log);
      if (m) resolve({ serving: true, code: null, log, port: Number(m[1]), token, proc });
    });
    proc.once('exit', (code) => resolve({ serving: false, code, log, port: 0, token, proc }));
  });
}

/** A root-only file an attacker would like the agent to write (or read). */
function victim(dir: string): { path: string; unchanged: () => boolean } {
  const path = join(dir, 'root-only');
  writeFileSync(path, 'ROOT ONLY\n', { mode: 0o600 });
  const before = statSync(path);
  return {
    path,
    unchanged: () => {
      const st = statSync(path);
      return readFileSync(path, 'utf8') === 'ROOT ONLY\n' && st.mode === before.mode && st.uid === before.uid;
    },
  };
}

// Where each file the agent writes lives: the configuration that puts it in directory `d`.
const PLACES: Record<string, { name: string; put: (d: string) => { stateDir?: string; config?: Record<string, unknown> } }> = {
  'state directory (lock, journal records and temp files)': { name: 'agent.lock', put: (d) => ({ stateDir: d }) },
  'audit directory': { name: 'audit.log', put: (d) => ({ config: { audit: { file: join(d, 'audit.log') } } }) },
  'socket directory': { name: 'agent.sock', put: (d) => ({ config: { socket: { path: join(d, 'agent.sock') } } }) },
};

// Attacks on the directory: each returns the directory to configure (made under `base`).
const DIR_ATTACKS: Record<string, (base: string) => string> = {
  'writable by its group': (base) => {
    const d = join(base, 'd');
    mkdirSync(d, { mode: 0o700 });
    chmodSync(d, 0o770);
    return d;
  },
  'writable by others, sticky (like /tmp)': (base) => {
    const d = join(base, 'd');
    mkdirSync(d);
    chmodSync(d, 0o1777);
    return d;
  },
  'owned by another user': (base) => {
    const d = join(base, 'd');
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, NOBODY, NOBODY);
    return d;
  },
  'below a directory of another user': (base) => {
    const p = join(base, 'p');
    mkdirSync(join(p, 'd'), { recursive: true, mode: 0o700 });
    chmodSync(p, 0o755);
    chownSync(p, NOBODY, NOBODY);
    return join(p, 'd');
  },
  'reached through a symbolic link': (base) => {
    mkdirSync(join(base, 'real', 'd'), { recursive: true, mode: 0o700 });
    symlinkSync(join(base, 'real'), join(base, 'link'));
    return join(base, 'link', 'd');
  },
};

const snapshot = (d: string) => {
  const st = statSync(d);
  return { mode: st.mode, uid: st.uid, entries: readdirSync(d) };
};

t.test('a directory of its own files that others could change: the agent refuses to start', async (t) => {
  for (const [place, { put }] of Object.entries(PLACES)) {
    for (const [attack, make] of Object.entries(DIR_ATTACKS)) {
      await t.test(`${place}: ${attack}`, async (t) => {
        const base = scratch(t, 'own-');
        const d = make(base);
        const before = snapshot(d);
        const { stateDir, config } = put(d);
        const got = await launch(t, stateDir ?? join(scratch(t, 'state-'), 's'), config);
        t.notOk(got.serving, 'it does not start');
        t.equal(got.code, 1, 'exit 1');
        const last = got.log.trim().split('\n').pop() ?? '';
        t.match(last, /is not trustworthy: .*(writable by group or others|owned by uid 65534|symbolic link)/, `says why: ${last}`);
        t.ok(last.includes(`'${d}'`), 'naming the path');
        t.same(snapshot(d), before, 'the directory is unchanged (mode, owner) and nothing was written in it');
      });
    }
  }
});

// Attacks on the file itself, planted in a directory only root can write (as if root erred, or
// the directory was open before): each makes the path `p` point at the root-only file `v`.
const FILE_ATTACKS: Record<string, (p: string, v: string) => void> = {
  'a symbolic link to a root-only file': (p, v) => symlinkSync(v, p),
  'a hard link to a root-only file': (p, v) => linkSync(v, p),
  // Chowned to another user by the caller once planted.
  'a file of another user': (p) => writeFileSync(p, 'ROOT ONLY\n'),
};

// The files the agent refuses to start on, by what the attack is given.
const START_FILES: Record<string, { put: (d: string) => { stateDir?: string; config?: Record<string, unknown> }; name: string }> = {
  'the lock': PLACES['state directory (lock, journal records and temp files)']!,
  'the audit file': PLACES['audit directory']!,
  'the socket': PLACES['socket directory']!,
};

t.test('a file of its own planted as a link or as another user’s: the agent never writes through it', async (t) => {
  for (const [file, { put, name }] of Object.entries(START_FILES)) {
    for (const [attack, plant] of Object.entries(FILE_ATTACKS)) {
      await t.test(`${file}: ${attack}`, async (t) => {
        const base = scratch(t, 'own-');
        const d = join(base, 'd');
        mkdirSync(d, { mode: 0o700 });
        const v = victim(base);
        const p = join(d, name);
        plant(p, v.path);
        // Another user's file is its own victim: it must stay as it is too.
        if (attack === 'a file of another user') chownSync(p, NOBODY, NOBODY);
        const { stateDir, config } = put(d);
        const got = await launch(t, stateDir ?? join(scratch(t, 'state-'), 's'), config);
        t.notOk(got.serving, 'it does not start');
        t.equal(got.code, 1, 'exit 1');
        const last = got.log.trim().split('\n').pop() ?? '';
        t.ok(last.includes(p), `names the file: ${last}`);
        t.match(last, /symbolic link|hard links|owned by uid 65534|not a socket/, 'and says why');
        t.ok(v.unchanged(), 'the root-only file is unchanged');
        if (attack === 'a file of another user') t.equal(readFileSync(p, 'utf8'), 'ROOT ONLY\n', 'the other user’s file is unchanged');
      });
    }
  }
});

t.test('a journal record planted as a link or another user’s file: skipped, never read', async (t) => {
  for (const [attack, plant] of Object.entries(FILE_ATTACKS)) {
    await t.test(attack, async (t) => {
      const base = scratch(t, 'own-');
      const d = join(base, 'd');
      mkdirSync(d, { mode: 0o700 });
      const v = victim(base);
      // A record the agent would load if it followed the link: a job it would then know.
      writeFileSync(v.path, JSON.stringify({ job: { jobId: 'planted' }, destinationXml: '' }));
      const before = readFileSync(v.path, 'utf8');
      const p = join(d, 'job-planted.json');
      plant(p, v.path);
      if (attack === 'a file of another user') {
        writeFileSync(p, before);
        chownSync(p, NOBODY, NOBODY);
      }
      const got = await launch(t, d);
      t.ok(got.serving, 'the agent starts');
      t.match(
        got.log,
        /"msg":"unreadable journal file skipped"[^\n]*job-planted\.json[^\n]*(symbolic link|hard links|owned by uid 65534)/,
        'and says why it skipped the file',
      );
      const client = await AgentClient.connect(`ws://127.0.0.1:${got.port}`, { headers: { authorization: `Bearer ${got.token}` } });
      t.teardown(() => client.close());
      // (Other tests' copies on this host may be adopted; only the planted job matters.)
      const ids = (await client.call('listJobs', {})).jobs.map((j) => j.jobId);
      t.notOk(ids.includes('planted'), 'it knows no job from the planted file');
      t.equal(readFileSync(v.path, 'utf8'), before, 'the root-only file is unchanged');
    });
  }
});

t.test('a journal temp file planted at the name the agent writes: the call is refused, nothing written through it', async (t) => {
  const dom = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 16 }] });
  const d = join(scratch(t, 'own-'), 'd');
  mkdirSync(d, { mode: 0o700 });
  const got = await launch(t, d);
  t.ok(got.serving, 'the agent starts');
  const client = await AgentClient.connect(`ws://127.0.0.1:${got.port}`, { headers: { authorization: `Bearer ${got.token}` } });
  t.teardown(() => client.close());
  for (const [attack, plant] of Object.entries(FILE_ATTACKS)) {
    await t.test(attack, async (t) => {
      const v = victim(scratch(t, 'own-'));
      const jobId = `planted-${randomBytes(3).toString('hex')}`;
      const p = join(d, `job-${jobId}.json.${got.proc.pid}.tmp`);
      plant(p, v.path);
      if (attack === 'a file of another user') chownSync(p, NOBODY, NOBODY);
      const refused = await client
        .call('blockCopy', { domain: dom.name, disk: 'vda', destination: { path: `${dom.dir}/${jobId}.qcow2` }, jobId })
        .then(
          () => null,
          (e: { data?: unknown; message?: string }) => e,
        );
      t.match(refused?.data, { name: 'stateUnavailable' }, `the copy is refused as stateUnavailable: ${refused?.message}`);
      t.ok(v.unchanged(), 'the root-only file is unchanged');
      t.notMatch(await hv.liveXml(dom), /<mirror /, 'no copy was started');
    });
  }
});

t.test('a socket path in a sticky world-writable directory is refused, never chmodded', async (t) => {
  const d = join(scratch(t, 'own-'), 'pub');
  mkdirSync(d);
  chmodSync(d, 0o1777);
  const got = await launch(t, join(scratch(t, 'state-'), 's'), { socket: { path: join(d, 'agent.sock') } });
  t.notOk(got.serving, 'it does not start');
  t.match(got.log, new RegExp(`socket directory '${d}' is not trustworthy`), 'says which directory and why');
  t.equal(statSync(d).mode & 0o7777, 0o1777, 'the directory keeps its mode');
});

t.test('a directory the agent creates is 0700; its lock file is 0600', async (t) => {
  const base = scratch(t, 'own-');
  const state = join(base, 'new', 'state');
  const sock = join(base, 'run', 'sub', 'agent.sock');
  const got = await launch(t, state, { socket: { path: sock } });
  t.ok(got.serving, `the agent starts${got.serving ? '' : `: ${got.log}`}`);
  for (const d of [join(base, 'new'), state, join(base, 'run'), dirname(sock)]) t.equal(statSync(d).mode & 0o7777, 0o700, `${d}: 0700`);
  const lock = statSync(join(state, 'agent.lock'));
  t.equal(lock.mode & 0o7777, 0o600, 'the lock (with the relay token): 0600');
  t.equal(lock.uid, process.getuid!(), 'owned by the agent');
});
