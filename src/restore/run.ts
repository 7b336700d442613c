// Runs a restore plan, offline (no agent, no libvirt): opens and checks every file of the chain
// (files.ts), then has qemu-img read the chain as one read-only stack and write the output.
//
// The stack: QEMU's `json:` description of the top incremental whose `backing` is the one below,
// down to the full (with `backing: null`), each layer's file named `/dev/fd/N`, the descriptor
// this process opened, checked and hashed, passed to qemu-img. Nothing is copied, nothing is
// created but the output, no backup file is opened for writing (`read-only` on every node), no
// backing name stored in a header is ever followed, and the files qemu-img reads are by identity
// the ones checked. An incremental's unallocated clusters read through to the layer below;
// its allocated and zero clusters hide it: exactly "changed since the checkpoint".
// The output is written under a temporary name in its directory, flushed, then linked to its
// name (link(2) refuses an existing name, where rename(2) would replace it) and the temporary
// removed, on every path, Ctrl-C included.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { checkDirUnchanged, openLayer, readManifest, verifyChecksum, type OpenLayer } from './files.js';
import { planRestore, RestoreError, type RestorePlan } from './plan.js';

export interface RestoreOptions {
  manifest: string;
  disk?: string;
  upto?: string;
  format?: 'raw' | 'qcow2';
  output?: string;
  verifyOnly?: boolean;
  /** What happens, as it happens (a line for a person, a document for --json). */
  say?: (msg: string, data: Record<string, unknown>) => void;
  /** Aborted (Ctrl-C): qemu-img is stopped and the temporary output removed. */
  signal?: AbortSignal;
  qemuImg?: string;
}

export interface LayerReport {
  id: string;
  kind: string;
  checkpoint: string | null;
  since: string | null;
  file: string;
  format: string;
  bytes: number;
  /** The checksum read and matched; null: the manifest records none (checksum none). */
  sha256: string | null;
  verified: boolean;
  ignoredBacking?: string;
}

export interface RestoreReport {
  manifest: string;
  domain: string;
  disks: Array<{ disk: string; upto: string; virtualSize: number; chain: LayerReport[] }>;
  output?: { path: string; format: string; virtualSize: number; bytes: number };
}

/** The stack qemu-img reads: the top layer, each `backing` the layer below, every node read-only. */
export function stackJson(layers: Array<{ format: 'raw' | 'qcow2'; filename: string }>): string {
  let node: Record<string, unknown> | null = null;
  for (const l of layers) {
    const file = { driver: 'file', filename: l.filename, 'read-only': true };
    node = l.format === 'raw' ? { driver: 'raw', 'read-only': true, file } : { driver: 'qcow2', 'read-only': true, file, backing: node };
  }
  return 'json:' + JSON.stringify(node);
}

const report = (o: OpenLayer): LayerReport => ({
  id: o.layer.id,
  kind: o.layer.kind,
  checkpoint: o.layer.checkpoint,
  since: o.layer.since,
  file: o.path,
  format: o.layer.format,
  bytes: o.stat.size,
  sha256: o.sha256,
  verified: o.sha256 !== null,
  ...(o.ignoredBacking !== null ? { ignoredBacking: o.ignoredBacking } : {}),
});

/** Opens and checks the plan's files (headers, identity, checksums), oldest first. */
async function openChain(m: Awaited<ReturnType<typeof readManifest>>, plan: RestorePlan, opts: RestoreOptions): Promise<OpenLayer[]> {
  const say = opts.say;
  const opened: OpenLayer[] = [];
  try {
    for (const layer of plan.chain) opened.push(await openLayer(m, layer));
    for (const o of opened) {
      const verified = await verifyChecksum(o, opts.signal);
      const what = verified ? 'sha256 ok' : 'NOT verified: the manifest records no checksum (backed up with checksum none)';
      say?.(`  ${o.layer.kind} ${o.layer.id}: ${basename(o.path)} ${o.layer.format}, ${o.stat.size} bytes, ${what}`, {
        event: verified ? 'verified' : 'unverified',
        disk: plan.disk,
        layer: report(o),
      });
    }
    await checkDirUnchanged(m);
    return opened;
  } catch (e) {
    await Promise.all(opened.map((o) => o.fh.close()));
    throw e;
  }
}

/** Verifies (and unless verifyOnly, restores) what the options name. */
export async function restore(opts: RestoreOptions): Promise<RestoreReport> {
  const say = opts.say;
  const m = await readManifest(opts.manifest);
  const out: RestoreReport = { manifest: m.path, domain: m.data.domain, disks: [] };
  // --verify-only without --disk: every disk's chain to its latest backup.
  const disks = opts.disk !== undefined ? [opts.disk] : [...new Set(m.data.backups.flatMap((b) => Object.keys(b.disks)))].sort();
  const plans = disks.flatMap((disk) => {
    try {
      return [planRestore(m.data, { disk, upto: opts.upto, format: opts.format })];
    } catch (e) {
      // Every disk with --upto: the disks that backup holds.
      if (opts.disk === undefined && opts.upto !== undefined && e instanceof RestoreError && e.reason === 'noSuchDisk') return [];
      throw e;
    }
  });
  if (!opts.verifyOnly && opts.output === undefined) throw new RestoreError('outputRejected', 'no output named');
  const output = opts.output !== undefined && !opts.verifyOnly ? await checkOutput(opts.output) : null;
  for (const plan of plans) {
    say?.(`${plan.domain} ${plan.disk} up to backup ${plan.upto}: ${plan.chain.map((l) => `${l.kind} ${l.id}`).join(' + ')}`, {
      event: 'plan',
      disk: plan.disk,
      upto: plan.upto,
      chain: plan.chain,
    });
    const opened = await openChain(m, plan, opts);
    try {
      const entry = { disk: plan.disk, upto: plan.upto, virtualSize: plan.virtualSize, chain: opened.map(report) };
      out.disks.push(entry);
      for (const o of opened)
        if (o.ignoredBacking !== null)
          say?.(`  ${o.layer.id}: its header names '${o.ignoredBacking}' as backing (the disk at backup time): not opened`, {
            event: 'ignoredBacking',
            disk: plan.disk,
            id: o.layer.id,
            backing: o.ignoredBacking,
          });
      if (output) out.output = await convert(plan, opened, output, opts);
    } finally {
      await Promise.all(opened.map((o) => o.fh.close()));
    }
  }
  return out;
}

/** The output must not exist (not even as a dangling link), its directory must. */
async function checkOutput(path: string): Promise<string> {
  const abs = resolve(path);
  const exists = await fs.lstat(abs).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      throw new RestoreError('outputRejected', `cannot check the output '${abs}' (${e.code})`);
    },
  );
  if (exists) throw new RestoreError('outputExists', `the output '${abs}' exists: restore never overwrites; name a new file`);
  const dir = await fs.stat(dirname(abs)).catch(() => null);
  if (!dir?.isDirectory()) throw new RestoreError('outputRejected', `the output's directory '${dirname(abs)}' does not exist`);
  return abs;
}

async function convert(
  plan: RestorePlan,
  opened: OpenLayer[],
  output: string,
  opts: RestoreOptions,
): Promise<NonNullable<RestoreReport['output']>> {
  const tmp = join(dirname(output), `.${basename(output)}.restore-${randomBytes(6).toString('hex')}.tmp`);
  // fd 3 onwards in the child: layer i is /dev/fd/(3 + i).
  const json = stackJson(opened.map((o, i) => ({ format: o.layer.format, filename: `/dev/fd/${3 + i}` })));
  const args = ['convert', '-O', plan.outputFormat, json, tmp];
  opts.say?.(`  qemu-img convert -O ${plan.outputFormat} (${opened.length} layers, read-only) -> ${output}`, {
    event: 'convert',
    disk: plan.disk,
    output,
    format: plan.outputFormat,
  });
  try {
    await run(
      opts.qemuImg ?? 'qemu-img',
      args,
      opened.map((o) => o.fh.fd),
      opts.signal,
    );
    const fh = await fs.open(tmp, constants.O_RDONLY | constants.O_NOFOLLOW);
    let bytes: number;
    try {
      await fh.chmod(0o600); // a disk's data: readable by root only until the operator says otherwise
      await fh.sync();
      bytes = (await fh.stat()).blocks * 512;
    } finally {
      await fh.close();
    }
    try {
      await fs.link(tmp, output);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST')
        throw new RestoreError('outputExists', `the output '${output}' appeared during the restore: left as it is`);
      throw e;
    }
    await fs.unlink(tmp);
    await syncDir(dirname(output));
    const r = { path: output, format: plan.outputFormat, virtualSize: plan.virtualSize, bytes };
    opts.say?.(
      `restored ${plan.domain} ${plan.disk} to ${output} (${plan.outputFormat}, ${plan.virtualSize} bytes virtual, ${bytes} on disk)`,
      {
        event: 'restored',
        disk: plan.disk,
        upto: plan.upto,
        output: r,
      },
    );
    return r;
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** qemu-img with the layers' descriptors at 3, 4, …; its stderr (bounded) in the error. */
function run(cmd: string, args: string[], fds: number[], signal?: AbortSignal): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    if (signal?.aborted) return reject(new RestoreError('interrupted', 'interrupted'));
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe', ...fds] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 8192) stderr += d.toString();
    });
    const onAbort = () => child.kill('SIGTERM');
    signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e: NodeJS.ErrnoException) => {
      signal?.removeEventListener('abort', onAbort);
      reject(new RestoreError('qemuImgFailed', e.code === 'ENOENT' ? `${cmd} not found (Debian: apt install qemu-utils)` : e.message));
    });
    child.on('close', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      if (signal?.aborted) return reject(new RestoreError('interrupted', 'interrupted'));
      if (code === 0) return resolvePromise();
      reject(new RestoreError('qemuImgFailed', `qemu-img convert failed (${sig ?? `exit ${code}`}): ${stderr.trim().slice(0, 2000)}`));
    });
  });
}
