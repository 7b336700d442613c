// What the live XML shows of a disk, in words, for the evidence of a commit's or pull's end.
import type { DiskInfo } from '../../../libvirt/disk-xml.js';
import type { ErrorName } from '../../../errors.js';
import { chainOf, describeChain } from './layers.js';
import type { ChainDecision } from './types.js';

export function describeDisk(target: string, disk: DiskInfo | undefined): string {
  if (!disk) return 'the disk is not in the live XML';
  const m = disk.mirror;
  const mirror = m ? ` and a <mirror job='${m.job}' ready='${m.ready ?? 'no'}'> to ${m.path ?? '?'}` : ' and no <mirror>';
  return `live XML shows the chain ${describeChain(target, chainOf(disk))}${mirror}`;
}

export const failure = (name: ErrorName, message: string, evidence: string): ChainDecision => ({
  state: 'failed',
  error: { name, message },
  evidence,
});
