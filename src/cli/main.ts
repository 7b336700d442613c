#!/usr/bin/env node
// blockcopy-agent: serve (WebSocket, optionally stdio), stdio, config check.
import { parseArgs } from 'node:util';
import { ConfigError, envOverrides, loadConfig, type Overrides } from '../config.js';
import { configOptions, optionsHelp, SHORTHANDS } from '../config-options.js';
import { startAgent, StateDirBusy, VERSION } from '../agent.js';
import { createLogger, type Level } from '../log.js';
import { relayStdio } from './relay.js';
import { CLIENT_HELP, isClientCommand, runClientCommand } from './verbs.js';

const HELP: Record<string, string> = {
  main: `blockcopy-agent ${VERSION}: live block copy of running VM disks through libvirt, over JSON-RPC 2.0

Usage:
  blockcopy-agent serve [options]        serve JSON-RPC on WebSocket (and stdio with --stdio)
  blockcopy-agent stdio [options]        serve JSON-RPC on stdin/stdout only; relays to a
                                         running agent that owns the same state directory
  blockcopy-agent config check FILE      validate a configuration file and print what is wrong
  blockcopy-agent --version

Run 'blockcopy-agent COMMAND --help' for a command's options.

${CLIENT_HELP}`,
  serve: `Usage: blockcopy-agent serve [options]

Serves JSON-RPC 2.0 on a WebSocket (see --listen-host, --listen-port). SIGTERM/SIGINT stop the agent
cleanly; running copies continue inside QEMU and are adopted at the next start.

Options (each also an environment variable; flags win over the environment, the environment
over the file, the file over the defaults of schemas/config.schema.json):
  --config FILE  (BLOCKCOPY_CONFIG)
      JSON configuration file.
  --stdio
      Also serve on stdin/stdout.
${optionsHelp()}`,
  stdio: `Usage: blockcopy-agent stdio [options]

Newline-delimited JSON-RPC 2.0 on stdin/stdout; logs go to stderr. Exits when stdin ends.
If another agent already owns the state directory and listens on loopback, the requests are
relayed to it, so that one agent owns the jobs. Takes the same options as 'serve'.`,
  config: `Usage: blockcopy-agent config check FILE

Validates FILE against schemas/config.schema.json; prints each problem and exits 1, or prints
the effective configuration (with defaults) and exits 0.`,
};

type OptionSpec = { type: 'string' | 'boolean'; short?: string };

/** Fixed options, then one per configuration option of the schema (config-options.ts). */
const CONFIG_FLAGS: Record<string, OptionSpec> = Object.fromEntries([
  ...Object.entries(SHORTHANDS).map(([f, s]): [string, OptionSpec] => [f, { type: s.placeholder ? 'string' : 'boolean' }]),
  ...configOptions().map((o): [string, OptionSpec] => [o.negated ? `no-${o.flag}` : o.flag, { type: o.kind === 'boolean' ? 'boolean' : 'string' }]),
]);
const OPTIONS: Record<string, OptionSpec> = {
  config: { type: 'string' },
  stdio: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  ...CONFIG_FLAGS,
};

function fail(msg: string, code = 2): never {
  process.stderr.write(`blockcopy-agent: ${msg}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  // The reader went away (a closed pipe, a caller that exited): nobody is left to answer.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  if (isClientCommand(argv[0])) {
    const code = await runClientCommand(argv[0], argv.slice(1));
    await new Promise<void>((r) => process.stdout.write('', () => r()));
    process.exit(code);
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    fail(`${(e as Error).message}\n\n${HELP.main}`);
  }
  const { values: v, positionals } = parsed;
  const command = positionals[0];
  if (v.version) return void console.log(VERSION);
  if (!command || (v.help && !command)) return void console.log(HELP.main);
  if (v.help) return void console.log(HELP[command] ?? HELP.main);

  if (command === 'config') {
    if (positionals[1] !== 'check' || !positionals[2]) fail(HELP.config);
    try {
      const cfg = loadConfig(positionals[2]);
      console.log(JSON.stringify(cfg, null, 2));
    } catch (e) {
      fail((e as Error).message, 1);
    }
    return;
  }
  if (command !== 'serve' && command !== 'stdio') fail(`unknown command '${command}'\n\n${HELP.main}`);

  const flags: Overrides = Object.fromEntries(Object.keys(CONFIG_FLAGS).map((f) => [f, v[f]]));
  if (command === 'stdio') flags['no-listen'] = true;
  let cfg;
  try {
    cfg = loadConfig((v.config as string | undefined) ?? process.env.BLOCKCOPY_CONFIG, envOverrides(), flags);
  } catch (e) {
    fail((e as Error).message, e instanceof ConfigError ? 1 : 2);
  }
  const log = createLogger({ level: cfg.logLevel as Level });
  const stdio = command === 'stdio' || !!v.stdio;
  let agent;
  try {
    agent = await startAgent(cfg, { stdio, log, validateResults: process.env.BLOCKCOPY_VALIDATE_RESULTS === '1' });
  } catch (e) {
    if (e instanceof StateDirBusy && command === 'stdio' && e.holder.listen) {
      log.debug('relaying to the running agent', { pid: e.holder.pid, listen: e.holder.listen });
      await relayStdio(e.holder);
      return;
    }
    fail((e as Error).message, 1);
  }
  const shutdown = (why: string) => {
    log.info('shutting down; running copies are left to QEMU', { why });
    void agent.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  if (stdio) {
    await agent.stdioEnded;
    if (command === 'stdio') {
      await agent.close();
      // process.exit drops output still queued for a slow reader: flush the answers first.
      await new Promise<void>((r) => process.stdout.write('', () => r()));
      process.exit(0);
    }
  }
}

main(process.argv.slice(2)).catch((e) => fail(e instanceof Error ? e.message : String(e), 1));
