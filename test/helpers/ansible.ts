// Runs the collection's integration targets (ansible-test's layout:
// tests/integration/targets/<name>/tasks/main.yml) with Debian's ansible-playbook, each as the
// tasks of a one-play playbook, and returns the results by task name (results_json callback).
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { TEST_AGENT_ENV } from '../../harness/agent.js';

const run = promisify(execFile);
const repo = fileURLToPath(new URL('../../../', import.meta.url));
export const TARGETS = join(repo, 'ansible/ansible_collections/blockcopy/agent/tests/integration/targets');

export interface TaskResult {
  changed?: boolean;
  failed?: boolean;
  skipped?: boolean;
  msg?: string;
  error?: string;
  diff?: unknown;
  job?: { state: string } & Record<string, unknown>;
}
export interface PlaybookRun {
  stats: { changed: number; failures: number; ok: number };
  tasks: Record<string, TaskResult>;
  stderr: string;
}

export interface PlaybookOptions {
  check?: boolean;
  facts?: boolean;
  /** Extra environment for ansible-playbook (e.g. ANSIBLE_PIPELINING). */
  env?: Record<string, string>;
}

/** `vars.dir` holds the generated playbook and vars file; vars may set ansible_python_interpreter. */
export async function playbook(name: string, vars: Record<string, unknown>, opts: PlaybookOptions = {}): Promise<PlaybookRun> {
  const varsFile = join(String(vars.dir), `vars-${name}.json`);
  writeFileSync(varsFile, JSON.stringify({ ansible_python_interpreter: '/usr/bin/python3', ...vars }));
  const play = join(String(vars.dir), `target-${name}.yml`);
  writeFileSync(
    play,
    JSON.stringify([
      {
        name: `Integration target ${name}`,
        hosts: 'all',
        gather_facts: !!opts.facts,
        tasks: [{ name: `Target ${name}`, 'ansible.builtin.import_tasks': join(TARGETS, name, 'tasks/main.yml') }],
      },
    ]),
  );
  const args = ['-i', 'localhost,', '-c', 'local', '-e', `@${varsFile}`, play, ...(opts.check ? ['--check', '--diff'] : [])];
  const doc = await ansiblePlaybook(args, opts.env);
  const tasks: Record<string, TaskResult> = {};
  for (const task of doc.plays[0]!.tasks) tasks[task.task.name] = task.hosts.localhost ?? {};
  return { stats: doc.stats.localhost!, tasks, stderr: doc.stderr };
}

interface ResultsDoc {
  plays: Array<{ tasks: Array<{ task: { name: string }; hosts: Record<string, TaskResult> }> }>;
  stats: Record<string, PlaybookRun['stats']>;
  stderr: string;
}

/** ansible-playbook with the collection and the results_json callback; its JSON document. */
async function ansiblePlaybook(args: string[], extraEnv: Record<string, string> = {}, timeoutMs = 0): Promise<ResultsDoc> {
  const env = {
    // Agents the modules start (stdio) allow destinations under the test root.
    ...process.env,
    ...TEST_AGENT_ENV,
    ANSIBLE_COLLECTIONS_PATH: join(repo, 'ansible'),
    ANSIBLE_STDOUT_CALLBACK: 'results_json',
    ANSIBLE_CALLBACK_PLUGINS: join(repo, 'test/ansible/callback_plugins'),
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_LOCALHOST_WARNING: 'False',
    ANSIBLE_INVENTORY_UNPARSED_WARNING: 'False',
    ANSIBLE_RETRY_FILES_ENABLED: 'False',
    ...extraEnv,
  };
  const { stdout: out, stderr } = await run('ansible-playbook', args, { env, maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs }).catch(
    (e: { stdout: string; stderr: string }) => ({ stdout: e.stdout, stderr: e.stderr }),
  );
  if (!out.includes('{')) throw new Error(`ansible-playbook printed no results: ${stderr.trim() || out.trim()}`);
  return { ...(JSON.parse(out.slice(out.indexOf('{'))) as Omit<ResultsDoc, 'stderr'>), stderr };
}

export interface FleetRun {
  /** Per host: ok, changed, failures, unreachable… (ansible's stats). */
  stats: Record<string, PlaybookRun['stats'] & { unreachable?: number }>;
  /** Per task name, per host. */
  tasks: Record<string, Record<string, TaskResult & { unreachable?: boolean }>>;
  stderr: string;
}

/**
 * A playbook over an inventory of several hosts (files already written), e.g. `--limit host`;
 * killed (and so rejected: no results) after `timeoutMs`.
 */
export async function fleetPlaybook(playbookFile: string, inventoryFile: string, args: string[], timeoutMs: number): Promise<FleetRun> {
  const doc = await ansiblePlaybook(['-i', inventoryFile, playbookFile, ...args], {}, timeoutMs);
  const tasks: FleetRun['tasks'] = {};
  for (const play of doc.plays) for (const task of play.tasks) tasks[task.task.name] = { ...tasks[task.task.name], ...task.hosts };
  return { stats: doc.stats, tasks, stderr: doc.stderr };
}

/**
 * The keys of a playbook's task results that are not snake_case (Ansible's convention for
 * return values), as `task: path` strings. `diff` (keyed by data such as disk targets) and
 * `invocation` (the task's own arguments) are not results and are skipped.
 */
export function camelCaseKeys(run: PlaybookRun): string[] {
  const found: string[] = [];
  const walk = (value: unknown, path: string): void => {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, `${path}[${i}]`));
    else if (value !== null && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) {
        if (!path && (k === 'diff' || k === 'invocation')) continue;
        if (/[a-z0-9][A-Z]/.test(k)) found.push(`${path}${path ? '.' : ''}${k}`);
        walk(v, `${path}${path ? '.' : ''}${k}`);
      }
    }
  };
  for (const [name, result] of Object.entries(run.tasks)) {
    const before = found.length;
    walk(result, '');
    for (let i = before; i < found.length; i++) found[i] = `${name}: ${found[i]}`;
  }
  return found;
}

/**
 * The tasks of a failures target, each expected to fail with its message and, when given, its
 * `error` name, changing nothing: [task name, message pattern, error or undefined].
 */
export function expectFailures(t: Test, run: PlaybookRun, expect: Array<[string, RegExp, string | undefined]>): void {
  for (const [task, msg, error] of expect) {
    const r = run.tasks[task]!;
    t.equal(r.failed, true, `${task}: fails`);
    t.match(r.msg, msg, `${task}: ${r.msg}`);
    if (error) t.equal(r.error, error, `${task}: error=${error}`);
    t.notOk(r.changed, `${task}: changed nothing`);
  }
}
