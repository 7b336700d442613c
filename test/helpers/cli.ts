// The command-line client run as a user runs it (the agent's CLI, a stdio agent under the test
// environment): exit code, output, and stdout read as one JSON document a line.
import { spawn } from 'node:child_process';
import { CLI, TEST_AGENT_ENV } from '../../harness/agent.js';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout, one JSON document a line; a line that does not parse is `{notJson: line}`. */
  lines: Array<Record<string, unknown>>;
}

export function runCli(args: string[]): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...TEST_AGENT_ENV },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => {
      const lines = stdout
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => {
          try {
            return JSON.parse(l) as Record<string, unknown>;
          } catch {
            return { notJson: l };
          }
        });
      resolve({ code, stdout, stderr, lines });
    });
  });
}
