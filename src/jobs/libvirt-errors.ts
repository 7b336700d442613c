// Turns libvirt failures into the agent's stable error names, keeping libvirt's own code,
// domain and message in data.libvirt so nothing libvirt said is lost.
import { AgentError, type ErrorName } from '../errors.js';
import { LibvirtBusy, LibvirtError, LibvirtTimeout, VirErrorCode, type Connection, type DomainRef } from '../libvirt/index.js';

export function libvirtData(e: LibvirtError) {
  return { code: e.code, domain: e.domain, message: e.libvirtMessage };
}

export function isNotReady(e: unknown): boolean {
  return e instanceof LibvirtError && e.code === VirErrorCode.BLOCK_COPY_ACTIVE && /not ready/i.test(e.message);
}

export function isNoJob(e: unknown): boolean {
  return (
    e instanceof LibvirtError &&
    (e.code === VirErrorCode.INVALID_ARG || e.code === VirErrorCode.OPERATION_INVALID) &&
    /no(t have an)? active block job|no active block job/i.test(e.message)
  );
}

/**
 * The call failed because the connection to libvirtd went away (libvirtd restarted, socket
 * closed): whether it reached libvirt is unknown, so only a reconcile can tell what happened.
 */
export function isConnectionLost(e: unknown): boolean {
  if (!(e instanceof LibvirtError) || e instanceof LibvirtTimeout || e instanceof LibvirtBusy) return false;
  if (e.code === VirErrorCode.NO_CONNECT || e.code === VirErrorCode.INVALID_CONN || e.code === VirErrorCode.RPC) return true;
  return /end of file while reading data|client socket is closed|connection (reset|closed)|broken pipe/i.test(e.message);
}

/**
 * Whether a request reached libvirt is unknown: libvirtd did not answer within the call bound
 * (it may still act on it), or the connection dropped under it. (A busy refusal was never sent.)
 */
export function isOutcomeUnknown(e: unknown): boolean {
  return e instanceof LibvirtTimeout || isConnectionLost(e);
}

/** libvirtd did not answer (timed out, too many calls waiting, connection gone), raw or as mapped by toAgentError. */
export function isUnanswered(e: unknown): boolean {
  if (e instanceof AgentError) return e.errorName === 'libvirtTimeout' || e.errorName === 'libvirtBusy' || e.errorName === 'unavailable';
  return e instanceof LibvirtBusy || isOutcomeUnknown(e);
}

/** The domain is gone or stopped: nothing of it to read (not a failure to read it). */
export function isDomainGone(e: unknown): e is LibvirtError {
  return (
    e instanceof LibvirtError &&
    (e.code === VirErrorCode.NO_DOMAIN || (e.code === VirErrorCode.OPERATION_INVALID && /not running/i.test(e.message)))
  );
}

/**
 * The answer to a request whose outcome is unknown (isOutcomeUnknown), named for what happened:
 * `libvirtTimeout` when the call timed out, `unavailable` when the connection dropped; both
 * retryable, with libvirt's own code and message in data.libvirt and what will settle it.
 */
export function outcomeUnknown(e: unknown, request: string, settles: string, data: Record<string, unknown> = {}): AgentError {
  const lv = e instanceof LibvirtError ? { libvirt: libvirtData(e) } : {};
  if (e instanceof LibvirtTimeout) {
    return new AgentError(
      'libvirtTimeout',
      `libvirtd did not answer the ${request} in time (${e.message}); whether it took effect is unknown: ${settles}`,
      { ...data, ...lv },
    );
  }
  const said = e instanceof Error ? ` (${e.message})` : '';
  return new AgentError(
    'unavailable',
    `the libvirt connection dropped during the ${request}${said}; whether it took effect is unknown: ${settles}`,
    { ...data, ...lv },
  );
}

/** What went wrong, for logs: the two ways a request can be left without an answer. */
export function unansweredWhy(e: unknown): string {
  return e instanceof LibvirtTimeout ? 'libvirtd did not answer the request in time' : 'the libvirt connection dropped during the request';
}

/**
 * The agent's stable name for a libvirt failure: the one table every mapping goes through
 * (toAgentError). libvirtd's silence keeps its own retryable names (libvirtTimeout,
 * libvirtBusy, unavailable) whatever the call was; only libvirt's "no such domain" (and a disk
 * it does not find) is notFound.
 */
function errorNameOf(e: LibvirtError, refused?: ErrorName): ErrorName {
  if (e instanceof LibvirtTimeout) return 'libvirtTimeout';
  if (e instanceof LibvirtBusy) return 'libvirtBusy';
  if (isConnectionLost(e)) return 'unavailable';
  if (refused) return refused;
  if (e.code === VirErrorCode.NO_DOMAIN) return 'notFound';
  if (e.code === VirErrorCode.INVALID_ARG && /not found/i.test(e.message)) return 'notFound';
  if (isNotReady(e)) return 'notReady';
  if (e.code === VirErrorCode.BLOCK_COPY_ACTIVE) return 'jobExists';
  if (e.code === VirErrorCode.OPERATION_INVALID && /not running/i.test(e.message)) return 'invalidState';
  // libvirt 9 copies a persistent domain's disk only as a transient job.
  if (e.code === VirErrorCode.OPERATION_INVALID && /not transient/i.test(e.message)) return 'unsupported';
  return 'libvirtError';
}

/** How a caller's failure is named beyond libvirt's own table. */
export interface Mapping {
  /**
   * The name of every libvirt failure other than libvirtd's silence (no answer in time, too
   * busy, connection dropped), instead of the one its code gives (e.g. inventoryIncomplete).
   */
  refused?: ErrorName;
  /** The name of a failure that is not libvirt's (an AgentError always passes through); by default it passes through unchanged. */
  other?: ErrorName;
}

/**
 * Maps a libvirt failure to an AgentError named by the one table above, with libvirt's own code,
 * domain and message in data.libvirt; `what` (what could not be done) prefixes the message. An
 * AgentError passes through unchanged; anything else too, unless `m.other` names it.
 */
export function toAgentError(e: unknown, what: string | undefined, m: Mapping & { other: ErrorName }): AgentError;
export function toAgentError(e: unknown, what?: string, m?: Mapping): unknown;
export function toAgentError(e: unknown, what?: string, m: Mapping = {}): unknown {
  const said = (msg: string) => (what ? `${what}: ${msg}` : msg);
  if (e instanceof LibvirtError) return new AgentError(errorNameOf(e, m.refused), said(e.message), { libvirt: libvirtData(e) });
  if (e instanceof AgentError || !m.other) return e;
  return new AgentError(m.other, said(e instanceof Error ? e.message : String(e)));
}

/**
 * The domain a caller named (a name or a UUID): the one lookup every call of the job layer makes.
 * A domain this agent does not manage (config `domains`) is notFound, as if on another host.
 */
export async function lookupDomain(
  conn: Pick<Connection, 'lookupDomain'>,
  key: string,
  manages: (name: string) => boolean,
): Promise<DomainRef> {
  let dom: DomainRef;
  try {
    dom = await conn.lookupDomain(key);
  } catch (e) {
    throw lookupError(e, key);
  }
  if (!manages(dom.name)) throw new AgentError('notFound', `no domain '${key}' among this agent's domains (config domains)`);
  return dom;
}

/** A failed lookup of the domain a caller named: notFound only when libvirt knows no such domain. */
export function lookupError(e: unknown, key: string): unknown {
  if (e instanceof LibvirtError && e.code === VirErrorCode.NO_DOMAIN)
    return new AgentError('notFound', `no domain '${key}'`, { libvirt: libvirtData(e) });
  return toAgentError(e, `cannot look up domain '${key}'`);
}
