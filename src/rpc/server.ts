// JSON-RPC 2.0 over any transport: one frame in, at most one frame out. json-rpc-2.0 dispatches
// single requests; framing, batches, limits and serialization are ours (src/protocol/), because
// the library answers a few cases off-spec (a batch of one without an array, JSON null as a parse
// error, object ids) and would lose ids beyond 2^53.
import { randomBytes } from 'node:crypto';
import { JSONRPCErrorException, JSONRPCServer } from 'json-rpc-2.0';
import { AgentError } from '../errors.js';
import type { AgentConnectionParams, AnyJob, AuditEntry } from '../generated/api.js';
import { DEFAULTS } from '../generated/api.js';
import type { Logger } from '../log.js';
import type { RpcObserver } from '../metrics/observer.js';
import {
  CODES,
  MAX_ID_BYTES,
  agentError,
  cachedResult,
  errorResponse,
  frameLength,
  callMessage,
  invalidRequest,
  parseError,
  parseFrame,
  rateLimited,
  serialize,
  serializeBatch,
  type CallMessage,
  type Frame,
  type Response,
} from '../protocol/index.js';
import { toErrorObject, InvalidParams } from './errors.js';
import { openRpcDocument } from './discover.js';
import { methodList, type MethodName, type MethodSpec } from './methods.js';
import { SchemaSet } from '../schemas.js';
import type { BackupPort, GroupPort, JobPort, SnapshotPort } from './ports.js';
import { PER_CALL_BYTES, jsonSize, type Session } from './session.js';

export interface RpcServerOptions {
  service: JobPort;
  groups: GroupPort;
  /** snapshotDisks; without it the method answers unsupported. */
  snapshots?: SnapshotPort;
  backups?: BackupPort;
  log: Logger;
  version: string;
  schemas?: SchemaSet;
  /** Check every result against its schema too (tests turn this on). */
  validateResults?: boolean;
  /**
   * Receives the entries of every mutating call; a throw refuses the call (auditFailed) before
   * it acts: an action that cannot be recorded does not happen.
   */
  audit?: (entry: AuditEntry) => void;
  /** Most messages in one batch (default 100); a larger batch is refused whole. */
  maxBatch?: number;
  /** Bytes the answers of one batch may take (default 1 MiB); beyond, read-only answers are dropped. */
  maxResponseBytes?: number;
  /** Told of every method call (metrics). */
  observer?: RpcObserver;
}

interface AuditOutcome {
  outcome: AuditEntry['outcome'];
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

interface CallContext {
  session: Session;
  requestId: string;
}

const MUTATING = new Set<string>(
  methodList()
    .filter((m) => m.mutating)
    .map((m) => m.name),
);

export class RpcServer {
  readonly schemas: SchemaSet;
  private readonly server = new JSONRPCServer<CallContext>({ errorListener: () => {} });
  private readonly sessions = new Set<Session>();
  private readonly log: Logger;
  private readonly discoverJson: Buffer;
  private readonly maxBatch: number;
  private readonly maxResponseBytes: number;
  private readonly onJobChanged = (job: AnyJob) => {
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
    // Serialized once: a flood of rpc.discover costs a string copy per call, not a JSON build.
    this.discoverJson = Buffer.from(JSON.stringify(openRpcDocument(this.schemas, opts.version)));
    this.maxBatch = opts.maxBatch ?? DEFAULTS.AgentConfig.limits.maxBatch;
    this.maxResponseBytes = opts.maxResponseBytes ?? 1024 * 1024;
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

  /** One frame in; the response frame, or null when nothing must be answered. Never throws. */
  handle(frame: string, session: Session): Promise<Frame | null> {
    // The frame is parsed here, synchronously, into what the calls keep (ids, methods, params):
    // neither its text nor the rest of its messages stays alive while a call (a wait) runs.
    let read: Frame | { batch: boolean; messages: CallMessage[] };
    try {
      read = this.read(frame, session);
    } catch (e) {
      return Promise.resolve(this.internalError(e));
    }
    if (typeof read === 'string' || Array.isArray(read)) return Promise.resolve(read);
    return this.answer(read.batch, read.messages, session).catch((e: unknown) => this.internalError(e));
  }

  /** A bug here must still answer (and be seen), never leave the caller waiting. */
  private internalError(e: unknown): Frame {
    this.log.error('internal error handling a frame', { error: e instanceof Error ? { message: e.message, stack: e.stack } : String(e) });
    return serialize(errorResponse(null, { code: CODES.internalError, message: 'Internal error' }));
  }

  /** The frame's messages, or its answer when the frame as a whole is refused. */
  private read(frame: string, session: Session): Frame | { batch: boolean; messages: CallMessage[] } {
    const parsed = parseFrame(frame);
    if (!parsed.ok) return serialize(this.overRate(session) ? rateLimited(null) : parseError());
    const { items, rawIds, batch } = parsed;
    if (batch && items.length === 0) return serialize(invalidRequest());
    if (batch && items.length > this.maxBatch) {
      return serialize(
        invalidRequest(null, `a batch of ${items.length} messages exceeds the limit of ${this.maxBatch}`, { maxBatch: this.maxBatch }),
      );
    }
    return { batch, messages: items.map((m, i) => callMessage(m, rawIds[i])) };
  }

  /**
   * A frame's calls start in order, each once the connection's pending budget has room for it; a
   * call that finds no room while none of its own frame's calls runs is refused (tooManyPending):
   * the budget is held by earlier frames. So a batch larger than the budget runs as its own calls
   * end (its answer waits for all of them anyway), and is never refused for its own size.
   */
  private async answer(batch: boolean, messages: CallMessage[], session: Session): Promise<Frame | null> {
    const answers: Array<Frame | null> = new Array(messages.length).fill(null);
    const running = new Set<Promise<void>>();
    for (const [i, m] of messages.entries()) {
      while (running.size > 0 && !session.pending.fits(costOf(m))) await Promise.race(running);
      const p: Promise<void> = this.single(m, session).then((a) => {
        answers[i] = a;
        running.delete(p);
      });
      running.add(p);
    }
    await Promise.all(running);
    if (!batch) return answers[0] ?? null;
    return serializeBatch(this.bounded(messages, answers));
  }

  /**
   * The answers of one batch, within maxResponseBytes: read-only answers past the bound are
   * replaced by responseTooLarge (they had no effect; mutating answers and errors always stay).
   */
  private bounded(messages: CallMessage[], answers: Array<Frame | null>): Frame[] {
    let total = answers.reduce((n: number, a) => n + (a ? frameLength(a) : 0), 0);
    const out: Frame[] = [];
    for (let i = answers.length - 1; i >= 0; i--) {
      const a = answers[i];
      const m = messages[i]!;
      if (a === null || a === undefined) continue;
      const readOnlyRequest = m.kind === 'request' && !MUTATING.has(m.method!);
      if (total > this.maxResponseBytes && readOnlyRequest && (typeof a !== 'string' || a.includes('"result":'))) {
        const r = serialize(
          errorResponse(
            m.id,
            agentError('responseTooLarge', `the answers of this batch exceed ${this.maxResponseBytes} bytes; ask for fewer at once`, {
              maxResponseBytes: this.maxResponseBytes,
            }),
          ),
          m.rawId,
        );
        total += r.length - frameLength(a);
        out.push(r);
      } else out.push(a);
    }
    return out.reverse();
  }

  /** Takes one token of the session's rate; false when it has none left (counted as a refusal). */
  private overRate(session: Session): boolean {
    if (!session.budget || session.budget.take()) return false;
    this.opts.observer?.refused?.('rateLimited');
    return true;
  }

  private async single(m: CallMessage, session: Session): Promise<Frame | null> {
    // Every message costs one token, junk included: the rate counts calls, not frames.
    if (this.overRate(session)) return m.kind === 'notification' ? null : serialize(rateLimited(m.id), m.rawId);
    if (m.kind !== 'request' && m.kind !== 'notification') {
      return serialize(invalidRequest(m.id, m.idProblem, m.idProblem ? { maxIdBytes: MAX_ID_BYTES } : undefined), m.rawId);
    }
    if (m.method === 'rpc.discover') {
      return m.kind === 'request' ? cachedResult(m.id, m.rawId, this.discoverJson) : null;
    }
    // What the call pins while it runs is taken before it runs: beyond the budget, refused.
    const cost = costOf(m);
    if (!session.pending.take(cost)) return this.tooManyPending(m, session, cost);
    const requestId = randomBytes(4).toString('hex');
    const request = { jsonrpc: '2.0', method: m.method, ...(m.params !== undefined ? { params: m.params } : {}) };
    delete m.params; // the batch's other calls must not keep these params alive
    try {
      const res = await this.server.receive((m.kind === 'request' ? { ...request, id: m.id } : request) as never, { session, requestId });
      return res === null ? null : serialize(res as Response, m.rawId);
    } finally {
      session.pending.release(cost);
    }
  }

  private tooManyPending(m: CallMessage, session: Session, cost: number): Frame | null {
    this.opts.observer?.refused?.('tooManyPending');
    if (m.kind === 'notification') return null;
    const e = session.pending.refusal(cost);
    return serialize(errorResponse(m.id, agentError('tooManyPending', e.message, e.data)), m.rawId);
  }

  private register(spec: { name: MethodName } & MethodSpec<MethodName>): void {
    const validate = this.schemas.validator(`methods/${spec.name}.params.json`);
    const validateResult = this.opts.validateResults ? this.schemas.validator(`methods/${spec.name}.result.json`) : null;
    this.server.addMethod(spec.name, async (raw: unknown, ctx: CallContext) => {
      // Made when the call ends, not kept (a logger per call) while it runs: waits run for hours.
      const log = () => this.log.child({ requestId: ctx.requestId, session: ctx.session.id, method: spec.name });
      const started = Date.now();
      let pinned = 0;
      try {
        // Before anything recursive (clone, validation) runs over it.
        if (deeperThan(raw, MAX_DEPTH)) {
          throw new InvalidParams([
            {
              instancePath: '',
              schemaPath: '',
              keyword: 'maxDepth',
              params: { limit: MAX_DEPTH },
              message: `params must not nest deeper than ${MAX_DEPTH} levels`,
            },
          ]);
        }
        const params: unknown = raw === undefined ? {} : structuredClone(raw);
        if (Array.isArray(params)) {
          throw new InvalidParams([
            {
              instancePath: '',
              schemaPath: '',
              keyword: 'type',
              params: { type: 'object' },
              message: 'params must be an object (named parameters)',
            },
          ]);
        }
        if (!validate(params)) throw new InvalidParams(validate.errors ?? []);
        if (spec.mutating && ctx.session.principal.readOnly) {
          throw new AgentError('unauthorized', `principal '${ctx.session.principal.name}' may not call ${spec.name}`);
        }
        // Kept while the call runs, twice (as sent, for the audit, and validated): in the budget.
        const size = 2 * jsonSize(params);
        if (!ctx.session.pending.take(size, 0)) throw ctx.session.pending.refusal(size);
        pinned = size;
        if (spec.mutating) {
          // Recorded before it acts; if it cannot be recorded, it does not happen.
          try {
            this.audit(ctx, spec.name, raw, { outcome: 'accepted' });
          } catch (e) {
            this.log.error('audit write failed: call refused', {
              method: spec.name,
              requestId: ctx.requestId,
              error: (e as Error).message,
            });
            throw new AgentError('auditFailed', `the audit record of this ${spec.name} call could not be written; nothing was done`);
          }
        }
        // Validated against the method's schema above: the params are the generated type.
        const result = await spec.handle(params as never, {
          ...ctx,
          jobs: this.opts.service,
          groups: this.opts.groups,
          snapshots: this.opts.snapshots ?? NO_SNAPSHOTS,
          backups: this.opts.backups ?? NO_BACKUPS,
        });
        if (validateResult && !validateResult(result)) {
          throw new Error(`result of ${spec.name} breaks its schema: ${JSON.stringify(validateResult.errors)}`);
        }
        log().debug('call ok', { ms: Date.now() - started });
        this.opts.observer?.call(spec.name, (Date.now() - started) / 1000);
        if (spec.mutating) this.auditOutcome(ctx, spec.name, raw, { outcome: 'ok', result });
        return result;
      } catch (e) {
        const err = toErrorObject(e, log());
        log().info('call failed', { ms: Date.now() - started, code: err.code, error: err.message });
        this.opts.observer?.call(
          spec.name,
          (Date.now() - started) / 1000,
          nameOf(err.data) ?? (err.code === CODES.invalidParams ? 'invalidParams' : 'internal'),
        );
        if (spec.mutating && nameOf(err.data) !== 'auditFailed') this.auditOutcome(ctx, spec.name, raw, { outcome: 'error', error: err });
        throw new JSONRPCErrorException(err.message, err.code, err.data);
      } finally {
        ctx.session.pending.release(pinned, 0);
      }
    });
  }

  /** The outcome of a call (it already acted or was refused): a failed write is logged. */
  private auditOutcome(ctx: CallContext, method: string, params: unknown, o: AuditOutcome): void {
    try {
      this.audit(ctx, method, params, o);
    } catch (e) {
      this.log.error('audit write failed', { method, requestId: ctx.requestId, outcome: o.outcome, error: (e as Error).message });
    }
  }

  private audit(ctx: CallContext, method: string, params: unknown, o: AuditOutcome): void {
    if (!this.opts.audit) return;
    const result = o.result as { job?: AnyJob; group?: { groupId: string }; changed?: boolean } | undefined;
    const p = (params && typeof params === 'object' ? params : {}) as { jobId?: unknown; groupId?: unknown };
    const jobId = result?.job?.jobId ?? (typeof p.jobId === 'string' ? p.jobId : undefined);
    const groupId = result?.group?.groupId ?? (typeof p.groupId === 'string' ? p.groupId : undefined);
    this.opts.audit({
      time: new Date().toISOString(),
      requestId: ctx.requestId,
      principal: ctx.session.principal.name,
      peer: ctx.session.peer,
      method,
      params: (params && typeof params === 'object' ? params : {}) as AuditEntry['params'],
      outcome: o.outcome,
      ...(o.error
        ? { error: { code: o.error.code, message: o.error.message, ...(nameOf(o.error.data) ? { name: nameOf(o.error.data) } : {}) } }
        : {}),
      ...(jobId ? { jobId } : {}),
      ...(groupId ? { groupId } : {}),
      ...(typeof result?.changed === 'boolean' ? { changed: result.changed } : {}),
    });
  }
}

const noBackups = () => Promise.reject(new AgentError('unsupported', 'this agent serves no backups'));
const NO_BACKUPS: BackupPort = { backup: noBackups, checkpoints: noBackups, deleteCheckpoints: noBackups };

const NO_SNAPSHOTS: SnapshotPort = {
  snapshotDisks: () => Promise.reject(new AgentError('unsupported', 'this agent serves no snapshots')),
};

const idBytes = (m: CallMessage) => (m.rawId ?? (typeof m.id === 'string' ? m.id : '')).length;

/** What a message takes of the pending budget when it starts (0: it takes none, it is answered at once). */
function costOf(m: CallMessage): number {
  if ((m.kind !== 'request' && m.kind !== 'notification') || m.method === 'rpc.discover') return 0;
  return PER_CALL_BYTES + idBytes(m);
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
  return data && typeof data === 'object' && typeof (data as { name?: unknown }).name === 'string'
    ? (data as { name: string }).name
    : undefined;
}
