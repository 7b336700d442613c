// The restore's plan, pure: from a backup manifest (schemas/backup-manifest.schema.json, the
// contract with the `backup` job kind), which files rebuild disk D as it was at backup E. Walks
// back from E through each incremental's `since` to the entry whose checkpoint it names, down to
// a full; refuses what would rebuild a wrong disk: a gap, an unknown or ambiguous --upto, a
// file name that could leave the manifest's directory, a size or format that does not match.
import type { BackupManifest } from '../generated/api.js';

export type Backup = BackupManifest['backups'][number];
export type BackupFile = Backup['disks'][string];

/** Why a restore was refused: a stable name (printed with --json) and a message for a person. */
export type RestoreReason =
  | 'manifestInvalid'
  | 'unknownBackup'
  | 'ambiguousBackup'
  | 'noSuchDisk'
  | 'chainGap'
  | 'unsafePath'
  | 'sizeMismatch'
  | 'formatMismatch'
  | 'checksumMismatch'
  | 'imageRejected'
  | 'outputExists'
  | 'outputRejected'
  | 'qemuImgFailed'
  | 'interrupted';

export class RestoreError extends Error {
  constructor(
    readonly reason: RestoreReason,
    message: string,
  ) {
    super(message);
  }
}

/** One layer of the chain, oldest (the full) first. */
export interface Layer {
  id: string;
  kind: Backup['kind'];
  checkpoint: string | null;
  since: string | null;
  startedAt: string;
  file: string;
  format: BackupFile['format'];
  virtualSize: number;
  size: number;
  /** null: the backup was taken with checksum none; the file cannot be verified. */
  sha256: string | null;
}

export interface RestorePlan {
  domain: string;
  disk: string;
  /** The backup restored to (the chain's top). */
  upto: string;
  /** The full first, then each incremental in the order they apply. */
  chain: Layer[];
  virtualSize: number;
  outputFormat: 'raw' | 'qcow2';
}

/** More layers than this is refused: QEMU nests each as a JSON object (its parser stops at 1024). */
export const MAX_CHAIN = 256;

/** A plain name in the manifest's directory: no '/', no control character, not '.' or '..', not empty, ≤ 255 bytes. */
export function plainName(file: string): boolean {
  // eslint-disable-next-line no-control-regex
  return file !== '' && file !== '.' && file !== '..' && !/[/\u0000-\u001f\u007f]/.test(file) && Buffer.byteLength(file) <= 255;
}

const show = (b: { id: string; checkpoint: string | null }) => `backup '${b.id}'${b.checkpoint ? ` (checkpoint '${b.checkpoint}')` : ''}`;

/** What holds for the whole manifest, whatever is restored: unique ids, checkpoints and files, safe names. */
export function checkManifest(m: BackupManifest): void {
  const ids = new Set<string>();
  const checkpoints = new Set<string>();
  const files = new Map<string, string>();
  for (const b of m.backups) {
    if (ids.has(b.id)) throw new RestoreError('manifestInvalid', `the manifest lists backup id '${b.id}' twice`);
    ids.add(b.id);
    if (b.checkpoint !== null) {
      if (checkpoints.has(b.checkpoint)) throw new RestoreError('manifestInvalid', `the manifest lists checkpoint '${b.checkpoint}' twice`);
      checkpoints.add(b.checkpoint);
    }
    if (b.kind === 'full' && b.since !== null) throw new RestoreError('manifestInvalid', `${show(b)} is full but names since '${b.since}'`);
    if (b.kind === 'incremental' && b.since === null)
      throw new RestoreError('manifestInvalid', `${show(b)} is incremental but names no since`);
    for (const [disk, f] of Object.entries(b.disks)) {
      if (!plainName(f.file))
        throw new RestoreError(
          'unsafePath',
          `${show(b)} disk ${disk}: file '${f.file}' is not a plain name in the manifest's directory (no '/', not '.' or '..')`,
        );
      const other = files.get(f.file);
      if (other) throw new RestoreError('manifestInvalid', `file '${f.file}' is listed twice (${other} and ${b.id}/${disk})`);
      files.set(f.file, `${b.id}/${disk}`);
      if (b.kind === 'incremental' && f.format !== 'qcow2')
        throw new RestoreError('formatMismatch', `${show(b)} disk ${disk}: an incremental must be qcow2, not ${f.format}`);
    }
  }
}

/** The entry --upto names (its id, else its checkpoint), or the latest with the disk. */
function target(m: BackupManifest, disk: string, upto: string | undefined): number {
  if (upto === undefined) {
    for (let i = m.backups.length - 1; i >= 0; i--) if (m.backups[i]!.disks[disk]) return i;
    const known = [...new Set(m.backups.flatMap((b) => Object.keys(b.disks)))].join(', ') || 'none';
    throw new RestoreError('noSuchDisk', `no backup in the manifest holds disk ${disk} (disks: ${known})`);
  }
  const byId = m.backups.findIndex((b) => b.id === upto);
  const byCheckpoint = m.backups.findIndex((b) => b.checkpoint === upto);
  if (byId >= 0 && byCheckpoint >= 0 && byId !== byCheckpoint)
    throw new RestoreError(
      'ambiguousBackup',
      `'${upto}' is the id of one backup and the checkpoint of another: name the other by its own id`,
    );
  const i = byId >= 0 ? byId : byCheckpoint;
  if (i < 0) {
    const recent = m.backups.slice(-5).map((b) => b.id + (b.checkpoint ? ` (${b.checkpoint})` : ''));
    throw new RestoreError('unknownBackup', `no backup has the id or checkpoint '${upto}' (latest: ${recent.join(', ') || 'none'})`);
  }
  return i;
}

/**
 * The chain restoring `disk` to backup `upto` (default: the latest holding it). Each incremental
 * leads to the earlier entry whose checkpoint its `since` names; the walk ends at a full. Every
 * layer has the full's virtual size; an incremental is qcow2.
 */
export function planRestore(m: BackupManifest, opts: { disk: string; upto?: string; format?: 'raw' | 'qcow2' }): RestorePlan {
  checkManifest(m);
  const { disk } = opts;
  let i = target(m, disk, opts.upto);
  const top = m.backups[i]!;
  if (!top.disks[disk]) {
    const has = Object.keys(top.disks).join(', ');
    throw new RestoreError('noSuchDisk', `${show(top)} holds no file for disk ${disk} (it holds ${has})`);
  }
  const layers: Layer[] = [];
  for (;;) {
    const b = m.backups[i]!;
    const f = b.disks[disk];
    if (!f) {
      const next = layers[0]!;
      throw new RestoreError(
        'chainGap',
        `gap: ${show(next)} is relative to checkpoint '${next.since}' of ${show(b)}, which holds no file for disk ${disk}`,
      );
    }
    layers.unshift({
      id: b.id,
      kind: b.kind,
      checkpoint: b.checkpoint,
      since: b.since,
      startedAt: b.startedAt,
      file: f.file,
      format: f.format,
      virtualSize: f.virtualSize,
      size: f.size,
      sha256: f.sha256 === null ? null : f.sha256.toLowerCase(),
    });
    if (layers.length > MAX_CHAIN) throw new RestoreError('chainGap', `the chain to ${show(top)} is longer than ${MAX_CHAIN} backups`);
    if (b.kind === 'full') break;
    const since = b.since!;
    const j = m.backups.findIndex((p) => p.checkpoint === since);
    if (j < 0)
      throw new RestoreError(
        'chainGap',
        `gap: ${show(b)} is relative to checkpoint '${since}', which no backup in the manifest created (a backup missing or removed from it)`,
      );
    if (j >= i)
      throw new RestoreError('chainGap', `${show(b)} is relative to checkpoint '${since}' of ${show(m.backups[j]!)}, which comes after it`);
    if (Date.parse(m.backups[j]!.startedAt) > Date.parse(b.startedAt))
      throw new RestoreError('chainGap', `${show(b)} started before ${show(m.backups[j]!)}, the backup its since names`);
    i = j;
  }
  const full = layers[0]!;
  for (const l of layers.slice(1))
    if (l.virtualSize !== full.virtualSize)
      throw new RestoreError(
        'sizeMismatch',
        `backup '${l.id}' disk ${disk} is ${l.virtualSize} bytes, its full backup '${full.id}' ${full.virtualSize}: the disk was resized between them; restore up to a backup before the resize, or take a new full`,
      );
  return {
    domain: m.domain,
    disk,
    upto: top.id,
    chain: layers,
    virtualSize: full.virtualSize,
    outputFormat: opts.format ?? full.format,
  };
}
