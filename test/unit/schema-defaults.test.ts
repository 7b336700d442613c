// A default written once on a def applies wherever a property refers to that def: the
// handlers receive it filled in, so the code needs no fallback of its own.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULTS } from '../../src/generated/api.js';
import { SCHEMA_BASE, SchemaSet, SCHEMAS_DIR } from '../../src/schemas.js';

const def = (name: string) => JSON.parse(readFileSync(join(SCHEMAS_DIR, 'defs', name), 'utf8')).default;

t.test('defaults of referenced defs are filled in by validation', async (t) => {
  const schemas = new SchemaSet();
  for (const method of ['pivotGroup', 'finishGroup']) {
    const params: Record<string, unknown> = { groupId: 'g1' };
    t.ok(schemas.validator(`methods/${method}.params.json`)(params), `${method}: valid`);
    t.equal(params.maxPause, def('max-pause.json'), `${method}: maxPause from defs/max-pause.json`);
    t.equal(params.freeze, def('freeze-mode.json'), `${method}: freeze from defs/freeze-mode.json`);
  }
  const given: Record<string, unknown> = { groupId: 'g1', maxPause: 2 };
  schemas.validator('methods/pivotGroup.params.json')(given);
  t.equal(given.maxPause, 2, 'a value given is kept');
});

// DEFAULTS (generated from the schemas) is what code that builds params itself falls back to:
// it must be exactly what validation fills in on the wire, for every method and group disk.
t.test('generated DEFAULTS match what validation fills in', async (t) => {
  const schemas = new SchemaSet();
  const minimal: Record<string, Record<string, unknown>> = {
    BlockCopyParams: { domain: 'd', disk: 'vda', destination: { path: '/var/lib/libvirt/images/x.img' } },
    BlockCopyGroupParams: { domain: 'd', disks: [{ disk: 'vda', destination: { path: '/var/lib/libvirt/images/x.img' } }] },
    BlockCommitParams: { domain: 'd', disk: 'vda' },
    BlockPullParams: { domain: 'd', disk: 'vda' },
    PivotParams: { jobId: 'j' },
    FinishParams: { jobId: 'j' },
    ListJobsParams: {},
    PivotGroupParams: { groupId: 'g' },
    FinishGroupParams: { groupId: 'g' },
    SnapshotDisksParams: { domain: 'd', disks: [{ disk: 'vda', overlay: { path: '/var/lib/libvirt/images/o.qcow2' } }] },
    BackupParams: { domain: 'd', target: { dir: '/var/lib/libvirt/images' } },
    BackupInfoParams: { jobId: 'b1' },
    Overlay: { path: '/var/lib/libvirt/images/o.qcow2' },
  };
  const pathOf = new Map([...schemas.byId.values()].map((s) => [s.title, s.$id.slice(SCHEMA_BASE.length)]));
  for (const [title, defaults] of Object.entries(DEFAULTS) as Array<[string, Record<string, unknown>]>) {
    if (title === 'AgentConfig' || title === 'Destination' || title === 'GroupDisk') continue;
    const params = structuredClone(minimal[title]);
    t.ok(params, `${title}: a minimal call is listed here`);
    if (!params) continue;
    t.ok(schemas.validator(pathOf.get(title)!)(params), `${title}: minimal params valid`);
    for (const [k, v] of Object.entries(defaults)) t.same(params[k], v, `${title}.${k} filled in as ${JSON.stringify(v)}`);
  }
  const group = structuredClone(minimal.BlockCopyGroupParams!) as { disks: Array<Record<string, unknown>> };
  schemas.validator('methods/blockCopyGroup.params.json')(group);
  for (const [k, v] of Object.entries(DEFAULTS.GroupDisk)) t.same(group.disks[0]![k], v, `GroupDisk.${k} filled in`);
  t.same((group.disks[0]!.destination as Record<string, unknown>).type, DEFAULTS.Destination.type, 'Destination.type filled in');
});

t.test('generated DEFAULTS match the config defaults applied to an empty config', async (t) => {
  const schemas = new SchemaSet();
  const config: Record<string, unknown> = {};
  t.ok(schemas.validator('config.schema.json')(config), 'empty config valid');
  t.same(config, DEFAULTS.AgentConfig, 'every config default, nested ones included');
});
