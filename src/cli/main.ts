#!/usr/bin/env node
// blockcopy-agent: serve (WebSocket, optionally stdio), stdio, config check, and the client verbs.
// Each command loads only what it needs: a client verb never loads the agent, ajv's schemas or
// the libvirt binding (they cost most of a short command's time).
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Overrides } from '../config.js';
import type { Level } from '../log.js';
import { VERSION } from '../version.js';
import { exitOnClosedStdout } from './output.js';
import { CLIENT_HELP, exitWithClientCommand, isClientCommand } from './verbs.js';

const HELP = (optionsHelp: () => string): Record<string, string> => ({
  // help2man reads it (debian/rules makes blockcopy-agent(8) from it): `Usage:` and `or:` lines
  // become the SYNOPSIS, the rest the DESCRIPTION.
  main: `Usage: blockcopy-agent serve [options]
  or:  blockcopy-agent stdio [options]
  or:  blockcopy-agent config check FILE
  or:  blockcopy-agent restore MANIFEST --disk DISK --output PATH [--upto ID|CHECKPOINT]
  or:  blockcopy-agent CLIENT-COMMAND ARGUMENTS... [options]
  or:  blockcopy-agent --version
blockcopy-agent ${VERSION}: live block copy of running VM disks through libvirt, over JSON-RPC 2.0.

Agent commands:
  serve [options]        serve JSON-RPC on WebSocket (and stdio with --stdio)
  stdio [options]        serve JSON-RPC on stdin/stdout only; relays to a running agent that
                         owns the same state directory
  config check FILE      validate a configuration file and print what is wrong
  restore MANIFEST --disk DISK --output PATH [--upto ID|CHECKPOINT]
                         rebuild a disk from its backups, offline (no agent)

Run 'blockcopy-agent COMMAND --help' for a command's options.

${CLIENT_HELP}`,
  serve: `Usage: blockcopy-agent serve [options]

Serves JSON-RPC 2.0 on a WebSocket (see --listen-host, --listen-port). SIGTERM/SIGINT stop the agent
cleanly; running copies continue inside QEMU and are adopted at the next start. SIGHUP
reloads the config's auth and Host/Origin rules, the tokens file and the TLS material (connections
whose credentials no longer pass, or now make another principal, are closed). Under systemd
(NOTIFY_SOCKET set, Type=notify) it reports readiness, reloads and stopping, and pings the
watchdog when WATCHDOG_USEC asks for it (see docs/operations.md).

Options (each also an environment variable; flags win over the environment, the environment
over the file, the file over the defaults of schemas/config.schema.json):
  --config FILE  (BLOCKCOPY_CONFIG)
      JSON configuration file.
  --stdio
      Also serve on stdin/stdout.
${optionsHelp()}`,
  stdio: `Usage: blockcopy-agent stdio [options]

Newline-delimited JSON-RPC 2.0 on stdin/stdout; logs go to stderr. Exits when stdin ends.
If another agent already owns the state directory, the requests are relayed to it (over its
unix socket, else its loopback WebSocket), so that one agent owns the jobs; the relay passes
lines as they are and reads no other option. Takes the same options as 'serve'.`,
  config: `Usage: blockcopy-agent config check FILE

Validates FILE against schemas/config.schema.json; prints each problem and exits 1, or prints
the effective configuration (with defaults) and exits 0.`,
});

type OptionSpec = { type: 'string' | 'boolean'; short?: string };

/**
 * Fixed options, then one per configuration option of the schema (config-options.ts). Loaded
 * only by the agent's own commands: the schema set costs a client verb most of its time.
 */
async function agentOptions(): Promise<{
  configFlags: Record<string, OptionSpec>;
  options: Record<string, OptionSpec>;
  help: Record<string, string>;
}> {
  const { configOptions, optionsHelp, SHORTHANDS } = await import('../config-options.js');
  const configFlags: Record<string, OptionSpec> = Object.fromEntries([
    ...Object.entries(SHORTHANDS).map(([f, s]): [string, OptionSpec] => [f, { type: s.placeholder ? 'string' : 'boolean' }]),
    ...configOptions().map((o): [string, OptionSpec] => [
      o.negated ? `no-${o.flag}` : o.flag,
      { type: o.kind === 'boolean' ? 'boolean' : 'string' },
    ]),
  ]);
  const options: Record<string, OptionSpec> = {
    config: { type: 'string' },
    stdio: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean' },
    ...configFlags,
  };
  return { configFlags, options, help: HELP(optionsHelp) };
}

function fail(msg: string, code = 2): never {
  process.stderr.write(`blockcopy-agent: ${msg}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  exitOnClosedStdout();
  // The local agent a verb spawns when no socket answers: this very program, `… stdio`.
  if (isClientCommand(argv[0]))
    await exitWithClientCommand(argv[0], argv.slice(1), {
      program: 'blockcopy-agent',
      localAgent: [process.execPath, fileURLToPath(import.meta.url)],
    });
  if (argv[0] === 'stdio' && !argv.some((a) => a === '--help' || a === '-h')) {
    // A running agent's socket first, before the option table (the schema set) or anything of
    // the agent is loaded: only where to look is read from the arguments.
    const { values } = parseArgs({
      args: argv.slice(1),
      options: { 'state-dir': { type: 'string' }, config: { type: 'string' } },
      strict: false,
      allowPositionals: true,
    });
    const local = (await import('./local-socket.js')).localSocket({
      stateDir: values['state-dir'] as string | undefined,
      config: values.config as string | undefined,
    });
    if (local && !local.explicit && (await (await import('./socket-relay.js')).relayToSocket(local.path))) {
      await new Promise<void>((r) => process.stdout.write('', () => r()));
      process.exit();
    }
  }
  // Offline: reads backup files only, connects to nothing (src/cli/restore.ts).
  if (argv[0] === 'restore') {
    const code = await (await import('./restore.js')).runRestore(argv.slice(1));
    await new Promise<void>((r) => process.stdout.write('', () => r()));
    process.exit(code);
  }
  const { configFlags, options, help: HELPS } = await agentOptions();
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    fail(`${(e as Error).message}\n\n${HELPS.main}`);
  }
  const { values: v, positionals } = parsed;
  const command = positionals[0];
  if (v.version) return void console.log(VERSION);
  if (!command || (v.help && !command)) return void console.log(HELPS.main);
  if (v.help) return void console.log(HELPS[command] ?? HELPS.main);

  const { ConfigError, envOverrides, loadConfig } = await import('../config.js');

  if (command === 'config') {
    if (positionals[1] !== 'check' || !positionals[2]) fail(HELPS.config!);
    try {
      const cfg = loadConfig(positionals[2]);
      console.log(JSON.stringify(cfg, null, 2));
    } catch (e) {
      fail((e as Error).message, 1);
    }
    return;
  }
  if (command !== 'serve' && command !== 'stdio') fail(`unknown command '${command}'\n\n${HELPS.main}`);

  const flags: Overrides = Object.fromEntries(Object.keys(configFlags).map((f) => [f, v[f]]));
  if (command === 'stdio') flags['no-listen'] = true;
  let cfg;
  try {
    cfg = loadConfig((v.config as string | undefined) ?? process.env.BLOCKCOPY_CONFIG, envOverrides(), flags);
  } catch (e) {
    fail((e as Error).message, e instanceof ConfigError ? 1 : 2);
  }
  const [{ createLogger }, { startAgent, StateDirBusy }] = await Promise.all([import('../log.js'), import('../agent.js')]);
  const log = createLogger({ level: cfg.logLevel as Level });
  const stdio = command === 'stdio' || !!v.stdio;
  // systemd's notify protocol (Type=notify): only `serve` is a service.
  const service = command === 'serve' ? (await import('../sd-notify.js')).fromEnvironment(log) : null;
  let agent;
  try {
    agent = await startAgent(cfg, {
      stdio,
      mode: command === 'stdio' ? 'stdio' : 'daemon',
      socket: command === 'serve',
      log,
      validateResults: process.env.BLOCKCOPY_VALIDATE_RESULTS === '1',
    });
  } catch (e) {
    if (e instanceof StateDirBusy && command === 'stdio' && e.holder?.listen) {
      log.debug('relaying to the running agent', { pid: e.holder.pid, listen: e.holder.listen });
      await (
        await import('./relay.js')
      ).relayStdio(e.holder, {
        maxLine: e.holder.limits?.maxPayloadBytes ?? cfg.maxPayloadBytes,
        maxBatch: e.holder.limits?.maxBatch ?? cfg.limits.maxBatch,
      });
      return;
    }
    service?.notifier.status(`Failed to start: ${(e as Error).message}`);
    fail((e as Error).message, 1);
  }
  // The process exits only once close() has run: a group switch under way resumes and thaws
  // its guest first (bounded, src/jobs/groups.ts). A second signal meanwhile does not cut it short.
  let closing = false;
  const shutdown = (why: string) => {
    if (closing) return void log.info('already shutting down: a group switch under way is releasing its guest', { why });
    closing = true;
    service?.notifier.stopping();
    log.info('shutting down; running copies are left to QEMU', { why });
    void agent.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // SIGHUP reads the config again and reloads what concerns who may connect (auth rules, Host and
  // Origin rules, tokens file, TLS material); it used to end the process.
  // Told to the service manager as RELOADING=1 … READY=1 (systemctl reload waits for it).
  process.on('SIGHUP', () => {
    if (closing) return;
    service?.notifier.reloading();
    let status: string;
    try {
      const { closed } = agent.reload(loadConfig((v.config as string | undefined) ?? process.env.BLOCKCOPY_CONFIG, envOverrides(), flags));
      status = `Credentials reloaded at ${new Date().toISOString()} (${closed} connections closed)`;
    } catch (e) {
      log.error('reload failed; the previous credentials stay in force', { error: (e as Error).message });
      status = `Reload failed, previous credentials in force: ${(e as Error).message}`;
    }
    service?.notifier.ready(status);
  });
  // Ready only now: every listener bound, the journal's jobs adopted, and the signals handled.
  if (service) {
    const where = agent.ws ? `${agent.ws.address.host}:${agent.ws.address.port}` : 'its unix socket';
    (await import('../sd-notify.js')).serviceReady(service, `Serving on ${where}`, log);
  }
  if (stdio) {
    const how = await agent.stdioEnded;
    if (command === 'stdio') {
      await agent.close();
      // A caller that stopped reading would never let the flush finish: its answers are dropped.
      if (how === 'notReading') process.exit(1);
      // process.exit drops output still queued for a slow reader: flush the answers first.
      await new Promise<void>((r) => process.stdout.write('', () => r()));
      process.exit(0);
    }
  }
}

main(process.argv.slice(2)).catch((e) => fail(e instanceof Error ? e.message : String(e), 1));
