// libvirt failures as JS errors. The binding rejects with plain Errors carrying
// code/domain/message; the facade rewraps them as LibvirtError so callers can use instanceof.

/** A subset of virErrorNumber that the agent branches on. */
export const VirErrorCode = {
  OK: 0,
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  NO_CONNECT: 5,
  INVALID_CONN: 6,
  OPERATION_FAILED: 9,
  INVALID_ARG: 8,
  OPERATION_DENIED: 29,
  AUTH_FAILED: 45,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  OPERATION_INVALID: 55,
  OPERATION_TIMEOUT: 68,
  CONFIG_UNSUPPORTED: 67,
  BLOCK_COPY_ACTIVE: 83,
  OVERFLOW: 82,
  ARGUMENT_UNSUPPORTED: 74,
  OPERATION_UNSUPPORTED: 84,
  AGENT_UNRESPONSIVE: 86,
  NO_DOMAIN_METADATA: 80,
  NO_STORAGE_POOL: 49,
  NO_STORAGE_VOL: 50,
  NO_DOMAIN_CHECKPOINT: 103,
  NO_DOMAIN_BACKUP: 104,
} as const;

export class LibvirtError extends Error {
  override readonly name: string = 'LibvirtError';
  /** virErrorNumber */
  readonly code: number;
  /** virErrorDomain */
  readonly domain: number;
  /** libvirt's own message, unchanged */
  readonly libvirtMessage: string;

  constructor(code: number, domain: number, message: string) {
    super(message);
    this.code = code;
    this.domain = domain;
    this.libvirtMessage = message;
  }

  toJSON(): { code: number; domain: number; message: string } {
    return { code: this.code, domain: this.domain, message: this.libvirtMessage };
  }
}

/**
 * libvirtd did not answer within the call's bound (hung or overloaded). The call may still
 * take effect later: only a fresh look (or the reconcile after a reconnect) tells. Retryable.
 */
export class LibvirtTimeout extends LibvirtError {
  override readonly name: string = 'LibvirtTimeout';
  constructor(message: string) {
    super(VirErrorCode.OPERATION_TIMEOUT, 0, message);
  }
}

/**
 * This call was never sent: too many calls already wait for libvirtd on this connection, or
 * (`queued`) it waited past its queue bound behind an earlier call on the same domain that
 * libvirtd has not answered (that domain is slow, not libvirtd). Retryable.
 */
export class LibvirtBusy extends LibvirtError {
  override readonly name: string = 'LibvirtBusy';
  constructor(
    message: string,
    readonly queued = false,
  ) {
    super(VirErrorCode.OPERATION_TIMEOUT, 0, message);
  }
}
