// A reused image's header is input (issue 21): every file or endpoint the header of a reused
// qcow2 names (backing file, external data file) is checked against the destination policy, by
// identity, before libvirt is asked anything. Each attack below was accepted before (libvirt
// chowned the named file to QEMU and the guest read it, or QEMU wrote the guest's data into it);
// now each is refused by name, audited, and changes nothing. The files are throwaway ones.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import type { AgentClient, RpcError } from '../../src/client/index.js';
import * as hv from '../../harness/hypervisor.js';
import { serveAgent, stateDir, untilState } from '../../harness/agent.js';
import { fingerprint } from '../helpers/fingerprint.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** A qcow2 made by qemu-img (`-u`: the backing is named, never opened). */
async function qcow2(path: string, args: string[]): Promise<string> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, path, '32M']);
  return path;
}

/** Sets the header's external-data-file bit with no data file named: the extension renamed to an unknown one. */
function dropDataFileName(path: string): void {
  const b = readFileSync(path);
  const at = b.indexOf(Buffer.from('44415441', 'hex'), b.readUInt32BE(100));
  if (at < 0 || (b.readBigUInt64BE(72) & 4n) === 0n) throw new Error('no data file extension to drop');
  b.writeUInt32BE(0x0badcafe, at);
  writeFileSync(path, b);
}

interface Attack {
  name: string;
  make: () => Promise<string>;
  shallow: boolean;
  /** What the refusal names: the header field and the file. */
  why: RegExp;
  format?: 'qcow2' | 'raw';
}

t.test('what a reused image header names is checked like a destination', async (t) => {
  const root = hv.scratchDir('imghdr-root-');
  const outside = hv.scratchDir('imghdr-outside-');
  t.teardown(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });
  // A throwaway "secret" outside the roots, the kind of file the header attack exposed.
  const secret = join(outside, 'secret.raw');
  await hv.createImage(secret, 'raw', 32);
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5e 0 1M', secret]);
  await hv.createImage(join(outside, 'data.raw'), 'raw', 32);

  const victim = await hv.createDomain(t, { disks: [{ format: 'qcow2', sizeMiB: 32, backing: true }] });
  const other = await hv.createDomain(t, { disks: [{ format: 'raw', sizeMiB: 32 }] });
  await hv.guestWrite(victim, 'vda', { pattern: 0x5a, offset: 0, length: 8 * MiB });
  await hv.guestWrite(other, 'vda', { pattern: 0x77, offset: 0, length: 8 * MiB });
  const base = victim.disks[0]!.backingPath!;

  const dir = stateDir(t);
  const auditFile = join(dir, 'audit.log');
  // other's directory is an allowed root too: its disk then fails only the identity check.
  const agent = await serveAgent(t, { dir, config: { allowedRoots: [root, other.dir], audit: { file: auditFile } } });
  const client: AgentClient = await agent.connect();

  const R = (n: string) => join(root, n);
  const outsideRel = `../${basename(outside)}/secret.raw`;
  const attacks: Attack[] = [
    {
      name: 'backing file outside the roots (shallow)',
      make: () => qcow2(R('b-out-shallow.qcow2'), ['-b', secret, '-F', 'raw']),
      shallow: true,
      why: /backing file '.*secret\.raw' in the header of '.*b-out-shallow\.qcow2': .*is not the disk's backing layer/,
    },
    {
      name: 'backing file outside the roots, same format as the disk (shallow)',
      make: () => qcow2(R('b-out-fmt.qcow2'), ['-u', '-b', secret, '-F', 'qcow2']),
      shallow: true,
      why: /backing file '.*secret\.raw' in the header of .*is not the disk's backing layer/,
    },
    {
      name: 'backing file outside the roots (full copy)',
      make: () => qcow2(R('b-out-full.qcow2'), ['-b', secret, '-F', 'raw']),
      shallow: false,
      why: /backing file '.*secret\.raw' in the header of .*must have no backing file/,
    },
    {
      name: "the disk's own backing file (full copy)",
      make: () => qcow2(R('b-base-full.qcow2'), ['-b', base, '-F', 'qcow2']),
      shallow: false,
      why: /backing file .* must have no backing file/,
    },
    {
      name: "the disk's backing file with another backing format",
      make: () => qcow2(R('b-base-raw.qcow2'), ['-u', '-b', base, '-F', 'raw']),
      shallow: true,
      why: /backing format raw is not qcow2/,
    },
    {
      name: 'a host block device as backing (-b /dev/loop0)',
      make: () => qcow2(R('b-dev.qcow2'), ['-u', '-b', '/dev/loop0', '-F', 'qcow2']),
      shallow: true,
      why: /backing file '\/dev\/loop0' .*(is not the disk's backing layer|does not exist)/,
    },
    {
      name: 'an NBD server as backing (nbd://127.0.0.1:PORT/x)',
      make: () => qcow2(R('b-nbd.qcow2'), ['-u', '-b', 'nbd://127.0.0.1:10809/x', '-F', 'qcow2']),
      shallow: true,
      why: /backing file 'nbd:.*not listed in allowedNetworkDestinations/,
    },
    {
      name: 'an NBD server in its other spelling (nbd:host:port)',
      make: () => qcow2(R('b-nbd2.qcow2'), ['-u', '-b', 'nbd:127.0.0.1:10809:exportname=x', '-F', 'qcow2']),
      shallow: true,
      why: /backing file 'nbd:127.*protocol 'nbd' is not allowed/,
    },
    {
      name: 'a json: backing description',
      make: () => qcow2(R('b-json.qcow2'), ['-u', '-b', `json:{"file":{"driver":"file","filename":"${secret}"}}`, '-F', 'qcow2']),
      shallow: true,
      why: /backing file 'json:.*json: description is not allowed/,
    },
    {
      name: "a relative backing name '../' leading outside",
      make: () => qcow2(R('b-rel.qcow2'), ['-u', '-b', outsideRel, '-F', 'qcow2']),
      shallow: true,
      why: /backing file '\.\.\/.*' in the header of .*is not the disk's backing layer/,
    },
    {
      name: 'data_file outside the roots',
      make: async () => {
        const p = await qcow2(R('d-out.qcow2'), ['-o', `data_file=${R('d-out.data')}`]);
        await run('qemu-img', ['amend', '-o', `data_file=${join(outside, 'data.raw')}`, p]);
        return p;
      },
      shallow: false,
      why: /data file '.*data\.raw' in the header of '.*d-out\.qcow2': not under an allowed root/,
    },
    {
      name: "data_file that is another domain's disk",
      make: async () => {
        const p = await qcow2(R('d-other.qcow2'), ['-o', `data_file=${R('d-other.data')}`]);
        await run('qemu-img', ['amend', '-o', `data_file=${other.disks[0]!.path}`, p]);
        return p;
      },
      shallow: false,
      why: /data file '.*disk0\.raw' in the header of .*is the same file as .*a disk, backing file or mirror of a domain/,
    },
    {
      name: 'the external data file bit with no data file named',
      make: async () => {
        const p = await qcow2(R('d-none.qcow2'), ['-o', `data_file=${R('d-none.data')}`]);
        dropDataFileName(p);
        return p;
      },
      shallow: false,
      why: /header of '.*d-none\.qcow2' requires an external data file .* but names none/,
    },
    {
      name: 'an encrypted image',
      // The header field set by hand: qemu-img's LUKS set-up times its key derivation, which
      // fails on a loaded host ("Unable to get accurate CPU usage").
      make: async () => {
        const p = await qcow2(R('enc.qcow2'), []);
        const b = readFileSync(p);
        b.writeUInt32BE(2, 32); // crypt_method: LUKS
        writeFileSync(p, b);
        return p;
      },
      shallow: false,
      why: /enc\.qcow2' is encrypted/,
    },
    {
      name: 'declared qcow2, raw found',
      make: () => hv.createImage(R('raw-as-qcow2.img'), 'raw', 32).then(() => R('raw-as-qcow2.img')),
      shallow: false,
      why: /raw-as-qcow2\.img' is declared qcow2 but its header is not a known image format/,
    },
  ];
  const paths: string[] = [];
  for (const a of attacks) paths.push(await a.make());

  // Everything that must not change: the files outside, every domain's files, the images in the root.
  const watched = [outside, victim.dir, other.dir, root];
  const before = fingerprint(watched, { owner: true });
  const rows: string[] = [];
  for (const [i, a] of attacks.entries()) {
    const params = {
      domain: victim.name,
      disk: 'vda',
      destination: { path: paths[i]!, format: a.format ?? 'qcow2' },
      reuseExternal: true,
      shallow: a.shallow,
      bandwidth: MiB,
    };
    const err = await client.call('blockCopy', params).then(
      async ({ job }) => {
        // Accepted (the unchanged policy did): undo it, so the next attempt starts clean.
        await client.call('abort', { jobId: job.jobId }).catch(() => {});
        await untilState(client, job.jobId, ['cancelled', 'failed']).catch(() => {});
        return null;
      },
      (x) => x as RpcError,
    );
    const reason = String(err?.data?.reason ?? err?.message ?? 'ACCEPTED');
    rows.push(`${a.name.padEnd(66)} → ${err?.errorName ?? 'accepted'}: ${reason}`);
    t.equal(err?.errorName, 'destinationRejected', `${a.name}: ${reason}`);
    t.match(reason, a.why, `${a.name}: the refusal names the header field and the file`);
  }
  t.comment(`\n  image header attacks\n  ${rows.join('\n  ')}`);

  // A group member goes through the same check.
  const gerr = await client
    .call('blockCopyGroup', {
      domain: victim.name,
      disks: [{ disk: 'vda', destination: { path: paths[0]!, format: 'qcow2' }, reuseExternal: true, shallow: true }],
    })
    .then(
      () => null,
      (x) => x as RpcError,
    );
  t.equal(gerr?.errorName, 'destinationRejected', `blockCopyGroup: ${String(gerr?.data?.reason ?? gerr?.message)}`);

  t.notMatch(await hv.liveXml(victim), /<mirror/, 'no copy running');
  t.same(
    [...fingerprint(watched, { owner: true }).entries()].sort(),
    [...before.entries()].sort(),
    'no watched file changed content or owner',
  );
  const audit = readFileSync(auditFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.equal(
    audit.filter((a) => a.method === 'blockCopy' && a.error?.name === 'destinationRejected').length,
    attacks.length,
    'every refusal is audited',
  );
  t.equal(audit.filter((a) => a.method === 'blockCopyGroup' && a.error?.name === 'destinationRejected').length, 1, 'the group refusal too');

  // The legitimate use: a shallow reuse whose backing IS the disk's backing layer, named
  // directly, then through a symbolic link in a root-only directory (the same file).
  symlinkSync(base, R('base-link.qcow2'));
  let from = victim.disks[0]!.path;
  for (const [name, backing] of [
    ['named directly', base],
    ['named by a symbolic link to it', R('base-link.qcow2')],
  ] as const) {
    await t.test(`a shallow reuse onto the disk's own backing file, ${name}, pivots with the data intact`, async (t) => {
      const dest = await qcow2(R(`good-${basename(backing)}`), ['-b', backing, '-F', 'qcow2']);
      const { job } = await client.call('blockCopy', {
        domain: victim.name,
        disk: 'vda',
        destination: { path: dest, format: 'qcow2' },
        reuseExternal: true,
        shallow: true,
        whenReady: 'pivot',
        wait: 'done',
        timeout: 120,
      });
      t.equal(job.state, 'pivoted', `pivoted from ${from}`);
      t.ok(await hv.readPattern(dest, 'qcow2', { pattern: 0x5a, offset: 0, length: 8 * MiB }), "the guest's data is there");
      t.equal(await hv.compareImages(from, dest, ['qcow2', 'qcow2']), 'identical', 'qemu-img compare: the old source and the copy');
      from = dest;
    });
  }
});

t.test('a header changed while the copy waited for a slot is refused when its turn comes', async (t) => {
  const root = hv.scratchDir('imghdr-queue-');
  const outside = hv.scratchDir('imghdr-queue-out-');
  t.teardown(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });
  const secret = join(outside, 'secret.raw');
  await hv.createImage(secret, 'raw', 32);
  const dom = await hv.createDomain(t, {
    disks: [
      { format: 'qcow2', sizeMiB: 128 },
      { format: 'qcow2', sizeMiB: 32, backing: true },
    ],
  });
  await hv.guestWrite(dom, 'vda', { pattern: 0x84, offset: 0, length: 96 * MiB });
  const agent = await serveAgent(t, { config: { allowedRoots: [root], maxConcurrentCopies: 1 } });
  const client = await agent.connect();
  const busy = await client.call('blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: join(root, 'busy.qcow2') },
    bandwidth: MiB,
  });
  const dest = await qcow2(join(root, 'queued.qcow2'), ['-b', dom.disks[1]!.backingPath!, '-F', 'qcow2']);
  const queued = client
    .call('blockCopy', {
      domain: dom.name,
      disk: 'vdb',
      destination: { path: dest, format: 'qcow2' },
      reuseExternal: true,
      shallow: true,
      queue: true,
    })
    .then(
      () => null,
      (x) => x as RpcError,
    );
  let settled = false;
  void queued.finally(() => {
    settled = true;
  });
  await new Promise((r) => setTimeout(r, 1000));
  t.notOk(settled, 'the image passed the check and the copy waits for a slot');
  // While it waits, the image is made to name a file outside the roots.
  await run('qemu-img', ['rebase', '-u', '-b', secret, '-F', 'qcow2', dest]);
  const owner = statSync(secret).uid;
  await client.call('abort', { jobId: busy.job.jobId });
  const err = await queued;
  t.equal(err?.errorName, 'destinationRejected', `refused when its turn came: ${String(err?.data?.reason ?? err?.message)}`);
  t.match(String(err?.data?.reason), /backing file '.*secret\.raw' in the header of '.*queued\.qcow2'/);
  t.notMatch((await hv.liveXml(dom)).replace(/<disk[\s\S]*?vda[\s\S]*?<\/disk>/, ''), /<mirror/, 'no copy of vdb started');
  t.equal(statSync(secret).uid, owner, 'the outside file was not handed to QEMU');
});
