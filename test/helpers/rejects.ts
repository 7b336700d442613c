// One assertion the job tests share: a promise must reject with the agent error of that name.
import type { Test } from 'tap';
import { AgentError, type ErrorName } from '../../src/errors.js';
import { RpcError } from '../../src/client/index.js';

/** Asserts that `p` rejects with the AgentError `name`; returns it (undefined if it did not). */
export async function rejects(t: Test, p: Promise<unknown>, name: ErrorName, msg: string): Promise<AgentError | undefined> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  t.ok(
    e instanceof AgentError && e.errorName === name,
    `${msg}: ${name}${e instanceof AgentError ? ` (got ${e.errorName}: ${e.message})` : ` (got ${String(e)})`}`,
  );
  return e instanceof AgentError ? e : undefined;
}

/** The AgentError `p` rejects with (for tests that assert on its parts); throws if it resolves or rejects otherwise. */
export async function failure(p: Promise<unknown>): Promise<AgentError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  if (!(e instanceof AgentError)) throw new Error(`expected an AgentError, got ${String(e)}`);
  return e;
}

/** The error name an agent call over the wire failed with ('ok' if it succeeded). */
export const errorName = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof RpcError ? (e.errorName ?? e.message) : String(e)),
  );
