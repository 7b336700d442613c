// What the transports and the RPC layer report to the metrics, and nothing else: they import
// only these types (no prom-client), and an agent without metrics passes no observer at all.

/** Requests and connections refused before or instead of running, by why. */
export const REFUSAL_KINDS = [
  'authFailed', // a WebSocket upgrade without valid credentials (401)
  'connectionLimit', // the listener's connection limit was reached (503)
  'rateLimited', // a request beyond the connection's rate
  'oversizedFrame', // a WebSocket frame or a stdio/socket line above maxPayloadBytes
  'unauthorized', // a read-only principal called a mutating method
  'destinationRejected', // blockCopy to a destination the policy refuses
  'tooManyPending', // a call beyond its connection's pending-call budget
] as const;
export type RefusalKind = (typeof REFUSAL_KINDS)[number];

export interface RpcObserver {
  /** One finished method call; `error` is the error's stable name, absent on success. */
  call(method: string, seconds: number, error?: string): void;
  /** A call refused before it ran (the rate limit). */
  refused?(kind: RefusalKind): void;
}

export interface RefusalObserver {
  refused(kind: RefusalKind): void;
}
