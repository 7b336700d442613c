// The CLI verbs (`call` and the friendly ones, like virsh blockcopy/blockjob) on top of the
// client library (src/client/), shared by the agent's CLI (main.ts) and the client package's
// (client-main.ts) and loading nothing of the agent; talking to the local agent (its unix socket when it serves one;
// else a spawned `blockcopy-agent stdio`, which relays to a running daemon) or to a remote one
// (--url, --token-file or BLOCKCOPY_TOKEN, --ca).
import { parseArgs } from 'node:util';
import { AgentClient, RpcError } from '../client/index.js';
import type { AnyJob, ListJobsParams } from '../generated/api.js';
import { isBlockJob } from '../job-types.js';
import type { MethodName } from '../client/methods.js';
import { bandwidthArg, bandwidthOption, EXIT, jobRef, num, OPTIONS, UsageError, type Values } from './args.js';
import { bearerToken, closeClient, connect, type LocalAgent } from './connect.js';
import { commit, pull, snapshot } from './chain.js';
import { copy, copyGroup } from './copy.js';
import { move } from './move.js';
import { backup, backupArgv, backupLine, checkpoints } from './backup.js';
import { jsonLines, reporter } from './output.js';

/** The client verbs: main.ts dispatches these here, and the switch below must handle each
 *  (a verb added here without a case, or a case for no verb, does not compile). */
export const CLIENT_COMMANDS = [
  'copy',
  'info',
  'pivot',
  'finish',
  'abort',
  'jobs',
  'watch',
  'call',
  'copy-group',
  'move',
  'group',
  'pivot-group',
  'finish-group',
  'abort-group',
  'snapshot',
  'commit',
  'pull',
  'set-speed',
  'backup',
  'checkpoints',
] as const;
export type ClientCommand = (typeof CLIENT_COMMANDS)[number];
export const isClientCommand = (word: string | undefined): word is ClientCommand =>
  (CLIENT_COMMANDS as readonly string[]).includes(word ?? '');

/** The program the verbs run in: the name its messages and help carry, and the local agent
 *  to spawn when no socket answers (connect.ts). */
export interface ClientHost {
  program: string;
  localAgent: LocalAgent;
}

// Laid out as GNU tools lay out options (a command line, then its text indented to one column),
// which help2man turns into blockcopy-agent(8)'s tagged paragraphs.
export const clientHelp = (p: string): string => `Client commands of ${p} (talk to the agent on this host, or --url a remote one):
  copy DOMAIN DISK DEST [options]
                         copy a running disk to DEST; options: --format raw|qcow2, --type file|block,
                         --bandwidth MIB/S, --shallow, --reuse-external, --transient-job,
                         --synchronous-writes, --granularity BYTES, --buf-size BYTES, --job-id ID,
                         --wait, --pivot [--remove-source] | --finish, --timeout SECONDS
  snapshot DOMAIN --diskspec DISK,file=OVERLAY... [--quiesce required|try]
                         external disk-only snapshot of the listed disks only
  commit DOMAIN DISK [options]
                         commit layers down the chain; options: --top PATH|DISK[N] | --active,
                         --base PATH|DISK[N] | --shallow, --wait, --pivot | --keep-overlay, --verbose,
                         --bandwidth MIB/S, --timeout SECONDS, --job-id ID
  pull DOMAIN DISK [options]
                         pull backing layers into the active one; options: --base PATH|DISK[N],
                         --wait, --verbose, --bandwidth MIB/S, --timeout SECONDS, --job-id ID
  info DOMAIN DISK | --job ID
                         a disk's job, or a job by id
  set-speed JOB_ID BW | DOMAIN DISK BW [--bytes]
                         change a running job's bandwidth (or --job ID, --bandwidth BW; virsh
                         blockjob --bandwidth)
  pivot|finish|abort DOMAIN DISK | --job ID
                         end any job (copy, commit, pull); pivot --remove-source deletes the old
                         files no domain uses any more (a copy's removeSource)
  jobs [DOMAIN] [--kind copy|activeCommit|commit|pull|backup]...
                         list jobs
  watch [DOMAIN] [--job ID]
                         print job changes until Ctrl-C
  call METHOD [--params JSON]
                         any method, params as JSON
  copy-group DOMAIN DISK=DEST... [options]
                         several disks ready together, switched in one guest pause; options:
                         --format raw|qcow2, --bandwidth MIB/S, --group-id ID, --wait,
                         --pivot [--remove-source] | --finish, --timeout SECONDS, --max-pause SECONDS
  move DOMAIN (--dir PATH | --pool NAME) [options]
                         every disk (or --disks vda,vdb) to a directory or pool, one group, named
                         DOMAIN-DISK.FORMAT, each in its format unless --format; options:
                         --disks, --format raw|qcow2, --dry-run, --bandwidth MIB/S, --wait,
                         --pivot [--remove-source] | --finish, --timeout SECONDS, --max-pause SECONDS,
                         --group-id ID
  backup DOMAIN (--dir PATH | --pool NAME) [options]
                         push-mode backup of every disk (or --disks vda,vdb) at one moment
                         (docs/backups.md); options: --format qcow2|raw, --incremental [NAME],
                         --checkpoint [NAME], --quiesce required|try, --checksum sha256|none,
                         --wait, --verbose, --timeout SECONDS, --job-id ID
  checkpoints DOMAIN [--keep N]
                         list checkpoints; --keep N deletes all but the newest N
  group ID               a group and its jobs
  pivot-group|finish-group|abort-group ID [--max-pause SECONDS]
                         end a group's jobs in one guest pause (pivot-group: --remove-source too)

Bandwidth as virsh: --bandwidth 100 is 100 MiB/s; a suffix names the unit (512K, 100M, 1G, 1GiB;
KB, MB, GB are powers of 1000); --bytes makes a bare number bytes/s; 0 is unlimited.

Connection: --url ws(s)://HOST:PORT [--token-file PATH | BLOCKCOPY_TOKEN] [--ca FILE]
[--cert FILE --key FILE] (a client certificate, for an agent that asks for one; --token TOKEN
still works but shows the token to every user in /proc, and warns); without --url the
command connects to the local agent's unix socket (--socket PATH | BLOCKCOPY_SOCKET, else the one
the agent owning --state-dir serves; root only), or else runs 'blockcopy-agent stdio'.

Output: a progress bar on a terminal; with --json, or when not a terminal, one JSON document per line.

Like virsh: --wait waits for ready, --pivot/--finish then pivot or finish, --timeout cancels the
copy on expiry. Ctrl-C during phase 1 cancels the copy (and says so); later it leaves it running.

commit and pull, like virsh blockcommit/blockpull: without --top the active layer is committed
(--active says so; it reaches ready, then --pivot moves the guest down onto the base and
--keep-overlay finishes, leaving it on the overlay); --wait waits for ready (active commit) or the
end; --verbose shows the progress bar (JSON lines always carry it); Ctrl-C leaves the job running.

Exit codes: 0 ok, 1 the agent refused (error name on stderr), 2 usage, 3 no connection,
4 timeout, 130 interrupted.`;

export const CLIENT_HELP = clientHelp('blockcopy-agent');

async function watch(client: AgentClient, v: Values, pos: string[]): Promise<number> {
  const out = reporter(true); // a stream of changes: JSON lines even on a terminal
  client.on('job.changed', (j: AnyJob) => (isBlockJob(j) ? out.job(j) : out.say(backupLine(j), { event: 'job.changed', job: j })));
  await client.call('subscribe', { ...(v.job ? { jobIds: [v.job] } : {}), ...(pos[0] ? { domain: pos[0] } : {}) });
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    client.once('close', resolve);
  });
  return EXIT.ok;
}

/** Runs the verb, then exits with its code once stdout is flushed. */
export async function exitWithClientCommand(command: ClientCommand, argv: string[], host: ClientHost): Promise<never> {
  const code = await runClientCommand(command, argv, host);
  await new Promise<void>((r) => process.stdout.write('', () => r()));
  process.exit(code);
}

export async function runClientCommand(command: ClientCommand, argv: string[], host: ClientHost): Promise<number> {
  const help = clientHelp(host.program);
  let parsed;
  try {
    parsed = parseArgs({ args: command === 'backup' ? backupArgv(argv) : argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    process.stderr.write(`${host.program}: ${(e as Error).message}\n\n${help}\n`);
    return EXIT.usage;
  }
  const { values: v, positionals: pos } = parsed;
  if (v.help) {
    process.stdout.write(help + '\n');
    return EXIT.ok;
  }
  let client: AgentClient | null = null;
  try {
    // Check the words before connecting, so that usage errors never start anything.
    const plan = (): (() => Promise<number>) => {
      // One answer: indented for a person at a terminal, else one line.
      const print = (r: unknown) => {
        process.stdout.write(JSON.stringify(r, null, jsonLines(v) ? 0 : 2) + '\n');
        return EXIT.ok;
      };
      switch (command) {
        case 'copy': {
          const run = copy(v, pos);
          return () => run(client!);
        }
        case 'info': {
          const ref = jobRef(v, pos);
          return async () => print(await client!.call('jobInfo', ref));
        }
        case 'pivot':
        case 'finish':
        case 'abort': {
          const ref = jobRef(v, pos);
          if (v['remove-source'] && command !== 'pivot') throw new UsageError('--remove-source applies to pivot');
          const extra = {
            ...(command !== 'abort' && v.timeout ? { timeout: num(v.timeout, 'timeout')! } : {}),
            ...(v['remove-source'] ? { removeSource: true } : {}),
          };
          return async () => print(await client!.call(command, { ...ref, ...extra }));
        }
        case 'set-speed': {
          // set-speed JOB_ID BW | DOMAIN DISK BW | --job ID BW, or with --bandwidth BW instead of
          // the last word (virsh blockjob DOMAIN DISK --bandwidth BW).
          let words = pos;
          let speed: { bandwidth: number | string };
          if (v.bandwidth !== undefined) speed = bandwidthOption(v) as { bandwidth: number | string };
          else if (pos.length === 0) throw new UsageError('set-speed needs a BANDWIDTH (MiB/s, or with a unit: 100M, 1G; 0 = unlimited)');
          else {
            speed = { bandwidth: bandwidthArg(pos.at(-1)!, v, 'set-speed') };
            words = pos.slice(0, -1);
          }
          const ref = !v.job && words.length === 1 ? { jobId: words[0]! } : jobRef(v, words);
          return async () => print(await client!.call('setSpeed', { ...ref, ...speed }));
        }
        case 'jobs': {
          type Kind = NonNullable<ListJobsParams['kind']>[number];
          const KINDS: readonly Kind[] = ['copy', 'activeCommit', 'commit', 'pull', 'backup'];
          // --kind commit,pull or --kind commit --kind pull
          const kinds = (v.kind ?? []).flatMap((k) => k.split(','));
          for (const k of kinds)
            if (!(KINDS as readonly string[]).includes(k)) throw new UsageError(`--kind must be one of ${KINDS.join(', ')}, got '${k}'`);
          const params = { ...(pos[0] ? { domain: pos[0] } : {}), ...(kinds.length ? { kind: [...new Set(kinds)] as Kind[] } : {}) };
          return async () => print(await client!.call('listJobs', params));
        }
        case 'snapshot': {
          const run = snapshot(v, pos);
          return () => run(client!);
        }
        case 'commit': {
          const run = commit(v, pos);
          return () => run(client!);
        }
        case 'pull': {
          const run = pull(v, pos);
          return () => run(client!);
        }
        case 'watch':
          return () => watch(client!, v, pos);
        case 'copy-group': {
          const run = copyGroup(v, pos);
          return () => run(client!);
        }
        case 'move': {
          const run = move(v, pos);
          return () => run(client!);
        }
        case 'backup': {
          const run = backup(v, pos);
          return () => run(client!);
        }
        case 'checkpoints': {
          const run = checkpoints(v, pos);
          return () => run(client!);
        }
        case 'group':
        case 'pivot-group':
        case 'finish-group':
        case 'abort-group': {
          if (pos.length !== 1) throw new UsageError(`${command} needs a group ID`);
          const groupId = pos[0]!;
          const pause = v['max-pause'] !== undefined ? { maxPause: num(v['max-pause'], 'max-pause')! } : {};
          if (v['remove-source'] && command !== 'pivot-group') throw new UsageError('--remove-source applies to pivot-group');
          const remove = v['remove-source'] ? { removeSource: true } : {};
          return async () => {
            const r =
              command === 'group'
                ? await client!.call('groupInfo', { groupId })
                : command === 'abort-group'
                  ? await client!.call('abortGroup', { groupId })
                  : command === 'pivot-group'
                    ? await client!.call('pivotGroup', { groupId, ...pause, ...remove })
                    : await client!.call('finishGroup', { groupId, ...pause });
            return print(r);
          };
        }
        case 'call': {
          if (pos.length !== 1) throw new UsageError('call needs METHOD');
          let params: unknown = {};
          try {
            params = v.params ? JSON.parse(v.params) : {};
          } catch {
            throw new UsageError('--params must be JSON');
          }
          return async () => print(await client!.call(pos[0] as MethodName, params as never));
        }
        default:
          return command satisfies never;
      }
    };
    const run = plan();
    const token = v.url ? bearerToken(v) : undefined;
    try {
      client = await connect(v, token, host.localAgent);
    } catch (e) {
      if (e instanceof UsageError) throw e;
      process.stderr.write(`${host.program}: cannot reach the agent: ${(e as Error).message}\n`);
      return EXIT.connection;
    }
    return await run();
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`${host.program}: ${e.message}\n\n${help}\n`);
      return EXIT.usage;
    }
    if (e instanceof RpcError) {
      process.stderr.write(
        JSON.stringify({ error: e.errorName ?? e.code, message: e.message, ...(e.data ? { data: e.data } : {}) }) + '\n',
      );
      return e.errorName === 'timeout' ? EXIT.timeout : EXIT.agentError;
    }
    const err = e as NodeJS.ErrnoException;
    // The client package on a host without the agent: no socket answered and nothing to spawn.
    if (err.code === 'ENOENT' && err.syscall?.startsWith('spawn'))
      process.stderr.write(
        `${host.program}: cannot reach the agent: no local agent socket, and ${err.path} is not installed here (--url?)\n`,
      );
    else process.stderr.write(`${host.program}: ${err.message}\n`);
    return EXIT.connection;
  } finally {
    await closeClient(client);
  }
}
