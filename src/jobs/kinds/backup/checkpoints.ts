// A domain's checkpoints (the dirty bitmaps incrementals are taken against): the list, and
// retention (delete the oldest so that the newest `keep` remain). libvirt merges a deleted
// checkpoint's bitmaps into its child's, so the incrementals since later checkpoints stay valid.
import type { CheckpointsParams, CheckpointsResult, DeleteCheckpointsParams, DeleteCheckpointsResult } from '../../../generated/api.js';
import type { Connection } from '../../../libvirt/index.js';
import type { Logger } from '../../../log.js';
import { lookupDomain, toAgentError } from '../../libvirt-errors.js';
import { checkpointFacts } from './xml.js';

export async function listCheckpoints(
  conn: Connection,
  params: CheckpointsParams,
  manages: (name: string) => boolean,
): Promise<CheckpointsResult> {
  const dom = await lookupDomain(conn, params.domain, manages);
  const list = await conn.listCheckpoints(dom.uuid).catch((e: unknown) => {
    throw toAgentError(e, "cannot list the domain's checkpoints");
  });
  const out = list.map((c) => ({ name: c.name, parent: c.parent, ...checkpointFacts(c.xml) }));
  // Oldest first: by creation time, parents before children among equal times (libvirt's order).
  const order = new Map(out.map((c, i) => [c.name, i]));
  out.sort((a, b) => (a.createdAt ?? '').localeCompare(b.createdAt ?? '') || order.get(a.name)! - order.get(b.name)!);
  return { checkpoints: out };
}

export async function deleteCheckpoints(
  conn: Connection,
  params: DeleteCheckpointsParams,
  assertNoBackup: (uuid: string, name: string) => Promise<void>,
  log: Logger,
  manages: (name: string) => boolean,
): Promise<DeleteCheckpointsResult> {
  const dom = await lookupDomain(conn, params.domain, manages);
  await assertNoBackup(dom.uuid, dom.name);
  const { checkpoints } = await listCheckpoints(conn, { domain: dom.uuid }, manages);
  const cut = Math.max(0, checkpoints.length - params.keep);
  const deleted: string[] = [];
  for (const c of checkpoints.slice(0, cut)) {
    await conn.checkpointDelete(dom.uuid, c.name).catch((e: unknown) => {
      throw toAgentError(e, `cannot delete checkpoint '${c.name}' (deleted before it: ${deleted.join(', ') || 'none'})`);
    });
    deleted.push(c.name);
    log.info('checkpoint deleted', { domain: dom.name, checkpoint: c.name });
  }
  return { deleted, kept: checkpoints.slice(cut).map((c) => c.name) };
}
