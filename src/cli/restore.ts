// The restore verb: offline, it needs no agent and no libvirt (it connects to nothing). Reads a
// backup manifest, checks it and the files of the chain, and rebuilds one disk (src/restore/).
import { parseArgs } from 'node:util';
import { EXIT } from './args.js';

export const RESTORE_HELP = `Usage: blockcopy-agent restore MANIFEST --disk DISK --output PATH [--upto ID|CHECKPOINT]
                               [--format qcow2|raw] [--json]
       blockcopy-agent restore MANIFEST --verify-only [--disk DISK] [--upto ID|CHECKPOINT] [--json]

Rebuilds disk DISK as it was when backup ID (or the backup that created CHECKPOINT; default: the
latest holding the disk) started, from the full backup and incrementals the manifest
(DIR/DOMAIN.backups.json) lists, into PATH (a new file: never overwritten). Offline: no agent,
no libvirt; uses qemu-img. Before anything is written, every file of the chain is checked: a
plain name in the manifest's directory (no symbolic link), its header (format, size, no backing
file for a full), its sha256. Backup files are only read. --format: the output's format (default:
the full backup's). --verify-only checks the manifest and the files (every disk's chain without
--disk) and writes nothing. See docs/restore.md.
Exit codes: 0 ok, 1 refused or failed (reason on stderr, a JSON document with --json), 2 usage,
130 interrupted (nothing left behind).`;

const OPTIONS = {
  disk: { type: 'string' },
  output: { type: 'string' },
  upto: { type: 'string' },
  format: { type: 'string' },
  'verify-only': { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runRestore(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    return usage((e as Error).message);
  }
  const { values: v, positionals: pos } = parsed;
  if (v.help) {
    process.stdout.write(RESTORE_HELP + '\n');
    return EXIT.ok;
  }
  if (pos.length !== 1) return usage('restore needs one MANIFEST');
  if (v.format !== undefined && v.format !== 'raw' && v.format !== 'qcow2') return usage('--format is raw or qcow2');
  if (v['verify-only']) {
    if (v.output !== undefined || v.format !== undefined) return usage('--verify-only writes nothing: no --output or --format');
  } else {
    if (!v.disk) return usage('restore needs --disk DISK (the target, e.g. vda)');
    if (!v.output) return usage('restore needs --output PATH (a new file)');
  }
  const json = !!v.json || !process.stdout.isTTY;
  const say = (msg: string, data: Record<string, unknown>) => process.stdout.write((json ? JSON.stringify(data) : printable(msg)) + '\n');
  const abort = new AbortController();
  const interrupt = () => abort.abort();
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);
  const { restore } = await import('../restore/run.js');
  const { RestoreError } = await import('../restore/plan.js');
  try {
    const r = await restore({
      manifest: pos[0]!,
      ...(v.disk ? { disk: v.disk } : {}),
      ...(v.upto ? { upto: v.upto } : {}),
      ...(v.format ? { format: v.format as 'raw' | 'qcow2' } : {}),
      ...(v.output ? { output: v.output } : {}),
      verifyOnly: !!v['verify-only'],
      say,
      signal: abort.signal,
    });
    if (v['verify-only']) {
      const files = r.disks.flatMap((d) => d.chain);
      const unverified = files.filter((f) => !f.verified).length;
      const n = (k: number, what: string) => `${k} ${what}${k === 1 ? '' : 's'}`;
      const sums =
        unverified === 0 ? 'checksums match' : `${files.length - unverified} verified, ${unverified} without a checksum: NOT verified`;
      const head = `${unverified === 0 ? 'verified' : 'checked'}: ${r.manifest}`;
      say(`${head}, ${r.disks.map((d) => `${d.disk} up to ${d.upto}`).join(', ')} (${n(files.length, 'file')}, ${sums})`, {
        event: 'verifiedAll',
        ...r,
      });
    }
    return EXIT.ok;
  } catch (e) {
    if (abort.signal.aborted) {
      process.stderr.write('blockcopy-agent: restore interrupted; no output written, temporary files removed\n');
      return EXIT.interrupted;
    }
    if (e instanceof RestoreError) {
      process.stderr.write(
        json
          ? JSON.stringify({ error: e.reason, message: e.message }) + '\n'
          : `blockcopy-agent: restore refused (${e.reason}): ${printable(e.message)}\n`,
      );
      return EXIT.agentError;
    }
    process.stderr.write(`blockcopy-agent: restore failed: ${printable((e as Error).message)}\n`);
    return EXIT.agentError;
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

/** Text from the manifest or a file's header reaches a terminal: control characters shown as escapes, never sent. */
// eslint-disable-next-line no-control-regex
const printable = (s: string) => s.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

function usage(msg: string): number {
  process.stderr.write(`blockcopy-agent: ${printable(msg)}\n\n${RESTORE_HELP}\n`);
  return EXIT.usage;
}
