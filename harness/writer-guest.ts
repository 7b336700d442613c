// A tiny real guest (harness/writer-guest/boot.asm) that writes a round counter to
// sector 0 of each data disk in turn, forever. Unlike writes injected through the QEMU monitor,
// it stops when its vCPUs are paused, so it can show whether a set of disks holds one moment.
import { execFileSync } from 'node:child_process';
import { openSync, readSync, closeSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createDomain, type TeardownHost, type TestDomain } from './hypervisor.js';

const SOURCE = fileURLToPath(new URL('../../harness/writer-guest/boot.asm', import.meta.url));
const MAGIC = 0x31574342; // "BCW1"
const NDISKS_OFFSET = 509;

let assembled: Buffer | undefined;

/** The boot sector, assembled once per process; byte 509 says how many data disks it writes. */
export function bootSector(dataDisks: number): Buffer {
  if (dataDisks < 1 || dataDisks > 4) throw new Error('1 to 4 data disks');
  if (!assembled) {
    const dir = mkdtempSync(join(tmpdir(), 'bcw-'));
    try {
      execFileSync('nasm', ['-f', 'bin', '-o', join(dir, 'boot.bin'), SOURCE]);
      assembled = readFileSync(join(dir, 'boot.bin'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    if (assembled.length !== 512 || assembled.readUInt16LE(510) !== 0xaa55) throw new Error('boot.asm did not assemble to a boot sector');
  }
  const b = Buffer.from(assembled);
  b[NDISKS_OFFSET] = dataDisks;
  return b;
}

export interface Stamp {
  /** The round the disk holds (0: never written). */
  round: number;
  /** The BIOS drive number that wrote it (0x81 = first data disk). */
  drive: number;
}

/** What sector 0 of a raw image says. */
export function readStamp(path: string): Stamp {
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(9);
  try {
    readSync(fd, b, 0, 9, 0);
  } finally {
    closeSync(fd);
  }
  if (b.readUInt32LE(0) !== MAGIC) return { round: 0, drive: 0 };
  return { round: b.readUInt32LE(4), drive: b[8]! };
}

/**
 * Whether stamps (in write order: first data disk first) can be one moment of the guest: every
 * round writes disk 1, then 2, ..., so a snapshot is non-increasing along that order and spans
 * at most one round.
 */
export function isOneMoment(rounds: number[]): boolean {
  if (rounds.some((r) => r <= 0)) return false;
  for (let i = 1; i < rounds.length; i++) if (rounds[i]! > rounds[i - 1]!) return false;
  return rounds[0]! - rounds.at(-1)! <= 1;
}

/** A running writer guest: vda boots the writer, vdb.. are the raw data disks it writes. */
export async function createWriterDomain(host: TeardownHost, opts: { dataDisks: number; sizeMiB?: number }): Promise<TestDomain> {
  return createDomain(host, {
    disks: [
      { format: 'raw', sizeMiB: 1, bootSector: bootSector(opts.dataDisks), bootOrder: 1 },
      // SeaBIOS gives int 13h drive numbers only to disks in the boot order: 0x81, 0x82, … in this order.
      ...Array.from({ length: opts.dataDisks }, (_, i) => ({ format: 'raw' as const, sizeMiB: opts.sizeMiB ?? 32, bootOrder: i + 2 })),
    ],
  });
}

/** Resolves once every data disk holds a stamp that moves (the guest booted and writes). */
export async function waitUntilWriting(dom: TestDomain, timeoutMs = 60_000): Promise<void> {
  const data = dom.disks.slice(1);
  const deadline = Date.now() + timeoutMs;
  const first = data.map((d) => readStamp(d.path).round);
  for (;;) {
    const now = data.map((d) => readStamp(d.path).round);
    if (now.every((r, i) => r > 0 && r > first[i]!)) return;
    if (Date.now() > deadline) throw new Error(`the writer guest does not write (rounds ${now.join(', ')})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
