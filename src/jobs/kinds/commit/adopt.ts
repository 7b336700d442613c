// A commit or pull found running that this agent did not start (virsh, another tool, a lost
// journal), as a job. What libvirt 9.0 shows of each (test/fixtures/chain-*.xml):
//   active commit: <mirror type='file' job='active-commit' [ready='yes']> whose <source> is the
//                  base (with the base's index): top is the active layer, base is known;
//   commit below the active layer, pull: no <mirror>, the XML is the same as before the job;
//                  only getBlockJobInfo's type tells them apart. Their top and base are nowhere
//                  (not in the XML, not in the block job info): they are recorded as unknown
//                  (null) with the chain at adoption, and the end is deduced from how the chain
//                  changed (outcome.ts), never assumed.
import type { Job } from '../../../generated/api.js';
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import type { BlockJobInfo } from '../../../libvirt/index.js';
import { adoptedCommon } from '../adopted.js';
import { destinationOf } from './fields.js';
import { chainOf, describeChain, layerOf, sameLayer, type Layer, type Layers } from './layers.js';
import { kindOfBlockJob, KIND_WORDS, type ChainKind } from './types.js';

/** A job of one of these kinds as the kernel records it (its Job, with kind and layers). */
export type ChainJobRecord = Job & { kind: ChainKind; layers: Layers };

/** The kind of chain job libvirt runs on the disk, from the block job type, else the <mirror>. */
export function adoptedKind(disk: DiskInfo, info: BlockJobInfo | null): ChainKind | null {
  if (info) return kindOfBlockJob(info.type);
  return disk.mirror?.job === 'active-commit' ? 'activeCommit' : null;
}

/**
 * The job for the commit or pull libvirt runs on `disk`, or null when what runs there is not
 * one (a copy, a backup, nothing).
 */
export function adopted(
  dom: { name: string; uuid: string },
  disk: DiskInfo,
  info: BlockJobInfo | null,
  nowIso: string,
): ChainJobRecord | null {
  const kind = adoptedKind(disk, info);
  if (!kind) return null;
  const chain = chainOf(disk);
  const active = layerOf(chain[0]!);
  const m = disk.mirror?.job === 'active-commit' ? disk.mirror : null;
  let layers: Layers;
  let destination: Job['destination'];
  let known: string;
  if (kind === 'activeCommit') {
    const into: Layer | null = m ? { path: m.path, format: m.format, index: m.index ?? null } : null;
    // The chain's own record of the base (its format as the chain has it), else the mirror's.
    const base = into ? (chain.find((l) => l.depth > 0 && sameLayer(into, l)) ?? into) : null;
    layers = { top: active, base: base ? layerOf(base) : null, chain: chain.map(layerOf) };
    destination = destinationOf(disk, layers.base, m?.type);
    known = base ? 'top is the active layer, base is the mirror' : 'libvirt shows no <mirror>, so its base is unknown';
  } else if (kind === 'pull') {
    layers = { top: active, base: null, chain: chain.map(layerOf) };
    destination = destinationOf(disk, active);
    known = "libvirt does not show a pull's base: it is deduced from the chain when the pull ends";
  } else {
    layers = { top: null, base: null, chain: chain.map(layerOf) };
    destination = destinationOf(disk, null);
    known = "libvirt does not show a commit's top and base: they are deduced from the chain when the commit ends";
  }
  const ready = kind === 'activeCommit' && m?.ready === 'yes';
  return {
    ...adoptedCommon(dom, disk, info, nowIso, ready),
    kind,
    destination,
    layers,
    evidence:
      `found running: libvirt's block job on disk ${disk.target} is ${info ? `of type ${info.type}` : 'not known, its <mirror> is an active commit'}` +
      `${m ? ` (<mirror job='active-commit' ready='${m.ready ?? 'no'}'>)` : ''}; this ${KIND_WORDS[kind]} was started outside this agent, so its options are unknown; ` +
      `${known}; the chain at adoption: ${describeChain(disk.target, chain)}`,
  };
}
