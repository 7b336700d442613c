// Snapshot chains for the chain tests and fault suites: a domain with external overlays on vda (the guest
// writing before and between them, recorded in a reference), and the chain as virsh sees it.
import type { Test } from 'tap';
import * as hv from '../../harness/hypervisor.js';
import { Reference } from './faults.js';

const MiB = 1024 * 1024;
export const CHAIN_SIZE_MIB = 64;

/** vda's chain in the live XML, active layer first (virsh as the witness). */
export function chain(dom: hv.TestDomain): Promise<string[]> {
  return hv.liveChain(dom, 'vda');
}

/** A domain whose vda has `layers` external overlays; `files` is its chain, active layer first.
 *  The guest writes 24 MiB before the first overlay and 6 MiB into each (24 MiB on). */
export async function layered(
  t: Test,
  layers: number,
  opts: { persistent?: boolean } = {},
): Promise<{ dom: hv.TestDomain; ref: Reference; files: string[] }> {
  const dom = await hv.createDomain(t, { persistent: !!opts.persistent, disks: [{ format: 'qcow2', sizeMiB: CHAIN_SIZE_MIB }] });
  const ref = Reference.create(dom, CHAIN_SIZE_MIB);
  await ref.write(dom, 'vda', { pattern: 0x11, offset: 0, length: 24 * MiB });
  const files = [dom.disks[0]!.path];
  for (let i = 1; i <= layers; i++) {
    const file = `${dom.dir}/overlay${i}.qcow2`;
    await hv.virsh('snapshot-create-as', dom.name, '--disk-only', '--no-metadata', '--atomic', '--diskspec', `vda,file=${file}`);
    files.unshift(file);
    await ref.write(dom, 'vda', { pattern: 0x20 + i, offset: (24 + 6 * i) * MiB, length: 6 * MiB });
  }
  return { dom, ref, files };
}
