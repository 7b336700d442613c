// Loads schemas/ once and compiles validators with ajv. The files are the single source of
// truth: validation, generated types and the OpenRPC document all read them. A leaf module
// (imports nothing of the agent), so config, auth and rpc can all use it.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';

// ajv-formats is CommonJS with a default export.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export const SCHEMA_BASE = 'https://blockcopy-agent.local/schemas/';
export const SCHEMAS_DIR = fileURLToPath(new URL('../../schemas/', import.meta.url));

export type JsonSchema = Record<string, unknown> & { $id: string; title?: string; description?: string };

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.json') ? [join(dir, e.name)] : []);
}

export class SchemaSet {
  readonly ajv: Ajv;
  readonly byId = new Map<string, JsonSchema>();
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(dir = SCHEMAS_DIR) {
    // useDefaults fills documented defaults in, so handlers see one shape.
    this.ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, strictRequired: false });
    addFormats(this.ajv);
    for (const f of files(dir)) {
      const schema = JSON.parse(readFileSync(f, 'utf8')) as JsonSchema;
      this.byId.set(schema.$id, schema);
    }
    for (const schema of this.byId.values()) {
      hoistDefaults(schema, schema.$id, this.byId);
      this.ajv.addSchema(schema);
    }
  }

  /** path relative to schemas/, e.g. "methods/blockCopy.params.json" */
  validator(path: string): ValidateFunction {
    let v = this.compiled.get(path);
    if (!v) {
      v = this.ajv.getSchema(SCHEMA_BASE + path);
      if (!v) throw new Error(`no schema ${path}`);
      this.compiled.set(path, v);
    }
    return v;
  }

  schema(path: string): JsonSchema {
    const s = this.byId.get(SCHEMA_BASE + path);
    if (!s) throw new Error(`no schema ${path}`);
    return s;
  }
}

export type ValidationErrors = ErrorObject[];

/** ajv applies a `default` only where a property is declared, not inside the schema its
 *  $ref names; so a default written once on a def (defs/max-pause.json) is copied to each
 *  property that refers to it, and validation fills it in everywhere the def is used. */
function hoistDefaults(node: unknown, baseId: string, byId: Map<string, JsonSchema>): void {
  if (Array.isArray(node)) return node.forEach((n) => hoistDefaults(n, baseId, byId));
  if (!node || typeof node !== 'object') return;
  const n = node as Record<string, unknown>;
  if (n.properties && typeof n.properties === 'object') {
    for (const prop of Object.values(n.properties as Record<string, Record<string, unknown>>)) {
      if (typeof prop.$ref !== 'string' || 'default' in prop || prop.$ref.includes('#')) continue;
      const target = byId.get(new URL(prop.$ref, baseId).href);
      if (target && 'default' in target) prop.default = structuredClone(target.default);
    }
  }
  // ajv ignores (and in strict mode refuses) defaults under these: leave them alone.
  for (const [k, v] of Object.entries(n)) if (!NO_DEFAULTS.has(k)) hoistDefaults(v, baseId, byId);
}

const NO_DEFAULTS = new Set(['oneOf', 'anyOf', 'not', 'if', 'then', 'else']);
