import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServices, stopServices } from '../scripts/services/index.ts';
import { buildExampleOverlays } from '../src/build/examples.ts';
import { createKernel } from '../src/kernel.ts';
import { row, type BenchOptions, type BenchRow } from './harness.ts';

const CAPSULE = { kind: 'insight', content: 'Root cause of the latency bug: the database release pipeline.', author: 'ada', trust: 0.9, tags: ['ops'], parents: [] };

/**
 * The audit projection's lag under sustained load: a kernel on a SQLite journal and Neo4j runs the seven example
 * overlays in waves for a few seconds while the projection's lag is sampled; its p99 and max are reported, and
 * the runs/s against the same runs on Neo4j with no journal (the audit written by each run, which waits for it).
 */
export async function projectionBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  const { endpoints, started } = await startServices({ names: process.env.NEO4J_URI === undefined ? ['neo4j'] : [] });
  const neo4j = { kind: 'neo4j' as const, uri: process.env.NEO4J_URI ?? endpoints.NEO4J_URI, user: process.env.NEO4J_USER ?? endpoints.NEO4J_USER, password: process.env.NEO4J_PASSWORD ?? endpoints.NEO4J_PASSWORD };
  const overlays = await buildExampleOverlays({ outDir: join(import.meta.dirname, '..', '.forge', 'cache', 'examples') });
  const dir = mkdtempSync(join(tmpdir(), 'forge-bench-projection-'));
  const seconds = options.quick ? 2 : 8;
  const rows: BenchRow[] = [];
  try {
    const rates: Record<string, number> = {};
    for (const journaled of [false, true]) {
      const kernel = await createKernel({ logger: { level: 'silent' }, cacheDir: false, store: neo4j, journal: journaled ? { kind: 'sqlite', path: join(dir, 'journal.db') } : false });
      const lags: number[] = [];
      try {
        await kernel.overlays.loadDirectory(overlays, { grant: 'declared', mode: 'relaxed' });
        const sampler = setInterval(() => {
          const status = kernel.projection();
          if (status !== null) lags.push(status.lagMs);
        }, 20);
        let done = 0;
        const until = performance.now() + seconds * 1e3;
        const t = performance.now();
        while (performance.now() < until) {
          await Promise.all(Array.from({ length: 16 }, (_, i) => kernel.pipelines.start({ capsule: { ...CAPSULE, id: `bench-proj-${done + i}` } }).done));
          done += 16;
        }
        rates[String(journaled)] = done / ((performance.now() - t) / 1e3);
        clearInterval(sampler);
        if (journaled) {
          const sorted = [...lags].sort((a, b) => a - b);
          const p99 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0;
          rows.push(row(`audit projection lag into Neo4j under sustained runs (${rates.true!.toFixed(0)} runs/s), p99`, p99, null, 'ms', 'reported (bounded)', null));
          rows.push(row('audit projection lag into Neo4j under sustained runs, max', sorted.at(-1) ?? 0, null, 'ms', 'reported', null));
        }
      } finally {
        await kernel.stop();
      }
    }
    rows.push(row('pipeline runs/s on Neo4j: SQLite journal with the audit projected behind, vs no journal (Neo4j snapshots per phase, and each run waits for its audit write)', rates.true!, rates.false!, 'runs/s', 'reported', null));
  } finally {
    rmSync(dir, { recursive: true, force: true });
    if (started.length > 0) await stopServices({ names: started });
  }
  return rows;
}
