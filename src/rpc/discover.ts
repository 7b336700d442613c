// The OpenRPC document served by rpc.discover, assembled from the schema files.
import { ERRORS } from '../errors.js';
import { methodList } from './methods.js';
import { SCHEMA_BASE, type JsonSchema, type SchemaSet } from '../schemas.js';

type Key = (id: string) => string;

export function openRpcDocument(schemas: SchemaSet, version: string): Record<string, unknown> {
  // Every schema under components, keyed by its path, with $refs rewritten to point there.
  const key: Key = (id) =>
    id
      .slice(SCHEMA_BASE.length)
      .replace(/\.json$/, '')
      .replace(/[^A-Za-z0-9.]/g, '_');
  const components: Record<string, unknown> = {};
  for (const [id, schema] of schemas.byId) components[key(id)] = rewriteRefs(schema, id, key);
  const ref = (path: string) => ({ $ref: `#/components/schemas/${key(SCHEMA_BASE + path)}` });
  return {
    openrpc: '1.2.6',
    info: { title: 'blockcopy-agent', version, description: 'Live block copy of running VM disks through libvirt.' },
    methods: methodList().map((m) => {
      const path = `methods/${m.name}.params.json`;
      const params = schemas.schema(path);
      return {
        name: m.name,
        summary: m.summary,
        ...(params.description ? { description: params.description } : {}),
        paramStructure: 'by-name',
        params: contentDescriptors(params, key),
        result: { name: 'result', schema: ref(`methods/${m.name}.result.json`) },
        errors: Object.keys(ERRORS).map((name) => ({ $ref: `#/components/errors/${name}` })),
        // Constraints across keys (oneOf: jobId, or domain and disk) have no place in a content
        // descriptor; the whole params object's schema is here for clients that validate.
        'x-params-schema': ref(path),
      };
    }),
    components: {
      schemas: components,
      errors: Object.fromEntries(
        Object.entries(ERRORS).map(([name, e]) => [
          name,
          { code: e.code, message: name, data: { description: e.description, retryable: e.retryable } },
        ]),
      ),
      contentDescriptors: {
        'job.changed': {
          name: 'job.changed',
          summary: 'Notification sent to subscribed sessions',
          schema: ref('notifications/job.changed.json'),
        },
        'agent.connection': {
          name: 'agent.connection',
          summary: 'Notification sent to subscribed sessions when the libvirt connection is lost and restored',
          schema: ref('notifications/agent.connection.json'),
        },
      },
    },
  };
}

/** By-name params per OpenRPC: one content descriptor per top-level key the method accepts. */
function contentDescriptors(params: JsonSchema, key: Key): Array<Record<string, unknown>> {
  const properties = (params.properties ?? {}) as Record<string, Record<string, unknown>>;
  const required = new Set((params.required ?? []) as string[]);
  return Object.entries(properties).map(([name, schema]) => {
    const description = typeof schema.description === 'string' ? schema.description : undefined;
    return {
      name,
      required: required.has(name),
      ...(description ? { description } : {}),
      schema: rewriteRefs(schema, params.$id, key),
    };
  });
}

function rewriteRefs(node: unknown, baseId: string, key: Key): unknown {
  if (Array.isArray(node)) return node.map((n) => rewriteRefs(n, baseId, key));
  if (node && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') {
        // A JSON pointer into another file (file.json#/properties/x) stays a pointer into its component.
        const url = new URL(v, baseId);
        out[k] = `#/components/schemas/${key(url.origin + url.pathname)}${url.hash.slice(1)}`;
      } else if (k !== '$id') out[k] = rewriteRefs(v, baseId, key);
    }
    return out;
  }
  return node;
}
