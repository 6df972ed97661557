import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { createKernel, type Kernel, type StoreOption } from '../kernel.ts';
import type { PipelineRun, RunResult } from '../pipeline/pipelines.ts';
import { commandLogger, exampleOverlays, parseCommandArgs, reportFailure, UsageError, type CliIO, type Command } from './command.ts';

const HELP = `Usage: forge-kernel run <input.json> [options]
       forge-kernel run --resume <runId> --decide approve|reject (--journal <file> | --store neo4j)

Runs one capsule through the seven-phase pipeline (ingestion → analysis → validation → consensus → execution →
propagation → settlement) and prints the result: status, each phase's outcome and duration, fuel per overlay,
warnings. The input file holds { "capsule": {…}, …more run data } or the capsule itself.

Options:
  --overlays <dir>         built overlays (<name>.wasm + <name>.manifest.json, as forge-kernel build writes them),
                           granted what their manifests declare (default: the example overlays, built if needed)
  --store memory|neo4j     where the run lives (default memory); neo4j reads NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD
                           (default: the project's services, bolt://127.0.0.1:17687)
  --journal <file>         journal the run in this SQLite file (created if need be): a run waiting for a decision
                           survives the process (--resume it later), and forge-kernel journal / replay read it
  --mode strict|relaxed    overlay engine (default relaxed)
  --decide approve|reject  when consensus asks for a human decision, give it at once (default: stop there; with
                           --store neo4j the run waits in the store for --resume)
  --by <name>              who decides (default: the current user)
  --resume <runId>         resume a run waiting in the store instead of starting one (needs --decide)
  --json                   print the run's result as JSON
  -h, --help               show this help

Exit status: 0 when the run completed or waits for a decision, 1 when it failed, 2 on a usage mistake.`;

interface Options {
  file: string | undefined;
  overlays: string | undefined;
  store: 'memory' | 'neo4j';
  mode: 'strict' | 'relaxed';
  decide: 'approve' | 'reject' | undefined;
  by: string;
  resume: string | undefined;
  journal: string | undefined;
  json: boolean;
}

function parse(args: readonly string[]): Options {
  const parsed = parseCommandArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        overlays: { type: 'string' },
        store: { type: 'string', default: 'memory' },
        mode: { type: 'string', default: 'relaxed' },
        decide: { type: 'string' },
        by: { type: 'string' },
        resume: { type: 'string' },
        journal: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
    });
  const { values, positionals } = parsed;
  const [file, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (values.resume === undefined && file === undefined) throw new UsageError('run needs an input file: forge-kernel run <input.json>');
  if (values.resume !== undefined && file !== undefined) throw new UsageError('give an input file or --resume <runId>, not both');
  if (values.store !== 'memory' && values.store !== 'neo4j') throw new UsageError(`--store must be memory or neo4j, got ${JSON.stringify(values.store)}`);
  if (values.mode !== 'strict' && values.mode !== 'relaxed') throw new UsageError(`--mode must be strict or relaxed, got ${JSON.stringify(values.mode)}`);
  if (values.decide !== undefined && values.decide !== 'approve' && values.decide !== 'reject') throw new UsageError(`--decide must be approve or reject, got ${JSON.stringify(values.decide)}`);
  if (values.resume !== undefined && values.decide === undefined) throw new UsageError('--resume needs --decide approve|reject');
  return { file, overlays: values.overlays, store: values.store, mode: values.mode, decide: values.decide, by: values.by ?? userInfo().username, resume: values.resume, journal: values.journal, json: values.json };
}

async function readRunInput(file: string): Promise<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new UsageError(`cannot read ${file} as JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new UsageError(`${file} must hold a JSON object: { "capsule": {…} } or the capsule itself`);
  return 'capsule' in parsed ? (parsed) : { capsule: parsed };
}

/** The store the CLI opens: memory, or the Neo4j of the environment (the project's services by default). */
export function cliStore(kind: 'memory' | 'neo4j'): StoreOption {
  if (kind === 'memory') return { kind: 'memory' };
  return { kind: 'neo4j', uri: process.env.NEO4J_URI ?? 'bolt://127.0.0.1:17687', user: process.env.NEO4J_USER ?? 'neo4j', password: process.env.NEO4J_PASSWORD ?? 'forge-kernel-dev' };
}

/** Resolves when the run ends, or when it stops to wait for a decision (with no result yet). */
function settled(kernel: Kernel, run: PipelineRun): Promise<RunResult | 'awaitingDecision'> {
  return new Promise((resolve) => {
    const unsubscribe = kernel.bus.subscribe({ types: ['pipeline.paused'], filter: (event) => (event.payload as { runId?: unknown }).runId === run.id }, () => {
      unsubscribe();
      resolve('awaitingDecision');
    });
    void run.done.then((result) => {
      unsubscribe();
      resolve(result);
    });
  });
}

function describe(result: RunResult): string {
  const lines = [`run ${result.id}: ${result.status} in ${result.durationMs} ms`];
  for (const phase of result.phases) {
    const overlays = phase.overlays.map((o) => `${o.name} ${o.status}${o.code === undefined ? '' : ` ${o.code}`}${o.status === 'ok' || o.message === undefined ? '' : `: ${o.message}`} (fuel ${o.fuelUsed})`).join(', ');
    lines.push(`  ${phase.phase.padEnd(12)} ${phase.status.padEnd(9)} ${phase.durationMs.toFixed(1).padStart(8)} ms  ${phase.reason ?? overlays}`);
  }
  if (result.decision !== null) lines.push(`decision: ${result.decision.approve ? 'approve' : 'reject'} by ${result.decision.by}`);
  for (const warning of result.warnings) lines.push(`warning: ${warning}`);
  if (result.error !== null) lines.push(`error: ${result.error.code}: ${result.error.message}`);
  return `${lines.join('\n')}\n`;
}

async function run(args: readonly string[], io: CliIO): Promise<number> {
  const json = args.includes('--json');
  try {
    const options = parse(args);
    const input = options.file === undefined ? undefined : await readRunInput(options.file);
    const overlays = options.overlays ?? (await exampleOverlays(io));
    const kernel = await createKernel({ logger: commandLogger(io), store: cliStore(options.store), ...(options.journal === undefined ? {} : { journal: { kind: 'sqlite' as const, path: options.journal } }) });
    try {
      await kernel.overlays.loadDirectory(overlays, { grant: 'declared', mode: options.mode });
      const decision = options.decide === undefined ? undefined : { decision: options.decide, by: options.by, reason: 'decided on the command line' };
      const pipelineRun = options.resume === undefined ? kernel.pipelines.start(input) : await kernel.pipelines.resume(options.resume, decision);
      let outcome = await settled(kernel, pipelineRun);
      if (outcome === 'awaitingDecision' && decision !== undefined) {
        await pipelineRun.resume(decision);
        outcome = await settled(kernel, pipelineRun);
      }
      if (outcome === 'awaitingDecision') {
        const view = pipelineRun.view();
        const next =
          options.journal !== undefined
            ? `forge-kernel run --resume ${pipelineRun.id} --decide approve|reject --journal ${options.journal}`
            : options.store === 'neo4j'
              ? `forge-kernel run --resume ${pipelineRun.id} --decide approve|reject --store neo4j`
              : 'rerun with --decide approve|reject (the memory store forgets the run when this process exits)';
        if (json) io.stdout(`${JSON.stringify({ ok: true, id: pipelineRun.id, status: 'awaitingDecision', phases: view.phases, data: view.data, next })}\n`);
        else io.stdout(`run ${pipelineRun.id}: awaitingDecision (${JSON.stringify((view.data.consensus as { reason?: string } | undefined)?.reason ?? 'consensus asks for a human decision')})\nnext: ${next}\n`);
        return 0;
      }
      if (json) io.stdout(`${JSON.stringify({ ok: outcome.status === 'completed', ...outcome })}\n`);
      else io.stdout(describe(outcome));
      return outcome.status === 'completed' ? 0 : 1;
    } finally {
      await kernel.stop();
    }
  } catch (error) {
    return reportFailure(io, 'run', json, error);
  }
}

export const runCommand: Command = { name: 'run', summary: 'run one capsule through the seven-phase pipeline', help: HELP, run };
