// The guest side of a group switch: freeze its filesystems (QEMU guest agent, optional), and
// resume it, retried, since a guest must never stay paused by this agent.
import { AgentError } from '../errors.js';
import type { FreezeMode, Group, Job } from '../generated/api.js';
import type { Connection } from '../libvirt/index.js';
import { LibvirtError, VirErrorCode } from '../libvirt/index.js';
import { parseDomainXml } from '../libvirt/disk-xml.js';
import type { Logger } from '../log.js';
import { errorOf, type SwitchDisk } from './group-params.js';
import { errorNameOf, isUnanswered, libvirtData, toAgentError } from './libvirt-errors.js';

export class GuestControl {
  /** `conn`: the current libvirt connection (it is replaced on reconnect). */
  constructor(
    private readonly conn: () => Connection,
    private readonly log: Logger,
  ) {}

  async freeze(uuid: string, mode: FreezeMode): Promise<NonNullable<Group['lastSwitch']>['freeze']> {
    if (mode === 'never') return { mode, frozen: null };
    const conn = this.conn();
    // A libvirtd that does not answer is named as such, not taken for a guest without an agent.
    const xml = await conn.getXml(uuid).catch((e: unknown) => {
      if (isUnanswered(e)) throw toAgentError(e, 'cannot read the domain before freezing its filesystems');
      return '';
    });
    if (!parseDomainXml(xml).guestAgentChannel) {
      const why = 'the domain has no QEMU guest agent channel';
      if (mode === 'always') throw new AgentError('unsupported', `cannot freeze the guest's filesystems: ${why}`);
      return { mode, frozen: null, error: why };
    }
    try {
      return { mode, frozen: await conn.fsFreeze(uuid) };
    } catch (e) {
      if (mode === 'always')
        throw new AgentError(
          e instanceof LibvirtError ? errorNameOf(e) : 'libvirtError',
          `cannot freeze the guest's filesystems: ${(e as Error).message}`,
          e instanceof LibvirtError ? { libvirt: libvirtData(e) } : {},
        );
      return { mode, frozen: null, error: (e as Error).message };
    }
  }

  async thaw(uuid: string, frozen: number | null): Promise<void> {
    if (frozen === null) return;
    await this.conn()
      .fsThaw(uuid)
      .catch((e) => this.log.error('cannot thaw the guest filesystems', { domain: uuid, error: e }));
  }

  /** A guest must never stay paused by this agent: retried, and logged loudly if it still fails. */
  async resume(uuid: string): Promise<boolean> {
    for (let attempt = 1; attempt <= 5; attempt++) {
      try {
        await this.conn().resume(uuid);
        return true;
      } catch (e) {
        // Not paused (any more): nothing to do.
        if (e instanceof LibvirtError && e.code === VirErrorCode.OPERATION_INVALID) return true;
        this.log.error('cannot resume the guest after a group switch; retrying', { domain: uuid, attempt, error: e });
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
    return false;
  }

  /**
   * Pauses the guest, runs `each` on every target in parallel (libvirt serializes what it must;
   * the pause lasts as long as the slowest disk) within `maxPauseMs`, and always resumes.
   */
  async whilePaused(
    uuid: string,
    targets: Job[],
    maxPauseMs: number,
    goal: 'pivoted' | 'finished',
    each: (j: Job, budgetSeconds: number) => Promise<unknown>,
  ): Promise<{ outcomes: Map<string, SwitchDisk>; pausedMs: number; resumed: boolean }> {
    const outcomes = new Map<string, SwitchDisk>();
    const t0 = performance.now();
    let t1 = t0;
    let resumed = false;
    try {
      await this.conn().suspend(uuid);
      const budget = maxPauseMs / 1000;
      const deadline = new Promise<'late'>((r) => setTimeout(() => r('late'), maxPauseMs).unref());
      await Promise.all(
        targets.map(async (j) => {
          const r = await Promise.race([each(j, budget).then(() => 'done' as const), deadline]).catch((e: unknown) => e);
          if (r === 'done') outcomes.set(j.jobId, { disk: j.disk, jobId: j.jobId, outcome: goal });
          else
            outcomes.set(j.jobId, {
              disk: j.disk,
              jobId: j.jobId,
              outcome: 'failed',
              error: errorOf(
                r === 'late' ? new AgentError('timeout', `not confirmed within maxPause (${budget} s); the guest was resumed`) : r,
              ),
            });
        }),
      );
    } catch (e) {
      for (const j of targets)
        if (!outcomes.has(j.jobId)) outcomes.set(j.jobId, { disk: j.disk, jobId: j.jobId, outcome: 'failed', error: errorOf(e) });
    } finally {
      resumed = await this.resume(uuid);
      t1 = performance.now();
    }
    return { outcomes, pausedMs: Math.round((t1 - t0) * 10) / 10, resumed };
  }
}
