// Where the local agent's unix socket is, without loading the agent: --socket or
// BLOCKCOPY_SOCKET, else what the agent owning the state directory wrote in its lock file (so
// the CLI talks to the same agent a spawned `stdio` would relay to). Only file reads here.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const SCHEMA = new URL('../../../schemas/config.schema.json', import.meta.url);

function readJson(path: string | URL): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The state directory a spawned `blockcopy-agent stdio` would use (flag > environment > config file > schema default). */
function stateDir(flag: string | undefined, config: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (flag) return flag;
  if (env.BLOCKCOPY_STATE_DIR) return env.BLOCKCOPY_STATE_DIR;
  const file = config ?? env.BLOCKCOPY_CONFIG;
  const fromFile = file ? readJson(file)?.stateDir : undefined;
  if (typeof fromFile === 'string') return fromFile;
  const def = (readJson(SCHEMA)?.properties as { stateDir?: { default?: unknown } } | undefined)?.stateDir?.default;
  return typeof def === 'string' ? def : undefined;
}

/** The socket to try, and whether the caller named it (then there is no fallback). */
export function localSocket(
  flag: { socket?: string; stateDir?: string; config?: string },
  env: NodeJS.ProcessEnv = process.env,
): { path: string; explicit: boolean } | null {
  const named = flag.socket ?? env.BLOCKCOPY_SOCKET;
  if (named) return { path: named, explicit: true };
  const dir = stateDir(flag.stateDir, flag.config, env);
  const socket = dir ? readJson(join(dir, 'agent.lock'))?.socket : undefined;
  return typeof socket === 'string' ? { path: socket, explicit: false } : null;
}
