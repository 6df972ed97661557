import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ForgeError } from '../errors.ts';
import { reportFailure, UsageError, type CliIO, type Command } from './command.ts';

const HELP = `Usage: forge-kernel bench [--quick] [--json]        (npm run bench runs it too)

Runs every benchmark in one process and prints one table: figure, ours, baseline, unit, ratio, target, pass/fail.
Every ratio compares against a baseline measured in the same run, interleaved sample by sample. Writes the report
to bench/results/latest.json. Needs a checkout of the project (the benchmarks are not in the published package);
the Neo4j write-behind figure starts the project's Neo4j when it is not running.

Options:
  --quick     fewer samples: a smoke run, not numbers to quote
  --json      print the report as JSON
  -h, --help  show this help

Exit status: 0 when the benchmarks ran, 1 when they could not, 2 on a usage mistake.`;

const BENCH = join(resolve(import.meta.dirname, '..', '..'), 'bench', 'run.ts');

function run(args: readonly string[], io: CliIO): Promise<number> {
  const json = args.includes('--json');
  const unknown = args.find((a) => a !== '--quick' && a !== '--json');
  if (unknown !== undefined) return Promise.resolve(reportFailure(io, 'bench', json, new UsageError(`unexpected argument ${JSON.stringify(unknown)}`)));
  if (!existsSync(BENCH)) return Promise.resolve(reportFailure(io, 'bench', json, new ForgeError('BENCH_UNAVAILABLE', `The benchmarks are not here (${BENCH}): run them from a checkout of forge-kernel.`)));
  // A child process: the benchmarks need --expose-gc for the memory figures, and a process of their own.
  return new Promise((done) => {
    const child = spawn(process.execPath, ['--expose-gc', BENCH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk: Buffer) => io.stdout(chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => io.stderr(chunk.toString()));
    child.on('exit', (code) => done(code === 0 ? 0 : 1));
  });
}

export const benchCommand: Command = { name: 'bench', summary: 'run every benchmark and print figure, ours, baseline, ratio, target, pass/fail', help: HELP, run };
