// The guest side of a group switch: its run state, the filesystem freeze (QEMU guest agent,
// optional), the pause and the resume. The agent owns only what it changed: it resumes only a
// guest it paused that is still paused by a suspend, and thaws only what it froze (the group
// switch journals each intent before calling these, group-switch.ts).
import { AgentError } from '../../errors.js';
import type { Job } from '../../generated/api.js';
import type { Connection, DomainState } from '../../libvirt/index.js';
import { LibvirtError, PAUSED_USER, VirErrorCode } from '../../libvirt/index.js';
import { parseDomainXml } from '../../libvirt/disk-xml.js';
import type { Logger } from '../../log.js';
import { errorOf, type SwitchDisk } from './params.js';
import { isUnanswered, toAgentError } from '../libvirt-errors.js';

/** What a resume found: resumed by the agent, not paused any more, or paused for another reason. */
export type ResumeOutcome = 'resumed' | 'running' | 'notOurs' | 'gone' | 'failed';

export class GuestControl {
  /** `conn`: the current libvirt connection (it is replaced on reconnect). */
  constructor(
    private readonly conn: () => Connection,
    private readonly log: Logger,
  ) {}

  /** The run state; a libvirtd that cannot answer is a named (retryable) error, never a guess. */
  async runState(uuid: string, what: string): Promise<DomainState> {
    try {
      return await this.conn().getState(uuid);
    } catch (e) {
      throw toAgentError(e, what);
    }
  }

  /** Whether the domain has a QEMU guest agent channel (needed to freeze); fails closed. */
  async hasGuestAgent(uuid: string): Promise<boolean> {
    const xml = await this.conn()
      .getXml(uuid)
      .catch((e: unknown) => {
        throw toAgentError(e, 'cannot read the domain before freezing its filesystems');
      });
    return !!parseDomainXml(xml).guestAgentChannel;
  }

  /** fsFreeze; its failure as the agent error a `freeze: always` switch answers. */
  async freeze(uuid: string): Promise<number> {
    try {
      return await this.conn().fsFreeze(uuid);
    } catch (e) {
      throw toAgentError(e, "cannot freeze the guest's filesystems", { other: 'libvirtError' });
    }
  }

  /** Thaws what the agent froze, retried; ok when libvirt confirmed it (a domain gone has nothing frozen). */
  async thaw(uuid: string): Promise<{ ok: true } | { ok: false; error: unknown }> {
    let error: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await this.conn().fsThaw(uuid);
        return { ok: true };
      } catch (e) {
        if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN) return { ok: true };
        error = e;
        this.log.error("cannot thaw the guest's filesystems; retrying", { domain: uuid, attempt, error: e });
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
    return { ok: false, error };
  }

  suspend(uuid: string): Promise<number> {
    return this.conn().suspend(uuid);
  }

  /**
   * Resumes a guest the agent paused, retried: only if it is still paused by a suspend
   * (reason user). One resumed meanwhile is left running; one paused for another reason (an
   * I/O error, a migration, a save) is not the agent's pause and is left as it is. A resume and
   * a new `virsh suspend` by someone else between the agent's pause and this check cannot be
   * told from the agent's own pause (libvirt keeps no owner): that guest is resumed.
   */
  async resumeOwn(uuid: string): Promise<ResumeOutcome> {
    for (let attempt = 1; attempt <= 5; attempt++) {
      try {
        const s = await this.conn().getState(uuid);
        if (s.state !== 'paused') return s.state === 'running' || s.state === 'blocked' ? 'running' : 'gone';
        if (s.reason !== PAUSED_USER) return 'notOurs';
        await this.conn().resume(uuid);
        return 'resumed';
      } catch (e) {
        if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN) return 'gone';
        // Not paused (any more): nothing to do.
        if (e instanceof LibvirtError && e.code === VirErrorCode.OPERATION_INVALID) return 'running';
        this.log.error('cannot resume the guest after a group switch; retrying', { domain: uuid, attempt, error: e });
        if (isUnanswered(e) && attempt >= 3) break;
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
    return 'failed';
  }

  /**
   * Runs `each` on every target in parallel (libvirt serializes what it must; the pause lasts
   * as long as the slowest disk) within `maxPauseMs`; never rejects: a failure is the disk's outcome.
   */
  async switchEach(
    targets: Job[],
    maxPauseMs: number,
    goal: 'pivoted' | 'finished',
    each: (j: Job, budgetSeconds: number) => Promise<unknown>,
  ): Promise<Map<string, SwitchDisk>> {
    const outcomes = new Map<string, SwitchDisk>();
    const budget = maxPauseMs / 1000;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((r) => {
      timer = setTimeout(() => r('late'), maxPauseMs);
    });
    await Promise.all(
      targets.map(async (j) => {
        const r = await Promise.race([each(j, budget).then(() => 'done' as const), deadline]).catch((e: unknown) => e);
        if (r === 'done') outcomes.set(j.jobId, { disk: j.disk, jobId: j.jobId, outcome: goal });
        else
          outcomes.set(j.jobId, {
            disk: j.disk,
            jobId: j.jobId,
            outcome: 'failed',
            error: errorOf(r === 'late' ? new AgentError('timeout', `not confirmed within maxPause (${budget} s)`) : r),
          });
      }),
    );
    clearTimeout(timer);
    return outcomes;
  }
}
