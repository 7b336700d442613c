// Composition root: libvirt connection → job manager → RPC server → transports.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createRequire } from 'node:module';
import { openAudit } from './audit.js';
import type { ResolvedConfig } from './config.js';
import { loadDestinationPolicy, makeDestinationCheck } from './destination/policy.js';
import { GroupManager } from './jobs/groups.js';
import { JobManager } from './jobs/manager.js';
import { openConnection, type Connection } from './libvirt/index.js';
import type { Logger } from './log.js';
import { RpcServer, type AuditEntry } from './rpc/server.js';
import { SchemaSet } from './schemas.js';
import { loadTokens, makeAuthenticator } from './transport/auth.js';
import { acquireStateLock, type LockInfo } from './state-lock.js';
import { ConnectionSupervisor } from './supervisor.js';
import { serveStdio } from './transport/stdio.js';
import { startWebSocket, type WebSocketTransport } from './transport/websocket.js';

export const VERSION: string = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

export interface AgentOptions {
  stdio: boolean;
  log: Logger;
  /** Validate every result against its schema (tests). */
  validateResults?: boolean;
  audit?: (entry: AuditEntry) => void;
}

export interface Agent {
  readonly ws: WebSocketTransport | null;
  /** Resolves when the stdio transport's input ended (never, without stdio). */
  readonly stdioEnded: Promise<void>;
  close(): Promise<void>;
}

export class StateDirBusy extends Error {
  constructor(readonly holder: LockInfo) {
    super(`another agent (pid ${holder.pid}) owns this state directory`);
  }
}

const isLoopback = (host: string) => /^127\./.test(host) || host === '::1' || host === 'localhost';

export async function startAgent(cfg: ResolvedConfig, opts: AgentOptions): Promise<Agent> {
  const log = opts.log;
  if (cfg.listen.enabled && !isLoopback(cfg.listen.host) && !cfg.tls) {
    throw new Error(`refusing to listen on ${cfg.listen.host} without TLS: configure tls (cert, key) or bind to a loopback address`);
  }
  const schemas = new SchemaSet();
  // Read credentials before anything else, so a bad tokens file stops the start cleanly.
  const tokens = cfg.listen.enabled && cfg.auth.tokensFile ? loadTokens(cfg.auth.tokensFile, schemas) : [];
  const tls = cfg.listen.enabled && cfg.tls ? {
    cert: readFileSync(cfg.tls.cert), key: readFileSync(cfg.tls.key), ...(cfg.tls.ca ? { ca: readFileSync(cfg.tls.ca) } : {}),
    requestCert: !!cfg.tls.ca, rejectUnauthorized: !!cfg.tls.ca && !!cfg.tls.requireClientCert,
  } : null;
  // Refuse to start on an untrustworthy allowed root, before anything is opened.
  const destinationPolicy = await loadDestinationPolicy(cfg, (msg, data) => log.warn(msg, data as Record<string, unknown>));
  const audit = openAudit(cfg.audit.file, log);
  const lock = acquireStateLock(cfg.stateDir);
  if (!lock.acquired) throw new StateDirBusy(lock.holder);

  const supervisor = new ConnectionSupervisor({ open: () => openConnection(cfg.uri), log });
  supervisor.on('state', (e) => log.info('libvirt connection', e));
  let conn: Connection | null = null;
  let jobs: JobManager | null = null;
  let groups: GroupManager | null = null;
  let rpc: RpcServer | null = null;
  let ws: WebSocketTransport | null = null;
  try {
    conn = await supervisor.connect();
    jobs = new JobManager({
      connection: conn, stateDir: cfg.stateDir, log, pollIntervalMs: cfg.pollIntervalMs,
      maxConcurrentCopies: cfg.maxConcurrentCopies, agentVersion: VERSION,
      checkDestination: makeDestinationCheck(destinationPolicy),
    });
    await jobs.start();
    supervisor.watch(conn, jobs);
    groups = new GroupManager({ jobs, log });
    await groups.start();
    rpc = new RpcServer({ service: jobs, groups, log, version: VERSION, schemas, validateResults: opts.validateResults, audit: opts.audit ?? audit.write });
    if (cfg.listen.enabled) {
      // The local stdio relay proves it runs as root by reading this from the state directory.
      const relayToken = randomBytes(32).toString('hex');
      ws = await startWebSocket(rpc, {
        host: cfg.listen.host, port: cfg.listen.port, maxPayload: cfg.maxPayloadBytes, heartbeatMs: cfg.heartbeatMs,
        maxConnections: cfg.limits.maxConnections, rate: { perSecond: cfg.limits.requestsPerSecond, burst: cfg.limits.burst },
        ...(tls ? { server: createHttpsServer(tls) } : {}),
        authenticate: makeAuthenticator({ tokens, readOnlyPrincipals: cfg.auth.readOnlyPrincipals ?? [], allowUnauthenticatedLoopback: !!cfg.auth.allowUnauthenticatedLoopback, relayToken }),
      }, log);
      lock.update({ pid: process.pid, listen: ws.address, relayToken, tls: !!tls });
    }
  } catch (e) {
    supervisor.stop();
    await ws?.close();
    rpc?.close();
    groups?.stop();
    await jobs?.stop();
    await conn?.close();
    lock.release();
    audit.close();
    throw e;
  }
  const stdioEnded = opts.stdio ? serveStdio(rpc, { maxLine: cfg.maxPayloadBytes }, log) : new Promise<void>(() => {});
  let closing: Promise<void> | null = null;
  return {
    ws,
    stdioEnded,
    close() {
      // Never touches running copies: QEMU keeps them, the next start adopts them.
      closing ??= (async () => {
        await ws?.close();
        rpc!.close();
        groups!.stop();
        supervisor.stop();
        await jobs!.stop();
        await jobs!.connection.close();
        lock.release();
        audit.close();
      })();
      return closing;
    },
  };
}

