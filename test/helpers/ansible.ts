// Runs the collection's integration targets (ansible-test's layout:
// tests/integration/targets/<name>/tasks/main.yml) with Debian's ansible-playbook, each as the
// tasks of a one-play playbook, and returns the results by task name (results_json callback).
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
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
    ...opts.env,
  };
  const { stdout: out, stderr } = await run('ansible-playbook', args, { env, maxBuffer: 64 * 1024 * 1024 }).catch(
    (e: { stdout: string; stderr: string }) => ({ stdout: e.stdout, stderr: e.stderr }),
  );
  if (!out.includes('{')) throw new Error(`ansible-playbook printed no results: ${stderr.trim() || out.trim()}`);
  const doc = JSON.parse(out.slice(out.indexOf('{')));
  const tasks: Record<string, TaskResult> = {};
  for (const task of doc.plays[0].tasks) tasks[task.task.name] = task.hosts.localhost ?? {};
  return { stats: doc.stats.localhost, tasks, stderr };
}
