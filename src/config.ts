// The agent's configuration: schema defaults < config file < environment < command-line flags,
// validated as a whole by schemas/config.schema.json.
import { readFileSync } from 'node:fs';
import type { AgentConfig } from './generated/api.js';
import { SchemaSet } from './schemas.js';

export type ResolvedConfig = Required<Omit<AgentConfig, 'tls'>> & Pick<AgentConfig, 'tls'> & {
  listen: Required<NonNullable<AgentConfig['listen']>>;
  limits: Required<NonNullable<AgentConfig['limits']>>;
};

export class ConfigError extends Error {}

/** Flags and environment use the same names; values are strings until validated. */
export interface Overrides {
  uri?: string;
  listen?: string;
  noListen?: boolean;
  stateDir?: string;
  logLevel?: string;
  pollIntervalMs?: string;
  allowedRoots?: string;
  maxConcurrentCopies?: string;
}

export function envOverrides(env: NodeJS.ProcessEnv = process.env): Overrides {
  return {
    uri: env.BLOCKCOPY_URI,
    listen: env.BLOCKCOPY_LISTEN,
    stateDir: env.BLOCKCOPY_STATE_DIR,
    logLevel: env.BLOCKCOPY_LOG_LEVEL,
    pollIntervalMs: env.BLOCKCOPY_POLL_INTERVAL_MS,
    allowedRoots: env.BLOCKCOPY_ALLOWED_ROOTS,
    maxConcurrentCopies: env.BLOCKCOPY_MAX_CONCURRENT_COPIES,
  };
}

function readFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('the top level must be an object');
    return v;
  } catch (e) {
    throw new ConfigError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

function apply(cfg: Record<string, any>, o: Overrides): void { // eslint-disable-line @typescript-eslint/no-explicit-any
  const num = (v: string, name: string) => {
    if (!/^\d+$/.test(v)) throw new ConfigError(`${name} must be a whole number, got '${v}'`);
    return Number(v);
  };
  if (o.uri) cfg.uri = o.uri;
  if (o.stateDir) cfg.stateDir = o.stateDir;
  if (o.logLevel) cfg.logLevel = o.logLevel;
  if (o.pollIntervalMs) cfg.pollIntervalMs = num(o.pollIntervalMs, 'poll interval');
  if (o.maxConcurrentCopies) cfg.maxConcurrentCopies = num(o.maxConcurrentCopies, 'max concurrent copies');
  if (o.allowedRoots) cfg.allowedRoots = o.allowedRoots.split(':').filter(Boolean);
  if (o.listen) {
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(o.listen);
    if (!m) throw new ConfigError(`listen must be HOST:PORT, got '${o.listen}'`);
    cfg.listen = { ...(cfg.listen ?? {}), host: m[1] ?? m[2], port: num(m[3]!, 'port'), enabled: true };
  }
  if (o.noListen) cfg.listen = { ...(cfg.listen ?? {}), enabled: false };
}

/** Human-readable problems of a config object ([] when valid); fills defaults in place. */
export function configProblems(cfg: unknown, schemas = new SchemaSet()): string[] {
  const v = schemas.validator('config.schema.json');
  if (v(cfg)) return [];
  return (v.errors ?? []).map((e) => `${e.instancePath || '(top level)'} ${e.message}${e.params && 'additionalProperty' in e.params ? `: '${e.params.additionalProperty}'` : ''}`);
}

export function loadConfig(file: string | undefined, ...layers: Overrides[]): ResolvedConfig {
  const cfg: Record<string, unknown> = file ? readFile(file) : {};
  for (const o of layers) apply(cfg, o);
  const problems = configProblems(cfg);
  if (problems.length > 0) throw new ConfigError(`invalid configuration${file ? ` (${file})` : ''}:\n  ${problems.join('\n  ')}`);
  return cfg as ResolvedConfig;
}
