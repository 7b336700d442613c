// Following a started job to ready or to its end, the same way for every verb: Ctrl-C handled
// (a copy still in phase 1 is cancelled; anything else is left as it is, and the caller told),
// and the outcome turned into an exit code when it is not what the caller asked for.
import type { AgentClient } from '../client/index.js';
import type { AnyJob } from '../generated/api.js';
import { isBlockJob } from '../job-types.js';
import { EXIT } from './args.js';
import { closeClient } from './connect.js';
import type { reporter } from './output.js';

type Reporter = ReturnType<typeof reporter>;

/** The job at ready or at its end, or the exit code when it timed out, failed or was cancelled. */
export async function awaitJob<J extends AnyJob>(
  client: AgentClient,
  out: Reporter,
  job: J,
  until: 'ready' | 'done',
  opts: { cancelInPhase1: boolean },
): Promise<{ final: J } | { exit: number }> {
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    void client.call('jobInfo', { jobId: job.jobId }).then(async ({ job: now }) => {
      if (opts.cancelInPhase1 && now.state === 'copying') {
        await client.call('abort', { jobId: job.jobId });
        out.say(`interrupted: cancelled job ${job.jobId}, which was still copying (phase 1); the guest stays on its source`, {
          event: 'interrupted',
          action: 'cancelled',
          jobId: job.jobId,
        });
      } else {
        out.say(`interrupted: job ${job.jobId} is ${now.state}; left as it is`, { event: 'interrupted', action: 'none', job: now });
      }
      await closeClient(client);
      process.exit(EXIT.interrupted);
    });
  };
  process.once('SIGINT', onSigint);
  // The job of that id, so of the same kind.
  const final = (await client.call('wait', { jobId: job.jobId, until })).job as J;
  process.off('SIGINT', onSigint);
  if (interrupted) return new Promise(() => {}); // the handler exits
  if (final.error?.name === 'timeout') {
    out.say(`timeout: ${final.error.message}`, { event: 'timeout', job: final });
    return { exit: EXIT.timeout };
  }
  if (final.state === 'failed' || final.state === 'cancelled') {
    out.say(`${final.state}: ${final.error?.message ?? (isBlockJob(final) ? final.evidence : final.error?.evidence) ?? ''}`, {
      event: final.state,
      job: final,
    });
    return { exit: EXIT.agentError };
  }
  return { final };
}
