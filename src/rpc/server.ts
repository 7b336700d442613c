// JSON-RPC 2.0 over any transport: one frame in, at most one frame out. json-rpc-2.0 does the
// dispatch; framing is checked here because the library answers a few cases off-spec
// (a batch of one is answered without an array, JSON null is a parse error, object ids pass).
import { randomBytes } from 'node:crypto';
import { JSONRPCErrorCode, JSONRPCErrorException, JSONRPCServer, type JSONRPCResponse } from 'json-rpc-2.0';
import { AgentError } from '../errors.js';
import type { AgentConnectionParams, Job } from '../generated/api.js';
import type { Logger } from '../log.js';
import { toErrorObject, InvalidParams } from './errors.js';
import { openRpcDocument } from './discover.js';
import { methodList, type MethodName, type MethodSpec } from './methods.js';
import { SchemaSet } from '../schemas.js';
import type { GroupPort, JobPort } from './ports.js';
import type { Session } from './session.js';

export interface AuditEntry {
  time: string;
  requestId: string;
  principal: string;
  peer: string;
  method: string;
  params: unknown;
  outcome: 'ok' | 'error';
  error?: { code: number; message: string; name?: string };
  jobId?: string;
  groupId?: string;
  changed?: boolean;
}

export interface RpcServerOptions {
  service: JobPort;
  groups: GroupPort;
  log: Logger;
  version: string;
  schemas?: SchemaSet;
  /** Check every result against its schema too (tests turn this on). */
  validateResults?: boolean;
  /** Receives one entry per mutating call. */
  audit?: (entry: AuditEntry) => void;
}

/** What the JSON-RPC library hands each method: the caller's session and this request's id. */
interface CallContext {
  session: Session;
  requestId: string;
}

const invalidRequest = (id: unknown = null): JSONRPCResponse =>
  ({ jsonrpc: '2.0', id: validId(id) ? id : null, error: { code: JSONRPCErrorCode.InvalidRequest, message: 'Invalid Request' } }) as JSONRPCResponse;

function validId(id: unknown): id is string | number | null {
  return id === null || typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
}

export class RpcServer {
  readonly schemas: SchemaSet;
  private readonly server = new JSONRPCServer<CallContext>({ errorListener: () => {} });
  private readonly sessions = new Set<Session>();
  private readonly log: Logger;
  private readonly onJobChanged = (job: Job) => {
    for (const s of this.sessions) if (s.wants(job)) s.notify('job.changed', { job });
  };
  /** Every subscribed session hears about the libvirt connection, whatever its job filter. */
  private readonly onConnection = (params: AgentConnectionParams) => {
    for (const s of this.sessions) if (s.subscribed) s.notify('agent.connection', params);
  };

  constructor(private readonly opts: RpcServerOptions) {
    this.schemas = opts.schemas ?? new SchemaSet();
    this.log = opts.log;
    for (const spec of methodList()) this.register(spec);
    const doc = openRpcDocument(this.schemas, opts.version);
    this.server.addMethod('rpc.discover', () => doc);
    opts.service.on('job.changed', this.onJobChanged);
    opts.service.on('agent.connection', this.onConnection);
  }

  attach(session: Session): void {
    this.sessions.add(session);
  }

  detach(session: Session): void {
    session.close();
    this.sessions.delete(session);
  }

  /** Stops forwarding notifications (transports close their sessions themselves). */
  close(): void {
    this.opts.service.off('job.changed', this.onJobChanged);
    this.opts.service.off('agent.connection', this.onConnection);
    for (const s of this.sessions) s.close();
    this.sessions.clear();
  }

  /** One frame in; the response frame, or null when nothing must be answered. */
  async handle(frame: string, session: Session): Promise<string | null> {
    let msg: unknown;
    try {
      msg = JSON.parse(frame);
    } catch {
      return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: JSONRPCErrorCode.ParseError, message: 'Parse error' } });
    }
    if (Array.isArray(msg)) {
      if (msg.length === 0) return JSON.stringify(invalidRequest());
      const responses = (await Promise.all(msg.map((m) => this.single(m, session)))).filter((r) => r !== null);
      return responses.length > 0 ? JSON.stringify(responses) : null;
    }
    const r = await this.single(msg, session);
    return r === null ? null : JSON.stringify(r);
  }

  private async single(req: unknown, session: Session): Promise<JSONRPCResponse | null> {
    if (typeof req !== 'object' || req === null || Array.isArray(req)) return invalidRequest();
    const r = req as Record<string, unknown>;
    const hasId = 'id' in r;
    if (r.jsonrpc !== '2.0' || typeof r.method !== 'string' || (hasId && !validId(r.id)) ||
      ('params' in r && (typeof r.params !== 'object' || r.params === null))) {
      return hasId ? invalidRequest(r.id) : invalidRequest();
    }
    const requestId = randomBytes(4).toString('hex');
    return this.server.receive(r as never, { session, requestId });
  }

  private register(spec: { name: MethodName } & MethodSpec<MethodName>): void {
    const validate = this.schemas.validator(`methods/${spec.name}.params.json`);
    const validateResult = this.opts.validateResults ? this.schemas.validator(`methods/${spec.name}.result.json`) : null;
    this.server.addMethod(spec.name, async (raw: unknown, ctx: CallContext) => {
      const log = this.log.child({ requestId: ctx.requestId, session: ctx.session.id, method: spec.name });
      const started = Date.now();
      try {
        // Before anything recursive (clone, validation) runs over it.
        if (deeperThan(raw, MAX_DEPTH)) {
          throw new InvalidParams([{ instancePath: '', schemaPath: '', keyword: 'maxDepth', params: { limit: MAX_DEPTH }, message: `params must not nest deeper than ${MAX_DEPTH} levels` }]);
        }
        const params: unknown = raw === undefined ? {} : structuredClone(raw);
        if (Array.isArray(params)) {
          throw new InvalidParams([{ instancePath: '', schemaPath: '', keyword: 'type', params: { type: 'object' }, message: 'params must be an object (named parameters)' }]);
        }
        if (!validate(params)) throw new InvalidParams(validate.errors ?? []);
        if (spec.mutating && ctx.session.principal.readOnly) {
          throw new AgentError('unauthorized', `principal '${ctx.session.principal.name}' may not call ${spec.name}`);
        }
        // Validated against the method's schema above: the params are the generated type.
        const result = await spec.handle(params as never, { ...ctx, jobs: this.opts.service, groups: this.opts.groups });
        if (validateResult && !validateResult(result)) {
          throw new Error(`result of ${spec.name} breaks its schema: ${JSON.stringify(validateResult.errors)}`);
        }
        log.debug('call ok', { ms: Date.now() - started });
        if (spec.mutating) this.audit(ctx, spec.name, raw, { outcome: 'ok', result });
        return result;
      } catch (e) {
        const err = toErrorObject(e, log);
        log.info('call failed', { ms: Date.now() - started, code: err.code, error: err.message });
        if (spec.mutating) this.audit(ctx, spec.name, raw, { outcome: 'error', error: err });
        throw new JSONRPCErrorException(err.message, err.code, err.data);
      }
    });
  }

  private audit(ctx: CallContext, method: string, params: unknown, o: { outcome: 'ok' | 'error'; result?: unknown; error?: { code: number; message: string; data?: unknown } }): void {
    if (!this.opts.audit) return;
    const result = o.result as { job?: Job; group?: { groupId: string }; changed?: boolean } | undefined;
    const p = params as { jobId?: string; groupId?: string };
    const entry: AuditEntry = {
      time: new Date().toISOString(),
      requestId: ctx.requestId,
      principal: ctx.session.principal.name,
      peer: ctx.session.peer,
      method,
      params,
      outcome: o.outcome,
      ...(o.error ? { error: { code: o.error.code, message: o.error.message, ...(nameOf(o.error.data) ? { name: nameOf(o.error.data) } : {}) } } : {}),
      ...(result?.job?.jobId ?? p?.jobId ? { jobId: result?.job?.jobId ?? p.jobId } : {}),
      ...(result?.group?.groupId ?? p?.groupId ? { groupId: result?.group?.groupId ?? p.groupId } : {}),
      ...(typeof result?.changed === 'boolean' ? { changed: result.changed } : {}),
    };
    try {
      this.opts.audit(entry);
    } catch (e) {
      this.log.error('audit write failed', { error: e });
    }
  }
}

/** No schema nests more than a few levels; far deeper input is an attack or a bug. */
const MAX_DEPTH = 32;

/** Iterative, so that hostile nesting cannot exhaust the stack here either. */
function deeperThan(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (d >= limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1]);
  }
  return false;
}

function nameOf(data: unknown): string | undefined {
  return data && typeof data === 'object' && typeof (data as { name?: unknown }).name === 'string' ? (data as { name: string }).name : undefined;
}
