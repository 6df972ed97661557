import { benchCommand } from './bench.ts';
import { demoCommand } from './demo.ts';
import { inspectCommand } from './inspect.ts';
import { runCommand } from './run.ts';
import { vizCommand } from './viz.ts';
import type { CliIO, Command } from './command.ts';
import { VERSION } from '../package-root.ts';
import { buildCommand } from './build.ts';
import { callCommand } from './call.ts';
import { initCommand } from './init.ts';
import { journalCommand, replayCommand } from './journal.ts';

/** Exit code for a usage mistake (unknown command or flag), as in the BSD sysexits convention of most CLIs. */
const EXIT_USAGE = 2;

/** Every subcommand, in the order `--help` lists them. Later modules add theirs here. */
export const COMMANDS: readonly Command[] = [demoCommand, initCommand, buildCommand, callCommand, runCommand, journalCommand, replayCommand, inspectCommand, vizCommand, benchCommand];

function usage(commands: readonly Command[]): string {
  const width = Math.max(0, ...commands.map((c) => c.name.length));
  const list = commands.length === 0
    ? '  (none yet)'
    : commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n');
  return [
    `forge-kernel ${VERSION}: an embeddable actor-model runtime for sandboxed WASM overlays.`,
    '',
    'Usage: forge-kernel <command> [options]',
    '',
    'Commands:',
    list,
    '',
    'Options:',
    '  -h, --help     show this help (or a command\'s help: forge-kernel <command> --help)',
    '  -v, --version  print the version',
    '',
  ].join('\n');
}

/** Runs the CLI with `argv` (without the node and script paths) and resolves to the exit code. */
export async function main(argv: readonly string[], io: CliIO, commands: readonly Command[] = COMMANDS): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
    io.stdout(usage(commands));
    return first === undefined ? EXIT_USAGE : 0;
  }
  if (first === '-v' || first === '--version') {
    io.stdout(`${VERSION}\n`);
    return 0;
  }
  const command = commands.find((c) => c.name === first);
  if (command === undefined) {
    io.stderr(`forge-kernel: unknown ${first.startsWith('-') ? 'option' : 'command'} "${first}". Run "forge-kernel --help" for the list.\n`);
    return EXIT_USAGE;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    io.stdout(`${command.help.trimEnd()}\n`);
    return 0;
  }
  return command.run(rest, io);
}

/** Process entry: wires `main` to the real streams and exit code. */
export async function runProcess(): Promise<void> {
  const io: CliIO = {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  };
  process.exitCode = await main(process.argv.slice(2), io);
}
