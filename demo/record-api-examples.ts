// Records one real request/response for every method against the real agent and libvirtd,
// and writes them into docs/api.md between the api-examples markers (npm run docs:api).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AgentClient, RpcError } from '../src/client/index.js';
import type { MethodName, Methods } from '../src/client/methods.js';
import * as hv from '../harness/hypervisor.js';
import { serveAgent } from '../harness/agent.js';

const MiB = 1024 * 1024;
const cleanups: Array<() => unknown> = [];
const host: hv.TeardownHost = { teardown: (fn) => cleanups.push(fn) };
const sections: string[] = [];
let id = 1;

async function record<M extends MethodName>(
  client: AgentClient,
  title: string,
  method: M,
  params: Methods[M][0],
  note = '',
): Promise<Methods[M][1] | undefined> {
  const request = { jsonrpc: '2.0', id: id++, method, params };
  let response: unknown;
  let result: Methods[M][1] | undefined;
  try {
    result = await client.call(method, params);
    response = { jsonrpc: '2.0', id: request.id, result };
  } catch (e) {
    const err = e as RpcError;
    response = { jsonrpc: '2.0', id: request.id, error: { code: err.code, message: err.message, data: err.data } };
  }
  const shorten = (v: unknown) => JSON.stringify(v, (k, val) => (k === 'components' ? '…' : val));
  sections.push(
    `### ${title}\n${note ? note + '\n' : ''}\n\`\`\`json\n${shorten(request)}\n\`\`\`\n\`\`\`json\n${shorten(response)}\n\`\`\`\n`,
  );
  return result;
}

async function main(): Promise<void> {
  const agent = await serveAgent(host);
  const client = await agent.connect();
  cleanups.push(() => client.close());
  const dom = await hv.createDomain(host, {
    disks: [
      { format: 'qcow2', sizeMiB: 256 },
      { format: 'raw', sizeMiB: 64 },
    ],
  });
  await hv.guestWrite(dom, 'vda', { pattern: 0x5a, offset: 0, length: 128 * MiB });
  const notes: string[] = [];
  client.on('frame', (f: string) => {
    if (f.includes('"job.changed"') && notes.length < 1) notes.push(f);
  });

  await record(client, 'capabilities', 'capabilities', {});
  await record(client, 'subscribe', 'subscribe', { domain: dom.name });
  const started = await record(client, 'blockCopy', 'blockCopy', {
    domain: dom.name,
    disk: 'vda',
    destination: { path: `${dom.dir}/vda-new.qcow2`, format: 'qcow2' },
    bandwidth: 64 * MiB,
    jobId: 'move-vda',
  });
  await new Promise((r) => setTimeout(r, 1500));
  await record(client, "jobInfo (phase 1: progress, rate and ETA from the agent's own samples)", 'jobInfo', { jobId: 'move-vda' });
  await record(client, 'setSpeed', 'setSpeed', { jobId: 'move-vda', bandwidth: 0 });
  await record(client, 'wait', 'wait', { jobId: 'move-vda', until: 'ready', timeout: 60 });
  await record(client, 'listJobs', 'listJobs', { domain: dom.name, state: ['ready'] });
  await record(client, 'pivot', 'pivot', { jobId: 'move-vda' });
  await record(client, 'pivot again (idempotent)', 'pivot', { jobId: 'move-vda' });
  sections.push(`### job.changed notification\n\n\`\`\`json\n${notes[0] ?? '{}'}\n\`\`\`\n`);
  await record(client, 'blockCopy with whenReady: finish and wait: done (a point-in-time copy in one call)', 'blockCopy', {
    domain: dom.name,
    disk: 'vdb',
    destination: { path: `${dom.dir}/vdb-backup.raw`, format: 'raw' },
    whenReady: 'finish',
    wait: 'done',
  });
  const slow = await client.call('blockCopy', {
    domain: dom.uuid,
    disk: 'vdb',
    destination: { path: `${dom.dir}/vdb-abort.raw` },
    bandwidth: MiB,
  });
  await record(client, 'abort', 'abort', { jobId: slow.job.jobId });
  const again = await client.call('blockCopy', {
    domain: dom.uuid,
    disk: 'vdb',
    destination: { path: `${dom.dir}/vdb-fin.raw` },
    wait: 'ready',
  });
  await record(client, 'finish', 'finish', { jobId: again.job.jobId });
  const db = await hv.createDomain(host, {
    disks: [
      { format: 'raw', sizeMiB: 64 },
      { format: 'raw', sizeMiB: 64 },
    ],
  });
  await record(client, 'blockCopyGroup (two disks of one VM; answers once both are ready)', 'blockCopyGroup', {
    domain: db.name,
    groupId: 'db1-move',
    wait: 'ready',
    disks: [
      { disk: 'vda', destination: { path: `${db.dir}/vda-new.raw`, format: 'raw' } },
      { disk: 'vdb', destination: { path: `${db.dir}/vdb-new.raw`, format: 'raw' } },
    ],
  });
  await record(client, 'groupInfo', 'groupInfo', { groupId: 'db1-move' });
  await record(client, 'pivotGroup (one guest pause for both disks)', 'pivotGroup', { groupId: 'db1-move' });
  await client.call('blockCopyGroup', {
    domain: db.name,
    groupId: 'db1-slow',
    disks: [{ disk: 'vda', destination: { path: `${db.dir}/vda-back.raw` }, bandwidth: MiB }],
  });
  await record(client, 'abortGroup', 'abortGroup', { groupId: 'db1-slow' });
  await record(client, 'an error: pivot with no job', 'pivot', { domain: dom.name, disk: 'vdc' } as never);
  await record(client, 'an error: invalid params', 'blockCopy', { domain: dom.name, disk: 'vda', destination: { path: 'relative.qcow2' } });
  await record(client, 'unsubscribe', 'unsubscribe', {});
  void started;

  const readme = fileURLToPath(new URL('../../docs/api.md', import.meta.url));
  const text = readFileSync(readme, 'utf8');
  const begin = '<!-- api-examples:begin -->';
  const end = '<!-- api-examples:end -->';
  const body = `${begin}\n_Recorded from a real run on ${new Date().toISOString().slice(0, 10)} (libvirt ${(await client.call('capabilities', {})).libvirt.version}) by \`npm run docs:api\`; paths and UUIDs are those of the throwaway VM._\n\n${sections.join('\n')}\n### rpc.discover\n\nThe whole document is [openrpc.json](openrpc.json) (generated by \`npm run build\`).\n\n${end}`;
  writeFileSync(readme, text.includes(begin) ? text.replace(new RegExp(`${begin}[\\s\\S]*${end}`), body) : `${text}\n${body}\n`);
  console.log(`recorded ${sections.length} examples into docs/api.md`);
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const fn of cleanups.reverse())
      await Promise.resolve()
        .then(fn)
        .catch(() => {});
  });
