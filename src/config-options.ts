// The configuration's command-line flags and environment variables, derived from
// schemas/config.schema.json: every leaf property (nested objects flattened) is one option,
// `--listen-port` / BLOCKCOPY_LISTEN_PORT for listen.port. A property added to the schema
// is a flag, a variable and a line of help without code here; defaults and descriptions
// come from the schema only.
import { SchemaSet, type JsonSchema } from './schemas.js';

export type OptionKind = 'string' | 'number' | 'boolean' | 'list' | 'json';

export interface ConfigOption {
  /** Where the value goes in the config object, e.g. ['listen', 'port']. */
  path: string[];
  /** The flag without dashes; a boolean whose default is true is set off with --no-<flag>. */
  flag: string;
  env: string;
  kind: OptionKind;
  negated: boolean;
  placeholder: string;
  description: string;
  default?: unknown;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();

type Node = Record<string, unknown> & { type?: string; properties?: Record<string, Node>; items?: Node; pattern?: string };

function kindOf(n: Node): OptionKind {
  if (n.type === 'integer' || n.type === 'number') return 'number';
  if (n.type === 'boolean') return 'boolean';
  if (n.type === 'string') return 'string';
  if (n.type === 'array' && n.items?.type === 'string') return 'list';
  return 'json';
}

/** Lists of absolute paths are written like PATH (A:B); other lists with commas. */
const pathList = (n: Node) => n.type === 'array' && typeof n.items?.pattern === 'string' && n.items.pattern.startsWith('^/');

function placeholderOf(n: Node, kind: OptionKind): string {
  if (kind === 'list') return pathList(n) ? 'PATH:PATH' : 'A,B';
  if (kind === 'number') return 'N';
  if (kind === 'json') return 'JSON';
  if (Array.isArray(n.enum)) return (n.enum as string[]).join('|');
  return n.pattern === '^/' ? 'PATH' : 'TEXT';
}

export function configOptions(schemas = new SchemaSet()): ConfigOption[] {
  const out: ConfigOption[] = [];
  const walk = (props: Record<string, Node>, prefix: string[]) => {
    for (const [name, n] of Object.entries(props)) {
      const path = [...prefix, name];
      if (n.type === 'object' && n.properties) {
        walk(n.properties, path);
        continue;
      }
      const kind = kindOf(n);
      const negated = kind === 'boolean' && n.default === true;
      out.push({
        path,
        kind,
        negated,
        flag: path.map(kebab).join('-'),
        env: `BLOCKCOPY_${path.map(snake).join('_')}`,
        placeholder: placeholderOf(n, kind),
        description: typeof n.description === 'string' ? n.description : '',
        ...(n.default !== undefined ? { default: n.default } : {}),
      });
    }
  };
  walk((schemas.schema('config.schema.json') as JsonSchema & { properties: Record<string, Node> }).properties, []);
  return out;
}

/** Flags that are not one schema key: --listen HOST:PORT sets host, port and enabled. */
export const SHORTHANDS = {
  listen: {
    env: 'BLOCKCOPY_LISTEN',
    placeholder: 'HOST:PORT',
    description: 'Serve WebSocket on HOST:PORT (sets listen.host, listen.port, listen.enabled).',
  },
  'no-listen': { env: undefined, placeholder: '', description: 'Do not serve WebSocket (listen.enabled false).' },
} as const;

/** Turns one flag or variable's text into the value the schema expects. Text that does not
 *  parse is kept as text, so that validation reports it against the option's path. */
export function convert(o: ConfigOption, raw: string | boolean, schemas = new SchemaSet()): unknown {
  if (typeof raw === 'boolean') return o.negated ? !raw : raw;
  switch (o.kind) {
    case 'number':
      return /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
    case 'boolean':
      return /^(1|true|yes)$/i.test(raw) ? true : /^(0|false|no)$/i.test(raw) ? false : raw;
    case 'string':
      return raw;
    case 'list': {
      if (raw.trimStart().startsWith('[')) return parseJson(o, raw);
      const node = o.path.reduce<Node | undefined>((n, k) => n?.properties?.[k], schemas.schema('config.schema.json') as Node);
      return raw
        .split(node && pathList(node) ? ':' : ',')
        .map((s) => s.trim())
        .filter(Boolean);
    }
    case 'json':
      return parseJson(o, raw);
  }
}

export class ConfigError extends Error {}

function parseJson(o: ConfigOption, raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch (e) {
    throw new ConfigError(`--${o.flag} / ${o.env} must be JSON: ${(e as Error).message}`);
  }
}

/** The help lines for every option, from the schema's descriptions and defaults. */
export function optionsHelp(options = configOptions()): string {
  const line = (flag: string, env: string | undefined, description: string, dflt?: unknown) =>
    `  ${flag}${env ? `  (${env})` : ''}\n      ${description}${dflt !== undefined && !(Array.isArray(dflt) && dflt.length === 0) && !(typeof dflt === 'object' && !Array.isArray(dflt)) ? ` Default: ${JSON.stringify(dflt)}.` : ''}`;
  return [
    ...Object.entries(SHORTHANDS).map(([f, s]) => line(`--${f}${s.placeholder ? ` ${s.placeholder}` : ''}`, s.env, s.description)),
    ...options.map((o) =>
      line(o.negated ? `--no-${o.flag}` : `--${o.flag}${o.kind === 'boolean' ? '' : ` ${o.placeholder}`}`, o.env, o.description, o.default),
    ),
  ].join('\n');
}
