// Helpers for backup tests: a reference copy of a disk at a moment (domain paused), and a
// QEMU-side brake on a running backup (its block jobs' speed, set through the monitor).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';

const run = promisify(execFile);

/** A raw copy of the disk as it is now (call with the domain paused; the guest's writes flushed). */
export async function referenceCopy(path: string, format: hv.ImageFormat, out: string): Promise<void> {
  await run('qemu-img', ['convert', '-U', '-f', format, '-O', 'raw', path, out]);
}

/**
 * Slows every block job of the domain's running backup to `speed` bytes/s (0 = unlimited). It
 * comes after the backup started (two virsh calls): the tests give the backup 1 GiB of written
 * data so that it is still copying when the brake arrives on a loaded 2-core host (256 MiB was
 * copied first, often), and try again when it was not.
 */
export async function brakeBackup(dom: hv.TestDomain, speed: number): Promise<number> {
  const q = JSON.parse(await hv.virsh('qemu-monitor-command', dom.name, '{"execute":"query-block-jobs"}')) as {
    return: Array<{ device: string; type: string }>;
  };
  const jobs = q.return.filter((j) => j.type === 'backup');
  for (const j of jobs)
    await hv.virsh(
      'qemu-monitor-command',
      dom.name,
      JSON.stringify({ execute: 'block-job-set-speed', arguments: { device: j.device, speed } }),
    );
  return jobs.length;
}

/**
 * Starts a backup (`start(i)`: the i-th try) and brakes it inside QEMU. The brake comes after the
 * start, so on a fast or loaded host the backup may end first: `ended` then waits it out and the
 * next try starts, up to 5. The try caught running, or undefined when none was.
 */
export async function startCaughtRunning<T>(
  dom: hv.TestDomain,
  start: (i: number) => Promise<T>,
  ended: (started: T) => Promise<unknown>,
): Promise<T | undefined> {
  for (let i = 0; i < 5; i++) {
    const started = await start(i);
    if ((await brakeBackup(dom, 1024)) > 0) return started;
    await ended(started);
  }
  return undefined;
}
