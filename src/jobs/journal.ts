// One JSON file per job in the state directory, replaced atomically (temp file, rename) so a
// crash of the agent leaves either the old or the new record.
//
// Deliberately no fsync. It would protect only against a host crash, which kills QEMU and every
// copy with it, and reconcile re-derives each job's state from libvirt's live XML anyway. On
// ext4 (data=ordered) an fsync here also forces out unrelated dirty data: measured, it held a
// 2 GiB copy's pivot back by 4.6 s while the host flushed the guest's recent writes.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Job } from '../generated/api.js';

export interface JobRecord {
  job: Job;
  /** The exact <disk> XML handed to libvirt (kept so a restart knows what was asked). */
  destinationXml: string;
}

const FILE = /^job-([A-Za-z0-9._:-]+)\.json$/;

export class Journal {
  constructor(private readonly dir: string) {}

  async open(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private path(jobId: string): string {
    return join(this.dir, `job-${jobId}.json`);
  }

  async save(rec: JobRecord): Promise<void> {
    const final = this.path(rec.job.jobId);
    const tmp = `${final}.${process.pid}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(rec, null, 1), { mode: 0o600 });
    await fs.rename(tmp, final);
  }

  async remove(jobId: string): Promise<void> {
    await fs.rm(this.path(jobId), { force: true });
  }

  /** Every readable record; unreadable files are reported, never fatal. */
  async load(onBadFile: (file: string, err: unknown) => void): Promise<JobRecord[]> {
    const out: JobRecord[] = [];
    for (const name of await fs.readdir(this.dir)) {
      if (name.endsWith('.tmp')) {
        await fs.rm(join(this.dir, name), { force: true });
        continue;
      }
      if (!FILE.test(name)) continue;
      try {
        const rec = JSON.parse(await fs.readFile(join(this.dir, name), 'utf8')) as JobRecord;
        if (!rec?.job?.jobId || typeof rec.destinationXml !== 'string') throw new Error('not a job record');
        out.push(rec);
      } catch (e) {
        onBadFile(name, e);
      }
    }
    return out;
  }
}
