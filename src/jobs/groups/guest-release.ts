// The journaled steps of a group switch on the guest, and their undoing after a crash. The
// agent owns only what it changed: each intent (freeze, pause) is written to the group's record
// before it is sent and cleared once undone, so a restart (or a reconnect) thaws and resumes
// exactly what the record says, once; a guest paused or frozen by someone else is never touched.
import { AgentError } from '../../errors.js';
import type { FreezeMode, Group } from '../../generated/api.js';
import { faultPoint } from '../fault-points.js';
import type { GroupContext, GroupEntry } from './context.js';
import { isOutcomeUnknown, isUnanswered, toAgentError } from '../libvirt-errors.js';

export type Freeze = NonNullable<Group['lastSwitch']>['freeze'];

/** Fault points fire for the agent's own switches only. */
const OWN = { owner: 'agent' } as const;

const RESUMED = {
  resumed: 'the guest was resumed',
  running: 'the guest was already running (someone resumed it)',
  notOurs: 'the guest is paused for another reason than a suspend and was left paused',
  gone: 'the domain is no longer running',
} as const;

export class GuestRelease {
  constructor(private readonly ctx: GroupContext) {}

  /** Freezes through the guest agent (mode auto/always), the intent journaled first. */
  async freeze(entry: GroupEntry, mode: FreezeMode): Promise<Freeze> {
    if (mode === 'never') return { mode, frozen: null };
    const { guest } = this.ctx;
    const uuid = entry.rec.domain.uuid;
    if (!(await guest.hasGuestAgent(uuid))) {
      const why = 'the domain has no QEMU guest agent channel';
      if (mode === 'always') throw new AgentError('unsupported', `cannot freeze the guest's filesystems: ${why}`);
      return { mode, frozen: null, error: why };
    }
    this.ctx.assertNotStopping();
    entry.rec.frozenAt = this.ctx.jobs.now();
    try {
      await this.ctx.save(entry);
    } catch (e) {
      delete entry.rec.frozenAt;
      throw e;
    }
    faultPoint('group:freeze:journaled', OWN);
    try {
      const frozen = await guest.freeze(uuid);
      faultPoint('group:freeze:sent', OWN);
      return { mode, frozen };
    } catch (e) {
      // An unanswered freeze may have frozen the guest: thaw it. A refused one froze nothing
      // of the agent's (the guest agent refuses a second freeze; that one is not the agent's).
      if (isUnanswered(e)) await this.thaw(entry);
      else {
        delete entry.rec.frozenAt;
        await this.ctx.saveOrLog(entry);
      }
      if (mode === 'always') throw e;
      return { mode, frozen: null, error: (e as Error).message };
    }
  }

  /** Pauses the vCPUs, the intent journaled first; a pause of unknown outcome is undone. */
  async pause(entry: GroupEntry): Promise<void> {
    entry.rec.pausedAt = this.ctx.jobs.now();
    try {
      await this.ctx.save(entry); // durable before the pause: a restart resumes the guest
    } catch (e) {
      delete entry.rec.pausedAt;
      throw e;
    }
    faultPoint('group:pause:journaled', OWN);
    try {
      await this.ctx.guest.suspend(entry.rec.domain.uuid);
    } catch (e) {
      if (isOutcomeUnknown(e)) await this.resume(entry);
      else {
        delete entry.rec.pausedAt;
        await this.ctx.saveOrLog(entry);
      }
      throw toAgentError(e, 'cannot pause the guest');
    }
    faultPoint('group:pause:sent', OWN);
  }

  /** Resumes the guest the agent paused (if still paused by a suspend); false if libvirt could not be reached. */
  async resume(entry: GroupEntry): Promise<boolean> {
    if (!entry.rec.pausedAt) return true;
    const r = await this.ctx.guest.resumeOwn(entry.rec.domain.uuid);
    faultPoint('group:resume:sent', OWN);
    if (r === 'failed') return false;
    if (r !== 'resumed') this.ctx.log.warn(`after the group switch, ${RESUMED[r]}`, { groupId: entry.rec.groupId });
    delete entry.rec.pausedAt;
    await this.ctx.saveOrLog(entry);
    return true;
  }

  /** Thaws what the agent froze, once; the failure is said in the group's error. False if it must be retried. */
  async thaw(entry: GroupEntry): Promise<boolean> {
    if (!entry.rec.frozenAt) return true;
    const r = await this.ctx.guest.thaw(entry.rec.domain.uuid);
    faultPoint('group:thaw:sent', OWN);
    if (!r.ok && isUnanswered(r.error)) return false;
    if (!r.ok) {
      entry.rec.error = {
        name: 'libvirtError',
        message: `the agent froze the guest's filesystems and could not thaw them (${(r.error as Error).message}); they may still be frozen: thaw them with 'virsh domfsthaw'`,
      };
    }
    delete entry.rec.frozenAt;
    await this.ctx.saveOrLog(entry);
    return true;
  }

  /**
   * A switch interrupted with the guest paused or frozen by the agent (crash, shutdown past its
   * bound, libvirtd lost): resume, then thaw (the guest agent needs running vCPUs), exactly what
   * the record says, and say so in the group's error. What libvirt could not be asked stays in
   * the record for the next reconnect or start.
   */
  async afterCrash(entry: GroupEntry): Promise<void> {
    const { rec } = entry;
    const at = rec.pausedAt ?? rec.frozenAt;
    this.ctx.log.warn('a group switch was interrupted with the guest paused or frozen: releasing it', {
      groupId: rec.groupId,
      pausedAt: rec.pausedAt,
      frozenAt: rec.frozenAt,
    });
    const done: string[] = [];
    if (rec.pausedAt) {
      const r = await this.ctx.guest.resumeOwn(rec.domain.uuid);
      if (r === 'failed') return;
      done.push(RESUMED[r]);
      delete rec.pausedAt;
    }
    if (rec.frozenAt) {
      const r = await this.ctx.guest.thaw(rec.domain.uuid);
      if (!r.ok && isUnanswered(r.error)) {
        await this.ctx.saveOrLog(entry);
        return;
      }
      done.push(
        r.ok
          ? 'its filesystems were thawed'
          : `its filesystems could not be thawed (${(r.error as Error).message}): thaw them with 'virsh domfsthaw'`,
      );
      delete rec.frozenAt;
    }
    rec.error = {
      name: 'interrupted',
      message: `a group switch was interrupted (the agent stopped or lost libvirtd) at ${at}; ${done.join('; ')}; each disk's job shows where it ended`,
    };
    await this.ctx.save(entry);
  }
}
