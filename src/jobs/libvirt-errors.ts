// Turns libvirt failures into the agent's stable error names, keeping libvirt's own code,
// domain and message in data.libvirt so nothing libvirt said is lost.
import { AgentError, type ErrorName } from '../errors.js';
import { LibvirtBusy, LibvirtError, LibvirtTimeout, VirErrorCode } from '../libvirt/index.js';

export function libvirtData(e: LibvirtError) {
  return { code: e.code, domain: e.domain, message: e.libvirtMessage };
}

export function isNotReady(e: unknown): boolean {
  return e instanceof LibvirtError && e.code === VirErrorCode.BLOCK_COPY_ACTIVE && /not ready/i.test(e.message);
}

export function isNoJob(e: unknown): boolean {
  return e instanceof LibvirtError && (e.code === VirErrorCode.INVALID_ARG || e.code === VirErrorCode.OPERATION_INVALID) &&
    /no(t have an)? active block job|no active block job/i.test(e.message);
}

/**
 * The call failed because the connection to libvirtd went away (libvirtd restarted, socket
 * closed): whether it reached libvirt is unknown, so only a reconcile can tell what happened.
 */
export function isConnectionLost(e: unknown): boolean {
  if (!(e instanceof LibvirtError)) return false;
  // libvirtd did not answer in time: as unknown as a dropped connection (a busy refusal was never sent).
  if (e instanceof LibvirtTimeout) return true;
  if (e instanceof LibvirtBusy) return false;
  if (e.code === VirErrorCode.NO_CONNECT || e.code === VirErrorCode.INVALID_CONN || e.code === VirErrorCode.RPC) return true;
  return /end of file while reading data|client socket is closed|connection (reset|closed)|broken pipe/i.test(e.message);
}

/** Maps a libvirt failure to an AgentError; anything else is passed through unchanged. */
export function toAgentError(e: unknown, what: string): unknown {
  if (!(e instanceof LibvirtError)) return e;
  let name: ErrorName = 'libvirtError';
  if (e instanceof LibvirtTimeout) name = 'libvirtTimeout';
  else if (e instanceof LibvirtBusy) name = 'libvirtBusy';
  else if (e.code === VirErrorCode.NO_DOMAIN) name = 'notFound';
  else if (e.code === VirErrorCode.INVALID_ARG && /not found/i.test(e.message)) name = 'notFound';
  else if (isNotReady(e)) name = 'notReady';
  else if (e.code === VirErrorCode.BLOCK_COPY_ACTIVE) name = 'jobExists';
  else if (e.code === VirErrorCode.OPERATION_INVALID && /not running/i.test(e.message)) name = 'invalidState';
  // libvirt 9 copies a persistent domain's disk only as a transient job.
  else if (e.code === VirErrorCode.OPERATION_INVALID && /not transient/i.test(e.message)) name = 'unsupported';
  else if (isConnectionLost(e)) name = 'unavailable';
  return new AgentError(name, `${what}: ${e.message}`, { libvirt: libvirtData(e) });
}
