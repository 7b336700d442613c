// The role's tests: a clean Debian 12 root (test/helpers/debroot.ts) reached as a managed host.
// How the root is reached: ansible's built-in `local` connection with pipelining and an
// interpreter that runs /usr/bin/python3 chrooted into the root (in its own mount namespace),
// with Ansible's remote temp directory bound at the same path inside. So every module — copy,
// apt, template and its validate — runs inside the root, as over ssh on a hypervisor; what
// community.general.chroot would do, with ansible-core alone.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TeardownHost } from '../../harness/hypervisor.js';
import { playbook, type PlaybookOptions, type PlaybookRun, type TaskResult } from './ansible.js';
import { debianRoot, type DebRoot } from './debroot.js';

export interface RoleHost {
  root: DebRoot;
  /** Runs the role's integration target against the root with these extra vars. */
  role(vars: Record<string, unknown>, opts?: PlaybookOptions): Promise<PlaybookRun>;
}

/** A fresh root with apt's lists and `packages` (python3: what Ansible needs on any target). */
export async function roleHost(
  t: TeardownHost & { equal: (a: unknown, b: unknown, m: string) => void },
  packages: string[],
): Promise<RoleHost> {
  const root = await debianRoot(t);
  const upd = await root.apt(['update']);
  t.equal(upd.code, 0, 'apt-get update in the root');
  const py = await root.apt(['install', ...packages]);
  t.equal(py.code, 0, `${packages.join(' ')} in the root ${py.stderr.slice(-300)}`);
  const work = `/var/tmp/blockcopy-ansible-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  mkdirSync(join(work, 'tmp'), { recursive: true });
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  // No systemd runs in the root: the role installs the service and says how to start it. (The
  // fact is set because the root shares the host's /proc, whose pid 1 may be systemd.)
  const base = {
    dir: work,
    ansible_service_mgr: 'none',
    ansible_python_interpreter: root.python(work),
    ansible_remote_tmp: join(work, 'tmp'),
  };
  return {
    root,
    role: (vars, opts = {}) =>
      playbook('role', { ...base, ...vars }, { facts: true, ...opts, env: { ANSIBLE_PIPELINING: 'True', ...opts.env } }),
  };
}

/** A task's result; tasks of an included role are named '<role name> : <task>'. */
export function task(r: PlaybookRun, name: string): TaskResult {
  const key = Object.keys(r.tasks).find((k) => k === name || k.endsWith(` : ${name}`));
  if (!key) throw new Error(`no task '${name}' in ${JSON.stringify(Object.keys(r.tasks))}`);
  return r.tasks[key]!;
}

/** What failed, for an assertion's message. */
export const failed = (r: PlaybookRun) =>
  JSON.stringify(Object.entries(r.tasks).filter(([, x]) => x.failed)).slice(0, 800) + r.stderr.slice(-400);

/** The tasks that reported a change. */
export const changed = (r: PlaybookRun) => Object.keys(r.tasks).filter((k) => r.tasks[k]!.changed);

/** A converged host: the role run again changes nothing, nor does check mode on it; the check
 *  run, for a caller's further assertions. */
export async function convergedAgain(
  t: { equal: (a: unknown, b: unknown, m: string) => void },
  role: RoleHost['role'],
  vars: Record<string, unknown>,
): Promise<PlaybookRun> {
  const again = await role(vars);
  t.equal(again.stats.failures, 0, `rerun succeeds ${failed(again)}`);
  t.equal(again.stats.changed, 0, `rerun: changed=0 ${JSON.stringify(changed(again))}`);
  const dryAgain = await role(vars, { check: true });
  t.equal(dryAgain.stats.failures, 0, `check mode on the installed host succeeds ${failed(dryAgain)}`);
  t.equal(dryAgain.stats.changed, 0, `check mode on the installed host: changed=0 ${JSON.stringify(changed(dryAgain))}`);
  return dryAgain;
}
