// Per-connection flow control, the same for WebSocket and stdio. A frame is started only while
// the connection's unsent output is under `maxBufferedBytes` and its pending-call budget
// (`maxPendingCalls`, `maxPendingBytes`: src/rpc/session.ts) is not full; frames read meanwhile
// wait in a short queue (QUEUE_BYTES, plus one socket read). While output is unread, or the
// queue is full, reading stops (the socket is paused, so TCP pushes back on the peer). While the
// budget is full, reading goes on and frames past QUEUE_BYTES are not held (long waits could pin
// them for hours): they are started at once, and their calls are refused with tooManyPending. Frames start one per event-loop turn,
// so that the answers of quick calls are counted before the next starts (a long call such as
// wait does not hold the others up). A peer whose unsent output stays above the bound for
// `slowReaderMs`, or exceeds HARD times it, is closed: one client holds at most about
// `maxBufferedBytes` plus one answer of the agent's memory.

import type { Frame } from '../protocol/index.js';
import type { PendingLimits } from '../rpc/session.js';

const HARD = 16;
/**
 * Frames started per event-loop turn at most (their answers are counted before the next turn).
 * 1 keeps a flood's overshoot to one answer; it costs no CPU per frame (measured the same with
 * and without flow control: ~0.4 ms a fuzz frame, ~0.12 ms a jobInfo, either way).
 */
const PER_TURN = 1;
/** Frames read but not started, in bytes, before reading pauses (plus at most one socket read). */
const QUEUE_BYTES = 64 * 1024;

export interface FlowLimits extends PendingLimits {
  maxBufferedBytes: number;
  slowReaderMs: number;
}

export interface FlowIo {
  /** Writes a frame; `done` runs once it has left the process's buffers. */
  write(frame: Frame, done: () => void): void;
  /** Bytes written but not yet handed to the kernel. */
  buffered(): number;
  pause(): void;
  resume(): void;
  /** Ends the connection because the peer does not read (the transport picks the close code). */
  close(reason: string): void;
}

export class Flow {
  private readonly queue: string[] = [];
  private queuedBytes = 0;
  private paused = false;
  private slowTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private running = 0;
  private idle: Array<() => void> = [];
  private scheduled: NodeJS.Immediate | null = null;

  constructor(
    private readonly io: FlowIo,
    private readonly limits: FlowLimits,
    /** Handles one frame; resolves with the answer frame or null. */
    private readonly handle: (frame: string) => Promise<Frame | null>,
    /** Whether this connection's pending-call budget is full (the RPC session keeps it). */
    private readonly pendingFull: () => boolean,
  ) {}

  /** A frame read from the peer. */
  receive(frame: string): void {
    if (this.closed) return;
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    this.pump();
  }

  /** A frame for the peer: an answer or a notification. */
  send(frame: Frame): void {
    if (this.closed) return;
    this.io.write(frame, () => this.pump());
    this.pump();
  }

  /** Resolves once no frame is queued or being handled (stdio's end of input). */
  drained(): Promise<void> {
    if (this.queue.length === 0 && this.running === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  dispose(): void {
    this.closed = true;
    this.queue.length = 0;
    this.queuedBytes = 0;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = null;
    if (this.slowTimer) clearTimeout(this.slowTimer);
    this.slowTimer = null;
    this.wakeIdle();
  }

  private outputFull(): boolean {
    return this.io.buffered() >= this.limits.maxBufferedBytes;
  }

  private blocked(): boolean {
    return this.outputFull() || this.pendingFull();
  }

  private pump(): void {
    if (this.closed) return;
    const buffered = this.io.buffered();
    if (buffered > HARD * this.limits.maxBufferedBytes)
      return this.kill(`more than ${HARD * this.limits.maxBufferedBytes} bytes of output unread`);
    this.watchSlowReader(buffered);
    // Not held while long calls (waits) run and the budget is full: started now, refused.
    while (this.queuedBytes > QUEUE_BYTES && this.pendingFull() && !this.outputFull() && !this.closed) {
      const frame = this.queue.shift()!;
      this.queuedBytes -= frame.length;
      this.run(frame);
    }
    if (this.queue.length > 0 && !this.blocked() && !this.scheduled) {
      this.scheduled = setImmediate(() => {
        this.scheduled = null;
        this.start();
      });
    }
    // Reading pauses while output is unread (bounded in time: slowReaderMs), or while frames wait
    // to start; never only because the budget is full, which long waits can keep for hours: a
    // frame paused half-received would stay pinned that long. Frames past the queue are refused.
    const stop = this.outputFull() || (this.queuedBytes >= QUEUE_BYTES && !this.pendingFull());
    if (stop !== this.paused) {
      this.paused = stop;
      if (stop) this.io.pause();
      else this.io.resume();
    }
  }

  private start(): void {
    for (let n = 0; n < PER_TURN && !this.closed && this.queue.length > 0 && !this.blocked(); n++) {
      const frame = this.queue.shift()!;
      this.queuedBytes -= frame.length;
      this.run(frame);
    }
    this.pump();
  }

  private run(frame: string): void {
    this.running++;
    void this.handle(frame)
      .then(
        (reply) => {
          if (reply !== null) this.send(reply);
        },
        () => {},
      )
      .finally(() => {
        this.running--;
        this.pump();
        if (this.queue.length === 0 && this.running === 0) this.wakeIdle();
      });
  }

  private watchSlowReader(buffered: number): void {
    if (buffered < this.limits.maxBufferedBytes) {
      if (this.slowTimer) clearTimeout(this.slowTimer);
      this.slowTimer = null;
    } else {
      this.slowTimer ??= setTimeout(() => {
        this.slowTimer = null;
        if (this.io.buffered() >= this.limits.maxBufferedBytes)
          this.kill(`output above ${this.limits.maxBufferedBytes} bytes unread for ${this.limits.slowReaderMs} ms`);
      }, this.limits.slowReaderMs);
      this.slowTimer.unref?.();
    }
  }

  private kill(reason: string): void {
    this.dispose();
    this.io.close(reason);
  }

  private wakeIdle(): void {
    const w = this.idle;
    this.idle = [];
    for (const r of w) r();
  }
}
