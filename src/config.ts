// The agent's configuration: schema defaults < config file < environment < command-line flags,
// validated as a whole by schemas/config.schema.json. Flags and variables come from the
// schema (config-options.ts); nothing here knows an option by name but the --listen shorthand.
import { readFileSync } from 'node:fs';
import type { AgentConfig } from './generated/api.js';
import { ConfigError, configOptions, convert, SHORTHANDS, type ConfigOption } from './config-options.js';
import { SchemaSet } from './schemas.js';
import { readOnlyRules } from './transport/auth.js';
import { metricsConfigProblems } from './metrics/access.js';

export { ConfigError } from './config-options.js';

export type ResolvedConfig = Required<Omit<AgentConfig, 'tls'>> &
  Pick<AgentConfig, 'tls'> & {
    listen: Required<NonNullable<AgentConfig['listen']>>;
    limits: Required<NonNullable<AgentConfig['limits']>>;
    metrics: Required<Omit<NonNullable<AgentConfig['metrics']>, 'tls' | 'tokensFile'>> &
      Pick<NonNullable<AgentConfig['metrics']>, 'tls' | 'tokensFile'>;
    socket: Required<NonNullable<AgentConfig['socket']>>;
  };

/** One layer of overrides, keyed by flag name (e.g. 'state-dir', 'no-listen', 'listen'):
 *  text from the environment or a flag, true for a boolean flag given. */
export type Overrides = Record<string, string | boolean | undefined>;

export function envOverrides(env: NodeJS.ProcessEnv = process.env, options = configOptions()): Overrides {
  const out: Overrides = {};
  if (env[SHORTHANDS.listen.env] !== undefined) out.listen = env[SHORTHANDS.listen.env];
  for (const o of options) if (env[o.env] !== undefined) out[o.flag] = env[o.env];
  return out;
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

function setAt(cfg: Record<string, unknown>, path: string[], value: unknown): void {
  let node = cfg;
  for (const k of path.slice(0, -1)) {
    if (typeof node[k] !== 'object' || node[k] === null || Array.isArray(node[k])) node[k] = {};
    node = node[k] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

function apply(cfg: Record<string, unknown>, o: Overrides, byFlag: Map<string, ConfigOption>, schemas: SchemaSet): void {
  for (const key of Object.keys(o)) {
    if (!(key in SHORTHANDS) && !byFlag.has(key) && !(key.startsWith('no-') && byFlag.get(key.slice(3))?.negated)) {
      throw new ConfigError(`unknown option '${key}'`);
    }
  }
  if (typeof o.listen === 'string' && o.listen) {
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(o.listen);
    if (!m) throw new ConfigError(`listen must be HOST:PORT, got '${o.listen}'`);
    setAt(cfg, ['listen', 'host'], m[1] ?? m[2]);
    setAt(cfg, ['listen', 'port'], Number(m[3]));
    setAt(cfg, ['listen', 'enabled'], true);
  }
  for (const [flag, opt] of byFlag) {
    const raw = o[opt.negated ? `no-${flag}` : flag] ?? (opt.negated ? o[flag] : undefined);
    if (raw === undefined || raw === '') continue;
    setAt(cfg, opt.path, convert(opt, raw, schemas));
  }
  if (o['no-listen']) setAt(cfg, ['listen', 'enabled'], false);
}

/** Human-readable problems of a config object ([] when valid); fills defaults in place. */
export function configProblems(cfg: unknown, schemas = new SchemaSet()): string[] {
  const v = schemas.validator('config.schema.json');
  if (v(cfg)) return [];
  return (v.errors ?? []).map(
    (e) =>
      `${e.instancePath || '(top level)'} ${e.message}${e.params && 'additionalProperty' in e.params ? `: '${e.params.additionalProperty}'` : ''}`,
  );
}

export function loadConfig(file: string | undefined, ...layers: Overrides[]): ResolvedConfig {
  return resolveConfig(file ? readFile(file) : {}, layers, file);
}

/** Applies the layers in order over `base` and validates the result (defaults filled in). */
export function resolveConfig(
  base: Record<string, unknown>,
  layers: Overrides[],
  file?: string,
  schemas = new SchemaSet(),
): ResolvedConfig {
  const byFlag = new Map(configOptions(schemas).map((o) => [o.flag, o]));
  const cfg = structuredClone(base);
  for (const o of layers) apply(cfg, o, byFlag, schemas);
  const problems = configProblems(cfg, schemas);
  if (problems.length === 0) {
    // What the schema cannot say: read-only entries must be names or distinguished names,
    try {
      readOnlyRules((cfg as AgentConfig).auth?.readOnlyPrincipals ?? []);
    } catch (e) {
      problems.push((e as Error).message);
    }
    // A metrics listener off loopback only with TLS and client authentication.
    problems.push(...metricsConfigProblems((cfg as AgentConfig).metrics));
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration${file ? ` (${file})` : ''}:\n  ${problems.join('\n  ')}`);
  return cfg as ResolvedConfig;
}
