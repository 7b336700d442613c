#!/usr/bin/env node
// blockcopy-agent-client: the client verbs alone, the bin of the client package
// (packages/client/, built from these sources without the agent or its native addon). Talks to
// an agent over --url, its local unix socket, or a spawned `blockcopy-agent stdio` when the
// agent is installed on this host.
import { VERSION } from '../version.js';
import { exitOnClosedStdout } from './output.js';
import { clientHelp, exitWithClientCommand, isClientCommand } from './verbs.js';

const PROGRAM = 'blockcopy-agent-client';

const HELP = `${PROGRAM} ${VERSION}: the client of blockcopy-agent (live block copy of running VM disks
through libvirt, over JSON-RPC 2.0), without the agent.

Usage:
  ${PROGRAM} COMMAND [options]
  ${PROGRAM} --version

${clientHelp(PROGRAM)}`;

async function main(argv: string[]): Promise<void> {
  exitOnClosedStdout();
  const [command, ...rest] = argv;
  if (isClientCommand(command)) await exitWithClientCommand(command, rest, { program: PROGRAM, localAgent: ['blockcopy-agent'] });
  if (command === '--version') return void console.log(VERSION);
  if (command === undefined || command === '--help' || command === '-h') return void console.log(HELP);
  process.stderr.write(`${PROGRAM}: unknown command '${command}'\n\n${HELP}\n`);
  process.exit(2);
}

main(process.argv.slice(2)).catch((e) => {
  process.stderr.write(`${PROGRAM}: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
