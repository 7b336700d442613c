// The only producer of the <domainbackup> and <domaincheckpoint> documents libvirt gets, built
// from checked fields (disk targets and checkpoint names matched by the schema's patterns, file
// paths that passed the destination policy), and the reader of what libvirt answers about a
// running backup and about checkpoints. Nothing a caller wrote is forwarded.
import { DOMParser, type Element, type Node } from '@xmldom/xmldom';
import type { BackupJob } from '../../../generated/api.js';
import { LibvirtError, VirErrorCode, type BackupXml, type Connection } from '../../../libvirt/index.js';
import { toAgentError } from '../../libvirt-errors.js';

export interface BackupDiskPlan {
  disk: string;
  /** Absolute, canonical, checked by the destination policy. */
  file: string;
  format: 'raw' | 'qcow2';
}

const TARGET = /^[a-z]+[a-z0-9]*$/;
const CHECKPOINT = /^[A-Za-z0-9][A-Za-z0-9._:+-]{0,99}$/;

const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');

function checked(value: string, re: RegExp, what: string): string {
  if (!re.test(value)) throw new Error(`refusing to serialize ${what} ${JSON.stringify(value)}`);
  return value;
}

/** A push-mode backup of `disks` (each to its own file); `since` makes it incremental. */
export function toBackupXml(disks: BackupDiskPlan[], since: string | null): BackupXml {
  const inc = since === null ? '' : `<incremental>${checked(since, CHECKPOINT, 'checkpoint name')}</incremental>`;
  const items = disks.map((d) => {
    if (!d.file.startsWith('/') || d.file.includes('\0')) throw new Error(`refusing to serialize backup file ${JSON.stringify(d.file)}`);
    const format = d.format === 'raw' ? 'raw' : 'qcow2';
    return (
      `<disk name='${checked(d.disk, TARGET, 'disk target')}' backup='yes' type='file'>` +
      `<target file='${esc(d.file)}'/><driver type='${format}'/></disk>`
    );
  });
  return `<domainbackup mode='push'>${inc}<disks>${items.join('')}</disks></domainbackup>` as BackupXml;
}

/** A checkpoint named `name` with a bitmap on each of `disks`, the others without. */
export function toCheckpointXml(name: string, disks: string[], others: string[]): BackupXml {
  const items = [
    ...disks.map((d) => `<disk name='${checked(d, TARGET, 'disk target')}' checkpoint='bitmap'/>`),
    ...others.map((d) => `<disk name='${checked(d, TARGET, 'disk target')}' checkpoint='no'/>`),
  ];
  return `<domaincheckpoint><name>${checked(name, CHECKPOINT, 'checkpoint name')}</name><disks>${items.join('')}</disks></domaincheckpoint>` as BackupXml;
}

const ELEMENT = 1;
function kids(n: Node, name: string): Element[] {
  const out: Element[] = [];
  for (let c = n.firstChild; c; c = c.nextSibling) if (c.nodeType === ELEMENT && (c as Element).localName === name) out.push(c as Element);
  return out;
}

function parse(xml: string, root: string): Element | null {
  try {
    const doc = new DOMParser({
      onError: (level, msg) => {
        throw new Error(`${level}: ${msg}`);
      },
    }).parseFromString(xml, 'text/xml');
    const el = doc.documentElement;
    return el && el.localName === root ? el : null;
  } catch {
    return null;
  }
}

/** What a running push backup's XML (virDomainBackupGetXMLDesc) says: its base checkpoint and each
 *  disk it writes, with its target file and format; null: not a push backup, or unreadable. */
export function pushBackup(xml: string): { since: string | null; disks: BackupJob['disks'] } | null {
  const root = parse(xml, 'domainbackup');
  if (!root || (root.getAttribute('mode') ?? 'push') !== 'push') return null;
  const since = kids(root, 'incremental')[0]?.textContent?.trim() || null;
  const disks: BackupJob['disks'] = [];
  for (const ds of kids(root, 'disks'))
    for (const d of kids(ds, 'disk')) {
      if (d.getAttribute('backup') === 'no') continue;
      const file = kids(d, 'target')[0]?.getAttribute('file');
      if (!file) continue;
      const format = kids(d, 'driver')[0]?.getAttribute('type') === 'raw' ? 'raw' : 'qcow2';
      disks.push({ disk: d.getAttribute('name') ?? '', file, format });
    }
  return { since, disks };
}

/** The target files of a running backup's XML, by disk; null: not a push backup. */
export function backupTargets(xml: string): Map<string, string> | null {
  const b = pushBackup(xml);
  return b && new Map(b.disks.map((d) => [d.disk, d.file]));
}

/** A checkpoint's creation time (ISO) and the disks with a bitmap, from its XML. */
export function checkpointFacts(xml: string): { createdAt: string | null; disks: string[] } {
  const root = parse(xml, 'domaincheckpoint');
  if (!root) return { createdAt: null, disks: [] };
  const t = Number(kids(root, 'creationTime')[0]?.textContent ?? NaN);
  const disks: string[] = [];
  for (const ds of kids(root, 'disks'))
    for (const d of kids(ds, 'disk')) if ((d.getAttribute('checkpoint') ?? 'bitmap') === 'bitmap') disks.push(d.getAttribute('name') ?? '');
  return { createdAt: Number.isFinite(t) ? new Date(t * 1000).toISOString() : null, disks };
}

/** The XML of the domain's running backup job, or null when none runs (or the domain is gone). */
export async function runningBackupXml(conn: Connection, uuid: string): Promise<string | null> {
  return conn.backupGetXmlDesc(uuid).catch((e: unknown) => {
    if (e instanceof LibvirtError && (e.code === VirErrorCode.NO_DOMAIN_BACKUP || e.code === VirErrorCode.NO_DOMAIN)) return null;
    throw toAgentError(e, 'cannot read whether a backup of the domain runs');
  });
}

/** Whether a running backup's XML is this backup's: a push backup of exactly its disks to its files. */
export function isThisBackup(b: Pick<BackupJob, 'disks'>, xml: string | null): boolean {
  if (xml === null) return false;
  const targets = backupTargets(xml);
  if (!targets || targets.size !== b.disks.length) return false;
  return b.disks.every((d) => targets.get(d.disk) === d.file);
}
