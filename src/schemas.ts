// Loads schemas/ once and compiles validators with ajv. The files are the single source of
// truth: validation, generated types and the OpenRPC document all read them. A leaf module
// (imports nothing of the agent), so config, auth and rpc can all use it.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { DEFAULTS } from './generated/api.js';
import { BandwidthError, byteCountOf, parseApiBandwidth } from './bandwidth.js';

// ajv-formats is CommonJS with a default export.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export const SCHEMA_BASE = 'https://blockcopy-agent.local/schemas/';
export const SCHEMAS_DIR = fileURLToPath(new URL('../../schemas/', import.meta.url));

export type JsonSchema = Record<string, unknown> & { $id: string; title?: string; description?: string };

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.json') ? [join(dir, e.name)] : [],
  );
}

export class SchemaSet {
  readonly ajv: Ajv;
  readonly byId = new Map<string, JsonSchema>();
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(dir = SCHEMAS_DIR) {
    // useDefaults fills documented defaults in, so handlers see one shape.
    this.ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, strictRequired: false });
    addFormats(this.ajv);
    addNormalize(this.ajv);
    for (const f of files(dir)) {
      const schema = JSON.parse(readFileSync(f, 'utf8')) as JsonSchema;
      this.byId.set(schema.$id, schema);
    }
    for (const schema of this.byId.values()) {
      hoistDefaults(schema);
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

/**
 * `"x-normalize": "bandwidth"` (schemas/defs/bandwidth.json): a string ("100M") is parsed by
 * src/bandwidth.ts (the CLI's parser too) and replaced by its byte count, so that every handler,
 * the journal and the answers see bytes/s only; a string it refuses (no unit, unknown unit,
 * overflow) fails validation with the parser's message. Runs after the other keywords.
 */
function addNormalize(ajv: Ajv): void {
  // Per request object: the properties this keyword turned into a decimal string (above 2^53).
  const normalized = new WeakMap<object, Map<string | number, string>>();
  const normalize = (kind: string, data: unknown, _p: unknown, cxt?: { parentData: unknown; parentDataProperty: string | number }) => {
    if (kind !== 'bandwidth' || typeof data !== 'string' || !cxt || typeof cxt.parentData !== 'object' || cxt.parentData === null)
      return true;
    // A schema may reach the same value twice (blockCopyGroup's disks: properties and
    // if/then/else): the value this keyword wrote is bytes/s already, not a string to parse.
    const done = normalized.get(cxt.parentData);
    if (done?.get(cxt.parentDataProperty) === data) return true;
    try {
      const bytes = byteCountOf(parseApiBandwidth(data));
      (cxt.parentData as Record<string | number, unknown>)[cxt.parentDataProperty] = bytes;
      if (typeof bytes === 'string') {
        if (done) done.set(cxt.parentDataProperty, bytes);
        else normalized.set(cxt.parentData, new Map([[cxt.parentDataProperty, bytes]]));
      }
      return true;
    } catch (e) {
      if (!(e instanceof BandwidthError)) throw e;
      normalize.errors = [{ keyword: 'x-normalize', message: e.message, params: { normalize: kind } }];
      return false;
    }
  };
  normalize.errors = [] as Partial<ErrorObject>[];
  ajv.addKeyword({ keyword: 'x-normalize', schemaType: 'string', modifying: true, post: true, errors: true, validate: normalize });
}

/** ajv applies a `default` only where a property is declared, not inside the schema its $ref
 *  names: so each property's default, resolved once by scripts/gen-types.mjs, is written beside
 *  its $ref, and validation fills it in everywhere the def is used. */
function hoistDefaults(schema: JsonSchema): void {
  const defaults = (DEFAULTS as Record<string, Record<string, unknown>>)[schema.title ?? ''];
  const props = schema.properties as Record<string, Record<string, unknown>> | undefined;
  if (!defaults || !props) return;
  for (const [key, value] of Object.entries(defaults)) {
    const prop = props[key];
    if (prop && !('default' in prop)) prop.default = structuredClone(value);
  }
}
