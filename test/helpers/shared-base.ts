// A second domain sharing a base image: defined (stopped), its vda an overlay on `base`, so
// that the base belongs to two VMs and must outlive any removal of the first VM's old files.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as hv from '../../harness/hypervisor.js';

const run = promisify(execFile);

/** Defines the domain (undefined at teardown) and returns its name. */
export async function otherDomainOn(t: hv.TeardownHost, base: string, dir: string): Promise<string> {
  const name = `${hv.PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`;
  const overlay = join(dir, `${name}-overlay.qcow2`);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, overlay]);
  const xmlPath = join(dir, `${name}.xml`);
  writeFileSync(
    xmlPath,
    `<domain type='${hv.domainType()}'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>` +
      `<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><disk type='file' device='disk'>` +
      `<driver name='qemu' type='qcow2'/><source file='${overlay}'/><target dev='vda' bus='virtio'/></disk></devices></domain>`,
  );
  await hv.virsh('define', xmlPath);
  t.teardown(() => hv.virsh('undefine', name).catch(() => {}));
  return name;
}
