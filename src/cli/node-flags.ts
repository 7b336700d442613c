// V8 flags the long-running agent (`serve`) runs with, here and in systemd/blockcopy-agent.service.
// A 1 MiB young-generation semi-space (V8's default grows to 16 MiB) keeps the heap small under
// a stream of small JSON-RPC calls: measured with bench/suites/control-plane.ts, RSS drops by
// 15–25 MiB at 1–50 clients, at the cost of ~5 % calls/s (still three times the target).
export const NODE_FLAGS = ['--max-semi-space-size=1'] as const;
