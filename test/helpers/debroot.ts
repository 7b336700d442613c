// A clean Debian 12 root (debootstrap minbase, cached by scripts/debian-root.sh) to install the
// package into, and the package itself (scripts/package.sh, built once per test run).
// Every command in the root runs in its own mount namespace (unshare -m) that binds /dev,
// /run/libvirt and the test disk directory and mounts /proc: the mounts die with the command,
// even if the test is killed, and the host never sees them, so removing the root is safe.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { TEST_ROOT, type TeardownHost } from '../../harness/hypervisor.js';

const run = promisify(execFile);
export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const ROOTS = '/var/tmp/blockcopy-roots';
const APT_CACHE = '/var/cache/blockcopy-test/apt';
const OWNER = '.owner-pid';

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The .deb of this tree: built (with its lintian check) by the first caller of a test run. */
export async function ensurePackage(): Promise<{ deb: string; build: Result | null }> {
  const out = join(REPO, 'dist/deb');
  mkdirSync(out, { recursive: true });
  const version = (await run('node', ['-p', `require(${JSON.stringify(join(REPO, 'package.json'))}).version`])).stdout.trim();
  const arch = (await run('dpkg', ['--print-architecture'])).stdout.trim();
  const deb = join(out, `blockcopy-agent_${version}_${arch}.deb`);
  // One build at a time; a package made after this run's `npm test` started (the build step
  // before it) is this tree's, and is reused.
  const since = Number(process.env.BLOCKCOPY_TEST_STARTED ?? Date.now() - process.uptime() * 1000);
  const script = `[ -s ${deb} ] && [ $(stat -c %Y ${deb}) -ge ${Math.floor(since / 1000)} ] && exit 0; exec bash scripts/package.sh`;
  const build = await sh(['flock', join(out, '.lock'), 'bash', '-c', script], { cwd: REPO });
  if (build.code !== 0)
    throw new Error(`npm run package failed (${build.code}):\n${(build.stdout + build.stderr).split('\n').slice(-30).join('\n')}`);
  return { deb, build: build.stdout.includes('package:') ? build : null };
}

async function sh(cmd: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  return run(cmd[0]!, cmd.slice(1), { maxBuffer: 64 * 1024 * 1024, ...opts }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: typeof e.code === 'number' ? e.code : 1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? '',
    }),
  );
}

export interface DebRoot {
  dir: string;
  /** Runs argv inside the root (own mount namespace, chroot). */
  exec(argv: string[], env?: Record<string, string>): Promise<Result>;
  /** apt-get inside the root, one at a time across roots (they share apt's cache). */
  apt(args: string[]): Promise<Result>;
  /** A script that runs /usr/bin/python3 inside the root with `shared` bound at the same path
   * (Ansible's remote temp directory): Ansible's `local` connection with this interpreter and
   * pipelining runs every module inside the root. */
  python(shared: string): string;
  /** Starts argv inside the root as a long-running process. */
  spawn(argv: string[], env?: Record<string, string>): ChildProcess;
}

/** Removes roots left by test processes that died. */
function sweep(): void {
  if (!existsSync(ROOTS)) return;
  for (const name of readdirSync(ROOTS)) {
    const dir = join(ROOTS, name);
    let pid = 0;
    try {
      pid = Number(readFileSync(join(dir, OWNER), 'utf8'));
    } catch {
      /* no owner file yet */
    }
    if (pid && alive(pid)) continue;
    if (!pid && Date.now() - statSync(dir).mtimeMs < 60_000) continue;
    rmSync(dir, { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A fresh root from the cached debootstrap tarball, removed at `host`'s teardown. */
export async function debianRoot(host: TeardownHost): Promise<DebRoot> {
  const tar = await sh(['bash', join(REPO, 'scripts/debian-root.sh')]);
  if (tar.code !== 0) throw new Error(`scripts/debian-root.sh failed: ${tar.stderr}`);
  sweep();
  mkdirSync(ROOTS, { recursive: true });
  mkdirSync(join(APT_CACHE, 'lists/partial'), { recursive: true });
  mkdirSync(join(APT_CACHE, 'archives/partial'), { recursive: true });
  const dir = mkdtempSync(join(ROOTS, 'root-'));
  writeFileSync(join(dir, OWNER), String(process.pid));
  host.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const x = await sh(['tar', '-xf', tar.stdout.trim(), '-C', dir]);
  if (x.code !== 0) throw new Error(`tar: ${x.stderr}`);
  mkdirSync(join(dir, TEST_ROOT), { recursive: true });
  // Binds, in the command's own namespace: the host's libvirtd socket, the test disks at the
  // same path, and apt's downloads (so that reruns fetch nothing twice).
  const binds: Array<[string, string]> = [
    ['/dev', '/dev'],
    ['/run/libvirt', '/run/libvirt'],
    [TEST_ROOT, TEST_ROOT],
    [`${APT_CACHE}/lists`, '/var/lib/apt/lists'],
    [`${APT_CACHE}/archives`, '/var/cache/apt/archives'],
  ];
  const script = (extra: Array<[string, string]>) =>
    [
      'set -e',
      // The test runner's loader hooks (tap puts them in NODE_OPTIONS) do not exist in the root.
      'unset NODE_OPTIONS',
      ...[...binds, ...extra].map(([from, to]) => `mkdir -p "$R${to}" && mount --bind ${from} "$R${to}"`),
      'mount -t proc proc "$R/proc"',
      'exec chroot "$R" "$@"',
    ].join('\n');
  const argvOf = (argv: string[]) => ['--mount', '--propagation', 'private', '--', 'sh', '-c', script([]), 'sh', ...argv];
  const envOf = (env: Record<string, string> = {}) => ({
    R: dir,
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C.UTF-8',
    DEBIAN_FRONTEND: 'noninteractive',
    HOME: '/root',
    ...env,
  });
  return {
    dir,
    exec: (argv, env) => sh(['unshare', ...argvOf(argv)], { env: envOf(env) }),
    apt: (args) =>
      sh(
        ['flock', join(APT_CACHE, '.lock'), 'unshare', ...argvOf(['apt-get', '-q', '-y', '-o', 'APT::Install-Recommends=false', ...args])],
        { env: envOf() },
      ),
    python: (shared) => {
      const path = join(dir, '.python-in-root');
      writeFileSync(
        path,
        // Under apt's lock too: an Ansible module in one root (apt, or a package's install) and
        // apt-get in another (two test files at a time) share apt's cache and its lock file.
        `#!/bin/sh\nR=${dir}\nexport R\nexec flock ${join(APT_CACHE, '.lock')} unshare --mount --propagation private -- sh -c '${script([[shared, shared]])}' sh /usr/bin/python3 "$@"\n`,
        { mode: 0o755 },
      );
      return path;
    },
    spawn: (argv, env) => spawn('unshare', argvOf(argv), { env: envOf(env), stdio: ['ignore', 'pipe', 'pipe'] }),
  };
}
