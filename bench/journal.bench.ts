// The run journal's cost: a 7-phase run of the example overlays on the SQLite journal (a checkpoint appended per
// phase) against the same run on the memory journal, a run journaled against one kept by no journal at all, and a
// replay of a recorded run against the run itself.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExampleOverlays } from '../src/build/examples.ts';
import { createKernel, type JournalOption, type Kernel } from '../src/kernel.ts';
import { interleaved, row, type BenchOptions, type BenchRow } from './harness.ts';

const ROOT = join(import.meta.dirname, '..');
const CAPSULE = { id: 'cap-1', kind: 'insight', content: 'Root cause of the latency bug: the database release pipeline.', author: 'ada', trust: 0.9, tags: ['engineering'], parents: ['cap-0'] };

async function examplesKernel(dir: string, journal: JournalOption): Promise<Kernel> {
  const kernel = await createKernel({ logger: { level: 'silent' }, cacheDir: join(ROOT, '.forge', 'cache', 'metered-bench'), journal });
  await kernel.overlays.loadDirectory(dir, { grant: 'declared', mode: 'relaxed' });
  return kernel;
}

export async function journalBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  const dir = await buildExampleOverlays({ outDir: join(ROOT, '.forge', 'cache', 'examples') });
  const tmp = mkdtempSync(join(tmpdir(), 'forge-bench-journal-'));
  const memory = await examplesKernel(dir, 'memory');
  const sqlite = await examplesKernel(dir, { kind: 'sqlite', path: join(tmp, 'journal.db') });
  const none = await examplesKernel(dir, false);
  try {
    const iterations = options.quick ? 20 : 100;
    const runs = (kernel: Kernel) => async (): Promise<void> => {
      for (let i = 0; i < iterations; i++) await kernel.pipelines.start({ capsule: CAPSULE }).done;
    };
    const [onSqlite, onMemory, onNone] = await interleaved([runs(sqlite), runs(memory), runs(none)], iterations, options);
    // Eight runs at a time: their checkpoints share commits (what a busy service sees).
    const concurrent = (kernel: Kernel) => async (): Promise<void> => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next++ < iterations) await kernel.pipelines.start({ capsule: CAPSULE }).done;
        }),
      );
    };
    const [sqlite8, memory8] = await interleaved([concurrent(sqlite), concurrent(memory)], iterations, options);

    const recorded = memory.pipelines.start({ capsule: CAPSULE });
    await recorded.done;
    // Kept aside: the memory journal drops the oldest settled runs beyond its limit while the runs below go on.
    const entries = await memory.journal!.read(recorded.id);
    const replays = async (): Promise<void> => {
      for (let i = 0; i < iterations; i++) {
        const report = await memory.replay(recorded.id, { entries });
        if (!report.identical) throw new Error(`the replay of ${recorded.id} differs: ${JSON.stringify(report.firstDivergence)}`);
      }
    };
    const [replay, original] = await interleaved([replays, runs(memory)], iterations, options);
    return [
      row('7-phase runs of the example overlays, 8 at a time, on the SQLite journal (group commit), vs the memory journal', sqlite8 / 1e3, memory8 / 1e3, 'µs/run', '≤ 1.3×', (r) => r !== null && r <= 1.3),
      row('  one run at a time (two durable commits a run: its start and its end), vs the memory journal', onSqlite / 1e3, onMemory / 1e3, 'µs/run', 'reported', null),
      row('  the same run on the memory journal, vs no journal (runs kept as store snapshots)', onMemory / 1e3, onNone / 1e3, 'µs/run', 'reported', null),
      row('replay of a recorded 7-phase run (every call re-executed and compared), vs running it', replay / 1e3, original / 1e3, 'µs/run', '≤ 1.2×', (r) => r !== null && r <= 1.2),
    ];
  } finally {
    await Promise.all([memory.stop(), sqlite.stop(), none.stop()]);
    rmSync(tmp, { recursive: true, force: true });
  }
}
