// Composition root: libvirt connection → job manager → RPC server → transports.
import { randomBytes, type X509Certificate } from 'node:crypto';
import { dirname } from 'node:path';
import { openAudit } from './audit.js';
import type { ResolvedConfig } from './config.js';
import { loadDestinationPolicy, makeDestinationCheck } from './destination/policy.js';
import { GroupManager } from './jobs/groups/manager.js';
import { SnapshotService } from './jobs/kinds/snapshot/snapshot.js';
import { BackupService } from './jobs/kinds/backup/service.js';
import { AllJobs } from './jobs/all-jobs.js';
import { recoverSnapshots } from './jobs/kinds/snapshot/recover.js';
import { JobManager } from './jobs/manager.js';
import { openConnection } from './libvirt/index.js';
import type { Logger } from './log.js';
import type { AgentMetrics } from './metrics/metrics.js';
import type { MetricsServer } from './metrics/http.js';
import type { AuditEntry } from './generated/api.js';
import { RpcServer } from './rpc/server.js';
import { SchemaSet } from './schemas.js';
import { resolvesToLoopbackOnly } from './net/addresses.js';
import { Authenticator, loadTokens, type AuthPolicy, type TokenEntry } from './transport/auth.js';
import { readTls } from './transport/tls-material.js';
import type { FlowLimits } from './transport/flow.js';
import { checkOwnDirectory } from './own-files.js';
import { acquireStateLock, type LockInfo } from './state-lock.js';
import { ConnectionSupervisor } from './supervisor.js';
import { serveStdio, type StdioEnd } from './transport/stdio.js';
import { serveUnixSocket, SOCKET_DIR, type UnixSocketTransport } from './transport/unix-socket.js';
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
   * Applies the auth rules, Host/Origin rules, tokens file and TLS material of `next` (the config
   * read again on SIGHUP; default: the running one, files read again), and the metrics' own. Open sessions whose
   * credential no longer passes, or now makes another principal, are closed. On a bad file or
   * rule, the old credentials stay and the error is thrown. Other settings need a restart.
   */
  reload(next?: ResolvedConfig): { closed: number };
  close(): Promise<void>;
}

export class StateDirBusy extends Error {
  constructor(readonly holder: LockInfo | null) {
    super(
      holder
        ? `another agent (pid ${holder.pid}) owns this state directory`
        : 'another agent owns this state directory (it has not yet said who it is)',
    );
  }
}

/**
 * The one resolution of the listen host (the agent binds the address found here, so the name
 * cannot mean something else at bind time). Plaintext only if every address it stands for is
 * loopback ('localhost' could be 0.0.0.0 in /etc/hosts); the listener checks again on the
 * socket it actually bound.
 */
async function listenAddress(cfg: ResolvedConfig): Promise<string> {
  const { loopback, addresses } = await resolvesToLoopbackOnly(cfg.listen.host).catch((e: Error) => {
    throw new Error(`cannot resolve the listen host ${cfg.listen.host}: ${e.message}`);
  });
  if (!loopback && !cfg.tls) {
    throw new Error(
      `refusing to listen on ${cfg.listen.host} (${addresses.join(', ')}) without TLS: configure tls (cert, key) or bind to a loopback address`,
    );
  }
  return addresses[0]!;
}

/** The Host/Origin rules of the config (origin.ts). */
const originRules = (cfg: ResolvedConfig, serverCert: X509Certificate | null) => ({
  hostNames: cfg.listen.allowedHostNames,
  allowedOrigins: cfg.listen.allowedOrigins,
  serverCert,
});

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
  const bindTo = cfg.listen.enabled ? await listenAddress(cfg) : null;
  const schemas = new SchemaSet();
  // Read credentials before anything else, so a bad tokens file stops the start cleanly.
  const readTokens = (c: ResolvedConfig) => (c.listen.enabled && c.auth.tokensFile ? loadTokens(c.auth.tokensFile, schemas) : []);
  const tokens = readTokens(cfg);
  const tls = cfg.listen.enabled && cfg.tls ? readTls(cfg.tls) : null;
  const policy = (c: ResolvedConfig, t: typeof tls, tok: TokenEntry[]): AuthPolicy => ({
    tokens: tok,
    readOnlyPrincipals: c.auth.readOnlyPrincipals ?? [],
    allowUnauthenticatedLoopback: !!c.auth.allowUnauthenticatedLoopback,
    clientCas: t?.clientCas ?? [],
  });
  const flow: FlowLimits = {
    maxBufferedBytes: cfg.limits.maxBufferedBytes,
    slowReaderMs: cfg.limits.slowReaderMs,
    maxPendingCalls: cfg.limits.maxPendingCalls,
    maxPendingBytes: cfg.limits.maxPendingBytes,
  };
  // Refuse to start on an untrustworthy allowed root, before anything is opened.
  const destinationPolicy = await loadDestinationPolicy(cfg, (msg, data) => log.warn(msg, data as Record<string, unknown>));

  // The agent's own directories, before anything is written there (the state directory's
  // own check comes with its lock).
  if (cfg.audit.file) await checkOwnDirectory(dirname(cfg.audit.file), 'audit directory');
  const socketDir = opts.socket && cfg.socket.enabled ? dirname(cfg.socket.path) : null;
  if (socketDir) await checkOwnDirectory(socketDir, 'socket directory', SOCKET_DIR);

  // From here on, everything opened is added to the teardown as it is opened.
  const teardown = new Teardown(log);
  const lock = await acquireStateLock(cfg.stateDir);
  if (!lock.acquired) throw new StateDirBusy(lock.holder);
  teardown.add('state directory lock', () => lock.release());
  log.info('state directory owned', { stateDir: cfg.stateDir });
  let ws: WebSocketTransport | null = null;
  let auth: Authenticator | null = null;
  let metricsServer: MetricsServer | null = null;
  let metrics: AgentMetrics | null = null;
  let rpc: RpcServer;
  // Every transport tells the metrics of the clients it refused.
  const refusals = () => (metrics ? { onRefusal: metrics.refused.bind(metrics) } : {});
  try {
    const audit = openAudit(cfg.audit.file, log);
    teardown.add('audit trail', () => audit.close());
    if (cfg.metrics.enabled) {
      // Loaded only when enabled: prom-client stays out of agents that do not serve metrics.
      const m = new (await import('./metrics/metrics.js')).AgentMetrics({
        endedJobSeconds: cfg.metrics.endedJobSeconds,
        version: VERSION,
      });
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
      domains: cfg.domains,
      agentVersion: VERSION,
      agentMode: opts.mode ?? 'daemon',
      checkDestination: makeDestinationCheck(destinationPolicy),
      cleanupPolicy: { roots: destinationPolicy.roots, trustedOwners: destinationPolicy.trustedOwners },
      otherJob: (jobId) => backups.get(jobId),
    });
    // The domain-job kinds (backups) beside the block jobs: one surface, one id space (all-jobs.ts).
    const backups: BackupService = new BackupService({
      jobs,
      checkDestination: makeDestinationCheck(destinationPolicy),
      allowedPools: cfg.allowedPools ?? [],
      log,
      pollIntervalMs: cfg.pollIntervalMs,
    });
    const allJobs = new AllJobs(jobs, backups);
    // The connection in use at the end (the supervisor may have replaced the first one).
    teardown.add('libvirt connection', () => jobs.connection.close());
    teardown.add('job manager', () => jobs.stop());
    // Runs first of the three: no reconnect while the job manager stops and the connection closes.
    teardown.add('connection supervisor', () => supervisor.stop());
    metrics?.observeJobs(allJobs);
    await jobs.start();
    supervisor.watch(conn, jobs);
    // Snapshots a crash interrupted: settled from the live XML before any new call is served.
    await recoverSnapshots({ conn: jobs.connection, journal: jobs.store, log, audit: opts.audit ?? audit.write });
    const snapshots = new SnapshotService({ jobs, checkDestination: makeDestinationCheck(destinationPolicy), log });
    // A snapshot whose answer was lost with the old connection is settled once it is back.
    jobs.on('agent.connection', (p: { state: string }) => {
      if (p.state === 'restored')
        void snapshots
          .settleLeftovers(opts.audit ?? audit.write)
          .catch((e: unknown) => log.error('cannot settle snapshot records after a reconnect', { error: e }));
    });
    teardown.add('backups', () => backups.stop());
    await backups.start();
    const groups = new GroupManager({
      jobs,
      log,
      allowedPools: cfg.allowedPools ?? [],
      ...(metrics ? { onSwitch: metrics.groupSwitched.bind(metrics) } : {}),
    });
    teardown.add('group manager', () => groups.stop());
    await groups.start();
    rpc = new RpcServer({
      service: allJobs,
      groups,
      snapshots,
      backups,
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
      const served = await startMetricsServer(metrics, cfg.metrics, schemas, log);
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
      auth = new Authenticator({ ...policy(cfg, tls, tokens), relayToken });
      const served = await startWebSocket(
        rpc,
        {
          host: bindTo!,
          port: cfg.listen.port,
          maxPayload: cfg.maxPayloadBytes,
          heartbeatMs: cfg.heartbeatMs,
          maxConnections: cfg.limits.maxConnections,
          rate: { perSecond: cfg.limits.requestsPerSecond, burst: cfg.limits.burst },
          ...refusals(),
          flow,
          origins: originRules(cfg, tls?.serverCert ?? null),
          loopbackOnly: !tls,
          requestTimeoutMs: cfg.limits.requestTimeoutMs,
          ...(tls ? { tls: tls.material } : {}),
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
    reload(next = cfg) {
      // The metrics' certificates and tokens are read first too, put in force with the rest.
      const metricsReloaded = cfg.metrics.enabled && metricsServer ? metricsServer.prepareReload(next.metrics) : () => {};
      if (!ws || !auth) {
        metricsReloaded();
        return { closed: 0 };
      }
      if (!!next.tls !== !!tls || !next.listen.enabled) {
        throw new Error('a reload cannot turn TLS or the listener on or off: restart the agent');
      }
      if (next.listen.host !== cfg.listen.host || next.listen.port !== cfg.listen.port) {
        log.warn('the listen address changes only at the next start', { host: next.listen.host, port: next.listen.port });
      }
      // Everything read and checked first: a bad file or rule leaves everything as it was.
      const nextTokens = readTokens(next);
      const nextTls = next.tls ? readTls(next.tls) : null;
      auth.setPolicy(policy(next, nextTls, nextTokens));
      metricsReloaded();
      if (nextTls) ws.setTls(nextTls.material);
      ws.setOrigins(originRules(next, nextTls?.serverCert ?? null));
      // Every open session judged again: token, certificate chain and subject, read-only rules.
      const closed = ws.revalidate((p) => auth!.stillValid(p));
      log.info('credentials reloaded', { tokens: nextTokens.length, tls: !!nextTls, closedConnections: closed });
      return { closed };
    },
    // Never touches running copies: QEMU keeps them, the next start adopts them.
    close: () => teardown.run(),
  };
}
