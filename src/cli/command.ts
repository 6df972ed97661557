import { parseArgs, type ParseArgsConfig } from 'node:util';
import { buildExampleOverlays } from '../build/examples.ts';
import { Writable } from 'node:stream';
import { ForgeError, isForgeError } from '../errors.ts';
import { createLogger, type Logger, type LogLevel } from '../logger.ts';

/** Where a command writes; injected so commands run in-process under test. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Whether stderr is a terminal (pretty logs, a progress bar); default: the process's. */
  stderrIsTTY?: boolean;
}

/** A command's log: pino lines written through its stderr (so a test that runs it in process captures them too). */
export function commandLogger(io: CliIO, level: LogLevel = 'warn'): Logger {
  const destination = Object.assign(new Writable({ write: (chunk: Buffer, _encoding, done) => (io.stderr(chunk.toString()), done()) }), { isTTY: io.stderrIsTTY ?? process.stderr.isTTY === true });
  return createLogger({ destination, format: 'auto', level });
}

/** One `forge-kernel <name>` subcommand. */
export interface Command {
  name: string;
  /** One line for the command list in `forge-kernel --help`. */
  summary: string;
  /** Full text for `forge-kernel <name> --help`. */
  help: string;
  /** Runs the command with the arguments after its name; resolves to the process exit code. */
  run(args: readonly string[], io: CliIO): Promise<number>;
}

/** A usage mistake on the command line (exit 2). */
export class UsageError extends ForgeError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** Reports a command's failure (as `{ ok: false, error }` with --json) and returns its exit code: 2 for usage, else 1. */
export function reportFailure(io: CliIO, command: string, json: boolean, error: unknown): number {
  const code = isForgeError(error) ? error.code : 'UNEXPECTED';
  const message = error instanceof Error ? error.message : String(error);
  if (json) io.stdout(`${JSON.stringify({ ok: false, error: { code, message } })}\n`);
  else io.stderr(`forge-kernel ${command}: ${code}: ${message}\n`);
  return code === 'USAGE' ? 2 : 1;
}

/** `node:util` parseArgs, with its complaints (an unknown option, a missing value) as usage errors. */
export function parseCommandArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/**
 * The example overlays' folder for a command that runs them: shipped built in an installed package; in a checkout
 * built once (about half a minute), with a line per overlay on stderr so the wait is visible.
 */
export async function exampleOverlays(io: CliIO): Promise<string> {
  let announced = false;
  return buildExampleOverlays({
    onStart: (file, index, total) => {
      if (!announced) io.stderr('Building the example overlays (once; later runs reuse them)…\n');
      announced = true;
      io.stderr(`  [${index + 1}/${total}] ${file}…\n`);
    },
    onResult: (result) => {
      if (result.status === 'built') io.stderr(`        ${result.name} built in ${(result.durationMs / 1000).toFixed(1)} s\n`);
    },
  });
}
