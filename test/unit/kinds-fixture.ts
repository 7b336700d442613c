// What the commit and pull kind tests share: the disks of the XML libvirt 9.0 wrote during
// real disk-only snapshots, commits and pulls on this host (test/fixtures/chain-*.xml, paths
// under /var/tmp/kinds-exp), block job infos as the binding reports them, and jobs built the
// way the job core builds them (plan → planFields).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { findDisk, type DiskInfo } from '../../src/libvirt/disk-xml.js';
import type { BlockJobInfo, BlockJobType } from '../../src/libvirt/index.js';
import { planFields, type ChainJob, type ChainKind, type Plan } from '../../src/jobs/kinds/commit/index.js';

export const EXP = '/var/tmp/kinds-exp';

/** Disk vda of a chain fixture:
 *  commit-start      snap1[4] → top[1] → mid[2] → base[3]     (also while a commit top[1]→base[3] runs)
 *  commit-done       snap1[4] → base[3]                        (after it)
 *  snap2             snap2[5] → snap1[4] → base[3]             (also after an aborted commit or active commit)
 *  acommit-copying   snap2 chain + <mirror job='active-commit'> to base[3], no ready attribute
 *  acommit-ready     the same, ready='yes'
 *  acommit-shallow-ready  snap2 chain + <mirror … ready='yes'> to snap1[4]
 *  acommit-pivoted   snap1[4] → base[3]                        (after the shallow one's pivot)
 *  pull-start        snap3[6] → snap1[4] → base[3]             (also while a pull runs, and after its abort)
 *  pull-base-done    snap3[6] → base[3]                        (after blockpull --base base.qcow2)
 *  pull-full-done    snap3[6]                                  (after a full blockpull)
 *  raw-acommit-ready p-snap1[3] → p-top[1] → p-base.raw[2] + <mirror> to p-base.raw[2] (a persistent domain)
 *  raw-pivoted       p-base.raw[2] (raw);  raw-pivoted-inactive: its persistent definition */
export function disk(name: string): DiskInfo {
  const xml = readFileSync(fileURLToPath(new URL(`../../../test/fixtures/chain-${name}.xml`, import.meta.url)), 'utf8');
  const d = findDisk(xml, 'vda');
  if (!d) throw new Error(`no vda in chain-${name}.xml`);
  return d;
}

export function info(type: BlockJobType, cur = 1048576n, end = 67108864n): BlockJobInfo {
  return { type, bandwidth: 1048576n, bandwidthSource: 'bytes', cur, end };
}

/** A job of `kind` as the job core records it from `plan` on `start`, in `state`. */
export function jobOf(kind: ChainKind, plan: Plan, start: DiskInfo, state = 'copying'): ChainJob {
  return { kind, disk: 'vda', state, owner: 'agent', ...planFields(kind, start, plan) };
}

export const facts = (d: DiskInfo | undefined, sawEnd = true, mirrorWithoutJobMs?: number) => ({
  disk: d,
  sawEnd,
  why: 'test',
  ...(mirrorWithoutJobMs !== undefined ? { mirrorWithoutJobMs } : {}),
});
