// The service manager's side of the agent (sd_notify(3), systemd's notify protocol): READY=1 once
// it serves, RELOADING=1 … READY=1 around a SIGHUP reload, STOPPING=1 when it starts to shut
// down, WATCHDOG=1 while it can prove it is alive. Without NOTIFY_SOCKET every call is a no-op.
// The datagram goes out through the native addon (Node has no unix datagram sockets); a failed
// send is logged once and never reaches the agent.
import { native } from './libvirt/binding.js';
import type { Logger } from './log.js';

export type NotifyFields = Record<string, string | number | bigint>;

/**
 * One notification: a `KEY=value` line per field, in order. The protocol reads one assignment a
 * line, so a value's line breaks (a STATUS= carrying an error message) become spaces.
 */
export function notifyMessage(fields: NotifyFields): string {
  return Object.entries(fields)
    .map(([k, v]) => {
      if (!/^[A-Z_][A-Z0-9_]*$/.test(k)) throw new TypeError(`not a notification field name: ${k}`);
      return `${k}=${String(v).replace(/[\r\n]+/g, ' ')}\n`;
    })
    .join('');
}

/** CLOCK_MONOTONIC in µs, the clock systemd reads MONOTONIC_USEC on (libuv's hrtime is that clock). */
export const monotonicUsec = (): bigint => process.hrtime.bigint() / 1000n;

export interface NotifyEnvironment {
  /** NOTIFY_SOCKET: a path or an abstract name ('@…'); null when unset or unusable. */
  socket: string | null;
  /** WATCHDOG_USEC, when it is meant for this process (WATCHDOG_PID unset or this pid). */
  watchdogUsec: number | null;
}

/** What the service manager asked of this process, read from its environment (sd_watchdog_enabled(3)'s rules). */
export function notifyEnvironment(env: NodeJS.ProcessEnv, pid: number): NotifyEnvironment {
  const s = env.NOTIFY_SOCKET;
  const socket = s && (s.startsWith('/') || (s.startsWith('@') && s.length > 1)) ? s : null;
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === pid;
  const watchdogUsec = env.WATCHDOG_USEC && Number.isSafeInteger(usec) && usec > 0 && forUs ? usec : null;
  return { socket, watchdogUsec };
}

export type Send = (path: string, message: string) => number;

export class ServiceNotifier {
  private failed = false;

  constructor(
    readonly socket: string | null,
    private readonly log: Logger,
    private readonly send: Send = native.notifySocket,
  ) {}

  get enabled(): boolean {
    return this.socket !== null;
  }

  /** Sends one notification; false if none was sent. Never throws. */
  notify(fields: NotifyFields): boolean {
    if (!this.socket) return false;
    let err: number;
    try {
      err = this.send(this.socket, notifyMessage(fields));
    } catch (e) {
      err = -1;
      this.log.debug('notification not built', { error: (e as Error).message });
    }
    if (err !== 0 && !this.failed) {
      // Once: a manager that went away would otherwise fill the log at every watchdog ping.
      this.failed = true;
      this.log.warn('cannot notify the service manager', { socket: this.socket, errno: err });
    }
    return err === 0;
  }

  ready(status: string): boolean {
    return this.notify({ READY: 1, MAINPID: process.pid, STATUS: status });
  }

  reloading(status = 'Reloading credentials'): boolean {
    return this.notify({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec(), STATUS: status });
  }

  stopping(status = 'Stopping; running copies are left to QEMU'): boolean {
    return this.notify({ STOPPING: 1, STATUS: status });
  }

  status(status: string): boolean {
    return this.notify({ STATUS: status });
  }

  watchdog(): boolean {
    return this.notify({ WATCHDOG: 1 });
  }
}

export interface WatchdogOptions {
  /** WATCHDOG_USEC. */
  usec: number;
  /** A counter libvirt's event loop thread advances each second (-1: none). */
  ticks: () => number;
  log: Logger;
}

/**
 * Pings the watchdog four times per period, each time only if both loops turned since the last
 * ping: the JavaScript event loop (this timer fired at all) and libvirt's event loop thread (its
 * counter moved), which carries keepalive, events and the close of a dead connection. A libvirtd
 * that hangs or is gone is not a reason: the agent survives it (bounded calls, keepalive close,
 * reconnect) and a restart would not cure it. Returns the stop function.
 */
export function startWatchdog(notifier: ServiceNotifier, opts: WatchdogOptions): () => void {
  let last = opts.ticks();
  if (last < 0) {
    opts.log.warn("libvirt's event loop cannot be watched: the watchdog proves only the agent's own loop");
  }
  let missed = 0;
  const timer = setInterval(
    () => {
      const now = opts.ticks();
      if (last >= 0 && now <= last) {
        if (missed++ === 0) opts.log.warn("libvirt's event loop thread has not turned: the watchdog is not pinged", { ticks: now });
        return;
      }
      if (missed) opts.log.info("libvirt's event loop thread turns again", { missedPings: missed });
      missed = 0;
      last = now;
      notifier.watchdog();
    },
    Math.max(1, Math.floor(opts.usec / 4000)),
  );
  timer.unref();
  notifier.watchdog();
  return () => clearInterval(timer);
}

/**
 * The notifier for this process, and its watchdog if one is asked for. The variables are taken
 * out of the environment, so that no process started later reads them as its own.
 */
export function fromEnvironment(
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
): { notifier: ServiceNotifier; watchdogUsec: number | null } {
  const e = notifyEnvironment(env, process.pid);
  for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) delete env[k];
  return { notifier: new ServiceNotifier(e.socket, log), watchdogUsec: e.socket ? e.watchdogUsec : null };
}

/** READY=1, after the watchdog (if asked for) has started. */
export function serviceReady(service: ReturnType<typeof fromEnvironment>, status: string, log: Logger): void {
  if (service.watchdogUsec) startWatchdog(service.notifier, { usec: service.watchdogUsec, ticks: safeTicks, log });
  service.notifier.ready(status);
}

function safeTicks(): number {
  try {
    return native.eventLoopTicks();
  } catch {
    return -1;
  }
}
