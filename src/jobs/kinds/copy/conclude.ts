// How a copy ended, decided from the live XML and never from the request alone: a pivot is a
// pivot only when the disk's source is the destination and the <mirror> is gone; a finish or
// an abort only when the source is unchanged and the <mirror> is gone. Pure: the manager reads
// the XML, this decides.
import type { ErrorName } from '../../../errors.js';
import type { Job, JobState } from '../../../generated/api.js';
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import { samePath } from '../../job.js';
import { REQUEST_OF } from '../../state-machine.js';
import { STALE_MIRROR_MS, type Decision, type Facts } from '../decision.js';

function describe(disk: DiskInfo | undefined): string {
  if (!disk) return 'the disk is not in the live XML';
  const mirror = disk.mirror ? ` and a <mirror ready='${disk.mirror.ready ?? 'no'}'> to ${disk.mirror.path ?? '?'}` : ' and no <mirror>';
  return `live XML shows source ${disk.sourcePath ?? 'none'}${mirror}`;
}

export function conclude(job: Job, f: Facts, staleMirrorMs = STALE_MIRROR_MS): Decision {
  const state: JobState = job.state;
  const evidence = `${f.why}; ${describe(f.disk)}`;
  const failed = (name: ErrorName, message: string): Decision => ({ state: 'failed', error: { name, message }, evidence });
  const disk = f.disk;
  if (!disk) return failed('invalidState', 'the disk is no longer in the live XML');

  if (disk.mirror) {
    // libvirt drops the <mirror> when it processes the job's end; one still there after the
    // end event (and the manager's settle wait) means the end did not do what it should.
    if (!f.sawEnd) {
      const ms = f.mirrorWithoutJobMs ?? 0;
      if (ms < staleMirrorMs) return { state: null, evidence };
      // Never a success: QEMU may have switched the guest while libvirt's XML says otherwise.
      const stale = `libvirt still shows <mirror ready='${disk.mirror.ready ?? 'no'}'> ${Math.round(ms / 1000)} s after the block job ended in QEMU: libvirt dropped the job (as it does across some libvirtd restarts) and its view of this disk is no longer reliable`;
      if (state === 'pivoting')
        return failed('pivotFailed', `libvirt lost track of the pivot: ${stale}; the guest may be running on either disk`);
      if (state === 'finishing' || state === 'cancelling')
        return failed('libvirtError', `libvirt lost track of the ${REQUEST_OF[state]}: ${stale}`);
      return failed('libvirtError', `libvirt lost track of the copy: ${stale}`);
    }
    if (state === 'pivoting') return failed('pivotFailed', 'the pivot could not be verified: the mirror is still present');
    if (state === 'finishing' || state === 'cancelling') {
      return failed('libvirtError', `the ${REQUEST_OF[state]} could not be verified: the mirror is still present`);
    }
    return { state: null, evidence };
  }

  const onDest = samePath(disk.sourcePath, job.destination.path);
  const onSource = samePath(disk.sourcePath, job.source.path);
  const outcome = f.sawEnd ? 'observed' : 'inferred';
  switch (state) {
    case 'pivoting':
      if (onDest) return { state: 'pivoted', outcome, evidence };
      return failed(
        'pivotFailed',
        onSource
          ? 'the pivot did not happen: the guest still runs on the source'
          : 'the pivot could not be verified: the disk is on neither the source nor the destination',
      );
    case 'finishing':
      if (onSource) return { state: 'finished', outcome, evidence };
      return failed(
        'libvirtError',
        onDest
          ? 'the finish could not be verified: the guest was switched onto the destination instead'
          : 'the finish could not be verified: the disk is on neither the source nor the destination',
      );
    case 'cancelling':
      if (onSource) return { state: 'cancelled', outcome, evidence };
      return failed(
        'libvirtError',
        onDest
          ? 'the abort could not be verified: the guest was switched onto the destination instead'
          : 'the abort could not be verified: the disk is on neither the source nor the destination',
      );
    default:
      // Ended without a request from this agent: say what the XML shows, never more.
      if (onDest) return { state: 'pivoted', outcome: 'inferred', evidence };
      // On the source: a cancel, or a finish by another tool; the two look the same from here,
      // so the weaker claim (no usable copy promised).
      if (onSource) return { state: 'cancelled', outcome: 'inferred', evidence };
      return failed('invalidState', 'the disk changed outside the agent');
  }
}
