import { join } from 'node:path';
import { createActor, createMachine } from 'xstate';
import { pipelineMachine } from '../actors/pipeline.ts';
import { compileAssemblyScript } from '../src/build/asc.ts';
import { buildExampleOverlays } from '../src/build/examples.ts';
import { createKernel, type Kernel } from '../src/kernel.ts';
import { PHASES } from '../src/manifest.ts';
import { sha256Hex } from '../src/wasm/loader.ts';
import { interleaved, paired, row, type BenchOptions, type BenchRow } from './harness.ts';

const ROOT = join(import.meta.dirname, '..');

/** The baseline: a bare machine of nine states in a line (seven phases, start and end), walked by eight events. */
const LINE = ['start', ...PHASES, 'end'];
const bareMachine = createMachine({
  id: 'bare',
  initial: 'start',
  states: Object.fromEntries(LINE.map((state, i) => [state, i === LINE.length - 1 ? { type: 'final' as const } : { on: { NEXT: LINE[i + 1]! } }])),
});
const NEXT = { type: 'NEXT' } as const;
function bareRun(): void {
  const actor = createActor(bareMachine).start();
  for (let i = 1; i < LINE.length; i++) actor.send(NEXT);
  actor.stop();
}

/** A kernel with one no-op WASM overlay per phase (relaxed engine, memory store, no checkpoints: its default). */
async function noopKernel(): Promise<Kernel> {
  const bytes = (await compileAssemblyScript(join(ROOT, 'overlays-as', 'bench', 'pipeline-noop.ts'))).binary;
  const kernel = await createKernel({ logger: { level: 'silent' }, cacheDir: false });
  for (const phase of PHASES) await kernel.overlays.load(bytes, { manifest: { name: `noop-${phase}`, version: '1.0.0', sha256: sha256Hex(bytes), phases: [phase] }, mode: 'relaxed' });
  return kernel;
}

async function fullRun(options: BenchOptions): Promise<BenchRow[]> {
  const kernel = await noopKernel();
  try {
    const iterations = options.quick ? 200 : 2_000;
    const input = { capsule: { id: 'bench', content: 'a capsule' } };
    const bareRuns = async (): Promise<void> => {
      for (let i = 0; i < iterations; i++) await Promise.resolve(bareRun());
    };
    const config = kernel.pipelines.start(input).actor.getSnapshot().context.config;
    const outcome = { phase: 'ingestion' as const, status: 'completed' as const, required: true, durationMs: 0, overlays: [] };
    const pipelineRuns = async (): Promise<void> => {
      for (let i = 0; i < iterations; i++) {
        const result = await kernel.pipelines.start(input).done;
        if (result.status !== 'completed') throw new Error(`bench run ${result.status}: ${JSON.stringify(result.error)}`);
      }
    };
    // The floor: the same bare machine stepped by hand around the same seven registry calls, no pipeline at all.
    // No pipeline of WASM overlays can be cheaper than this; it shows how much of the ratio the calls take.
    const floorRuns = async (): Promise<void> => {
      for (let i = 0; i < iterations; i++) {
        const actor = createActor(bareMachine).start();
        actor.send(NEXT);
        for (const phase of PHASES) {
          await kernel.overlays.call(`noop-${phase}`, 'run', input, { trust: 100 });
          actor.send(NEXT);
        }
        actor.stop();
      }
    };
    const [ours, floor, bare] = await interleaved([pipelineRuns, floorRuns, bareRuns], iterations, options);
    // Where the time goes: the run's machine alone (the same seven phase events, no work), and the seven calls alone.
    const [machine, bare2] = await paired(
      async () => {
        for (let i = 0; i < iterations; i++) {
          const actor = createActor(pipelineMachine, { input: { runId: 'r', correlationId: 'r', config, startedAt: 0, data: input } }).start();
          for (const phase of PHASES) actor.send({ type: 'PHASE_DONE', outcome: { ...outcome, phase }, data: input });
          actor.stop();
          await Promise.resolve();
        }
      },
      bareRuns,
      iterations,
      options,
    );
    const [calls, bare3] = await paired(
      async () => {
        for (let i = 0; i < iterations; i++) for (const phase of PHASES) await kernel.overlays.call(`noop-${phase}`, 'run', input, { trust: 100 });
      },
      bareRuns,
      iterations,
      options,
    );
    return [
      row('pipeline run, 7 phases × 1 no-op WASM overlay, vs a bare 9-state XState run', ours / 1e3, bare / 1e3, 'µs/run', '≤ 1.5×', (r) => r !== null && r <= 1.5),
      row('  the floor: that bare run stepped by hand around the same 7 registry calls, vs the bare run', floor / 1e3, bare / 1e3, 'µs/run', 'reported', null),
      row('  the pipeline run vs that floor (what the pipeline itself adds)', ours / 1e3, floor / 1e3, 'µs/run', 'reported', null),
      row('  of which: the pipeline machine alone (7 phase events), vs the same bare run', machine / 1e3, bare2 / 1e3, 'µs/run', 'reported', null),
      row('  of which: 7 no-op WASM calls through the registry, vs the same bare run', calls / 1e3, bare3 / 1e3, 'µs/run', 'reported', null),
    ];
  } finally {
    await kernel.stop();
  }
}

/** Runs per second with the example overlays, one at a time and eight at once. */
async function examples(options: BenchOptions): Promise<BenchRow[]> {
  const dir = await buildExampleOverlays({ outDir: join(ROOT, '.forge', 'cache', 'examples') });
  const kernel = await createKernel({ logger: { level: 'silent' }, cacheDir: join(ROOT, '.forge', 'cache', 'metered-bench') });
  try {
    await kernel.overlays.loadDirectory(dir, { grant: 'declared', mode: 'relaxed' });
    const capsule = { id: 'cap-1', kind: 'insight', content: 'Root cause of the latency bug: the database release pipeline.', author: 'ada', trust: 0.9, tags: ['engineering'], parents: ['cap-0'] };
    const runs = options.quick ? 50 : 500;
    const rows: BenchRow[] = [];
    for (const concurrency of [1, 8]) {
      for (let i = 0; i < 20; i++) await kernel.pipelines.start({ capsule }).done;
      const started = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next++ < runs) await kernel.pipelines.start({ capsule }).done;
        }),
      );
      rows.push(row(`pipeline runs/s with the 7 example overlays, ${concurrency} at a time`, runs / ((performance.now() - started) / 1e3), null, 'runs/s', 'reported', null));
    }
    return rows;
  } finally {
    await kernel.stop();
  }
}

export async function pipelineBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  return [...(await fullRun(options)), ...(await examples(options))];
}
