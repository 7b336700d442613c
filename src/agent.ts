// Composition root: libvirt connection → job manager → RPC server → transports.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { openAudit } from './audit.js';
import type { ResolvedConfig } from './config.js';
import { loadDestinationPolicy, makeDestinationCheck } from './destination/policy.js';
import { GroupManager } from './jobs/groups.js';
import { JobManager } from './jobs/manager.js';
import { openConnection } from './libvirt/index.js';
import type { Logger } from './log.js';
import type { AgentMetrics } from './metrics/metrics.js';
import type { MetricsServer } from './metrics/http.js';
import type { AuditEntry } from './generated/api.js';
import { RpcServer } from './rpc/server.js';
import { SchemaSet } from './schemas.js';
import { resolvesToLoopbackOnly } from './net/addresses.js';
import { Authenticator, loadTokens } from './transport/auth.js';
import type { FlowLimits } from './transport/flow.js';
import { acquireStateLock, type LockInfo } from './state-lock.js';
import { ConnectionSupervisor } from './supervisor.js';
import { serveStdio, type StdioEnd } from './transport/stdio.js';
import { serveUnixSocket, type UnixSocketTransport } from './transport/unix-socket.js';
import { startWebSocket, type WebSocketTransport } from './transport/websocket.js';

import { VERSION } from './version.js';

export { VERSION };

export interface AgentOptions {
  stdio: boolean;
  /** stdio: `blockcopy-agent stdio`, which exits with its one caller (default daemon). */
  mode?: 'daemon' | 'stdio';
  /** Serve the local unix socket (config socket.*): `serve` does, `stdio` does not. */
  socket?: boolean;
  log: Logger;
  /** Validate every result against its schema (tests). */
  validateResults?: boolean;
  audit?: (entry: AuditEntry) => void;
}

export interface Agent {
  readonly ws: WebSocketTransport | null;
  readonly metrics: MetricsServer | null;
  /** Resolves when the stdio transport's input ended (never, without stdio). */
  readonly stdioEnded: Promise<StdioEnd>;
  /**
   * Reads the tokens file and TLS material again (SIGHUP); connections whose token is gone or
   * changed are closed. On a bad file, the old credentials stay and the error is thrown.
   */
  reload(): { closed: number };
  close(): Promise<void>;
}

export class StateDirBusy extends Error {
  constructor(readonly holder: LockInfo) {
    super(`another agent (pid ${holder.pid}) owns this state directory`);
  }
}

function readTls(tls: NonNullable<ResolvedConfig['tls']>) {
  return {
    cert: readFileSync(tls.cert),
    key: readFileSync(tls.key),
    ...(tls.ca ? { ca: readFileSync(tls.ca) } : {}),
    requestCert: !!tls.ca,
    rejectUnauthorized: !!tls.ca && !!tls.requireClientCert,
  };
}

/** Plaintext only on loopback, decided on what the name resolves to ('localhost' could be 0.0.0.0 in /etc/hosts). */
async function refuseInsecureListener(cfg: ResolvedConfig): Promise<void> {
  if (!cfg.listen.enabled || cfg.tls) return;
  const { loopback, addresses } = await resolvesToLoopbackOnly(cfg.listen.host).catch((e: Error) => {
    throw new Error(`cannot resolve the listen host ${cfg.listen.host}: ${e.message}`);
  });
  if (!loopback) {
    throw new Error(
      `refusing to listen on ${cfg.listen.host} (${addresses.join(', ')}) without TLS: configure tls (cert, key) or bind to a loopback address`,
    );
  }
}

/**
 * What the agent opened, closed in the reverse order: one list for a failed start and for
 * close(), so the two cannot drift. A step that fails is logged and the rest still run.
 */
class Teardown {
  private readonly steps: Array<{ what: string; run: () => unknown }> = [];
  private done: Promise<void> | null = null;

  constructor(private readonly log: Logger) {}

  add(what: string, run: () => unknown): void {
    this.steps.push({ what, run });
  }

  run(): Promise<void> {
    this.done ??= (async () => {
      for (const step of this.steps.reverse()) {
        await Promise.resolve()
          .then(step.run)
          .catch((e: unknown) => this.log.error(`shutdown: cannot close the ${step.what}`, { error: e }));
      }
    })();
    return this.done;
  }
}

export async function startAgent(cfg: ResolvedConfig, opts: AgentOptions): Promise<Agent> {
  const log = opts.log;
  await refuseInsecureListener(cfg);
  const schemas = new SchemaSet();
  // Read credentials before anything else, so a bad tokens file stops the start cleanly.
  const readTokens = () => (cfg.listen.enabled && cfg.auth.tokensFile ? loadTokens(cfg.auth.tokensFile, schemas) : []);
  const tokens = readTokens();
  const tls = cfg.listen.enabled && cfg.tls ? readTls(cfg.tls) : null;
  const flow: FlowLimits = {
    maxBufferedBytes: cfg.limits.maxBufferedBytes,
    slowReaderMs: cfg.limits.slowReaderMs,
    maxPendingCalls: cfg.limits.maxBatch,
  };
  // Refuse to start on an untrustworthy allowed root, before anything is opened.
  const destinationPolicy = await loadDestinationPolicy(cfg, (msg, data) => log.warn(msg, data as Record<string, unknown>));

  // From here on, everything opened is added to the teardown as it is opened.
  const teardown = new Teardown(log);
  const audit = openAudit(cfg.audit.file, log);
  teardown.add('audit trail', () => audit.close());
  const lock = acquireStateLock(cfg.stateDir);
  if (!lock.acquired) {
    await teardown.run();
    throw new StateDirBusy(lock.holder);
  }
  teardown.add('state directory lock', () => lock.release());
  let ws: WebSocketTransport | null = null;
  let auth: Authenticator | null = null;
  let metricsServer: MetricsServer | null = null;
  let metrics: AgentMetrics | null = null;
  let rpc: RpcServer;
  // Every transport tells the metrics of the clients it refused.
  const refusals = () => (metrics ? { onRefusal: metrics.refused.bind(metrics) } : {});
  try {
    if (cfg.metrics.enabled) {
      // Loaded only when enabled: prom-client stays out of agents that do not serve metrics.
      const m = new (await import('./metrics/metrics.js')).AgentMetrics({ endedJobSeconds: cfg.metrics.endedJobSeconds });
      teardown.add('metrics', () => m.close());
      metrics = m;
    }

    // Every copy in flight has libvirt calls pending (its own, its polls, the scans): the cap on
    // pending calls grows with the copy limit, so a burst at that limit is not refused as busy.
    const maxPendingCalls = Math.max(64, 4 * cfg.maxConcurrentCopies);
    const supervisor = new ConnectionSupervisor({ open: () => openConnection(cfg.uri, { maxPendingCalls }), log });
    supervisor.on('state', (e) => log.info('libvirt connection', e));
    const conn = await supervisor.connect();
    const jobs = new JobManager({
      connection: conn,
      stateDir: cfg.stateDir,
      log,
      pollIntervalMs: cfg.pollIntervalMs,
      maxConcurrentCopies: cfg.maxConcurrentCopies,
      agentVersion: VERSION,
      agentMode: opts.mode ?? 'daemon',
      checkDestination: makeDestinationCheck(destinationPolicy),
    });
    // The connection in use at the end (the supervisor may have replaced the first one).
    teardown.add('libvirt connection', () => jobs.connection.close());
    teardown.add('job manager', () => jobs.stop());
    // Runs first of the three: no reconnect while the job manager stops and the connection closes.
    teardown.add('connection supervisor', () => supervisor.stop());
    metrics?.observeJobs(jobs);
    await jobs.start();
    supervisor.watch(conn, jobs);
    const groups = new GroupManager({ jobs, log, ...(metrics ? { onSwitch: metrics.groupSwitched.bind(metrics) } : {}) });
    teardown.add('group manager', () => groups.stop());
    await groups.start();
    rpc = new RpcServer({
      service: jobs,
      groups,
      log,
      version: VERSION,
      schemas,
      validateResults: opts.validateResults,
      audit: opts.audit ?? audit.write,
      maxBatch: cfg.limits.maxBatch,
      maxResponseBytes: cfg.limits.maxBufferedBytes,
      ...(metrics ? { observer: metrics } : {}),
    });
    teardown.add('RPC server', () => rpc.close());
    if (metrics) {
      const { startMetricsServer } = await import('./metrics/http.js');
      const served = await startMetricsServer(metrics, { host: cfg.metrics.host, port: cfg.metrics.port }, log);
      teardown.add('metrics listener', () => served.close());
      metricsServer = served;
    }
    let unix: UnixSocketTransport | null = null;
    if (opts.socket && cfg.socket.enabled) {
      const served = await serveUnixSocket(rpc, { path: cfg.socket.path, maxLine: cfg.maxPayloadBytes, flow, ...refusals() }, log);
      teardown.add('unix socket', () => served.close());
      unix = served;
      if (!cfg.listen.enabled) lock.update({ pid: process.pid, listen: null, socket: unix.path });
    }
    if (cfg.listen.enabled) {
      // The local stdio relay proves it runs as root by reading this from the state directory.
      const relayToken = randomBytes(32).toString('hex');
      auth = new Authenticator({
        tokens,
        readOnlyPrincipals: cfg.auth.readOnlyPrincipals ?? [],
        allowUnauthenticatedLoopback: !!cfg.auth.allowUnauthenticatedLoopback,
        relayToken,
      });
      const served = await startWebSocket(
        rpc,
        {
          host: cfg.listen.host,
          port: cfg.listen.port,
          maxPayload: cfg.maxPayloadBytes,
          heartbeatMs: cfg.heartbeatMs,
          maxConnections: cfg.limits.maxConnections,
          rate: { perSecond: cfg.limits.requestsPerSecond, burst: cfg.limits.burst },
          ...refusals(),
          flow,
          allowedOrigins: cfg.listen.allowedOrigins,
          requestTimeoutMs: cfg.limits.requestTimeoutMs,
          ...(tls ? { tls } : {}),
          authenticate: auth.authenticate,
        },
        log,
      );
      teardown.add('WebSocket listener', () => served.close());
      ws = served;
      lock.update({
        pid: process.pid,
        listen: ws.address,
        relayToken,
        tls: !!tls,
        limits: { maxPayloadBytes: cfg.maxPayloadBytes, maxBatch: cfg.limits.maxBatch },
        ...(unix ? { socket: unix.path } : {}),
      });
      // Said only once the lock names every way in: a client that reads it after this line finds them.
      log.info('listening', { ...ws.address, tls: !!tls, ...(unix ? { socket: unix.path } : {}) });
    }
  } catch (e) {
    await teardown.run();
    throw e;
  }
  const stdioEnded = opts.stdio
    ? serveStdio(rpc, { maxLine: cfg.maxPayloadBytes, flow, ...refusals() }, log)
    : new Promise<StdioEnd>(() => {});
  return {
    ws,
    metrics: metricsServer,
    stdioEnded,
    reload() {
      if (!ws || !auth) return { closed: 0 };
      // Both read first: a bad file leaves everything as it was.
      const next = readTokens();
      const nextTls = cfg.tls ? readTls(cfg.tls) : null;
      auth.setTokens(next);
      if (nextTls) ws.setTls(nextTls);
      const closed = ws.revalidate((p) => auth!.stillValid(p));
      log.info('credentials reloaded', { tokens: next.length, tls: !!nextTls, closedConnections: closed });
      return { closed };
    },
    // Never touches running copies: QEMU keeps them, the next start adopts them.
    close: () => teardown.run(),
  };
}
