import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { startServices, stopServices } from '../scripts/services/index.ts';
import { buildExampleOverlays } from '../src/build/examples.ts';
import { createKernel } from '../src/kernel.ts';
import { row, type BenchOptions, type BenchRow } from './harness.ts';

const WORKER = join(import.meta.dirname, 'fixtures', 'cluster-worker.ts');
const CAPSULE = { kind: 'insight', content: 'Root cause of the latency bug: the database release pipeline.', author: 'ada', trust: 0.9, tags: ['ops'], parents: [] };

/**
 * Pipeline runs per second when 1, 2 and 3 kernel processes take runs from the cluster's queue (NATS JetStream), the
 * runs kept in a JetStream journal (and, for comparison, one process on Neo4j snapshots), with the seven example
 * overlays; another kernel only starts the runs. The baseline is one process on the memory store.
 */
export async function clusterBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  const names = [...(process.env.NATS_URL === undefined ? (['nats'] as const) : []), ...(process.env.NEO4J_URI === undefined ? (['neo4j'] as const) : [])];
  const { endpoints, started } = await startServices({ names });
  const env = {
    NATS_URL: process.env.NATS_URL ?? endpoints.NATS_URL,
    NEO4J_URI: process.env.NEO4J_URI ?? endpoints.NEO4J_URI,
    NEO4J_USER: process.env.NEO4J_USER ?? endpoints.NEO4J_USER,
    NEO4J_PASSWORD: process.env.NEO4J_PASSWORD ?? endpoints.NEO4J_PASSWORD,
  };
  const overlays = await buildExampleOverlays({ outDir: join(import.meta.dirname, '..', '.forge', 'cache', 'examples') });
  const runs = options.quick ? 20 : 200;
  const rows: BenchRow[] = [];
  const input = (i: number, tag: string): { capsule: Record<string, unknown> } => ({ capsule: { ...CAPSULE, id: `bench-${tag}-${i}` } });
  // The baseline: one process on the memory store (no NATS, no Neo4j), the same overlays and the same runs at once.
  const local = await createKernel({ logger: { level: 'silent' }, cacheDir: false });
  let inProcess: number;
  try {
    await local.overlays.loadDirectory(overlays, { grant: 'declared', mode: 'relaxed' });
    await Promise.all(Array.from({ length: 10 }, (_, i) => local.pipelines.start(input(i, 'warm')).done));
    const t = performance.now();
    const results = await Promise.all(Array.from({ length: runs }, (_, i) => local.pipelines.start(input(i, 'local')).done));
    inProcess = runs / ((performance.now() - t) / 1e3);
    if (results.some((r) => r.status !== 'completed')) throw new Error('an in-process bench run did not complete');
  } finally {
    await local.stop();
  }
  rows.push(row('pipeline runs/s in one process on the memory store (the baseline)', inProcess, null, 'runs/s', 'reported', null));
  try {
    // The runs in a JetStream journal, with Neo4j out of the way (memory store) and then as the store (each completed
    // run's audit entry is a Neo4j write it waits for); then Neo4j snapshots and no journal, as before the journal.
    for (const [journal, store] of [['jetstream', 'memory'], ['jetstream', 'neo4j'], ['neo4j', 'neo4j']] as const) {
      let single = 0;
      for (const size of journal === 'jetstream' && store === 'memory' ? [1, 2, 3] : [1]) {
        const stream = `BENCH_CLUSTER_${randomUUID().slice(0, 8)}`;
        const workers: ChildProcess[] = [];
        const prefix = `bench${stream.slice(-8)}`;
        const workerEnv = { ...process.env, ...env, STREAM: stream, PREFIX: prefix, OVERLAYS: overlays, STORE: store, ...(journal === 'jetstream' ? { JOURNAL: 'jetstream' } : {}) };
        for (let i = 0; i < size; i++) {
          const child = spawn(process.execPath, [WORKER], { env: { ...workerEnv, PROCESS_ID: `${stream}-w${i}` }, stdio: ['ignore', 'pipe', 'inherit'] });
          workers.push(child);
          await new Promise<void>((resolve, reject) => {
            createInterface({ input: child.stdout }).once('line', () => resolve());
            child.once('exit', (code) => reject(new Error(`a cluster bench worker exited (${String(code)}) before it was ready`)));
          });
        }
        const origin = await createKernel({
          logger: { level: 'silent' },
          ...(store === 'memory' ? {} : { store: { kind: 'neo4j' as const, uri: env.NEO4J_URI, user: env.NEO4J_USER, password: env.NEO4J_PASSWORD } }),
          bus: { transport: 'nats', servers: env.NATS_URL, stream, subjectPrefix: prefix, processId: `${stream}-origin` },
          ...(journal === 'jetstream' ? { journal: { kind: 'jetstream' as const } } : {}),
          pipelines: { worker: false },
        });
        try {
          await origin.overlays.loadDirectory(overlays, { grant: 'declared', mode: 'relaxed' });
          await new Promise((r) => setTimeout(r, 500));
          // Each process warms up (modules compiled, paths jitted) before the clock starts.
          await Promise.all(Array.from({ length: 16 * size }, (_, i) => origin.pipelines.start(input(i, `warm-${stream}`)).done));
          const t = performance.now();
          const results = await Promise.all(Array.from({ length: runs }, (_, i) => origin.pipelines.start(input(i, stream)).done));
          const rate = runs / ((performance.now() - t) / 1e3);
          const bad = results.find((r) => r.status !== 'completed');
          if (bad !== undefined) throw new Error(`a cluster bench run did not complete: ${JSON.stringify(bad.error)}`);
          if (size === 1) single = rate;
          const how = journal === 'neo4j' ? 'Neo4j snapshots, no journal' : store === 'memory' ? 'JetStream journal, memory store' : 'JetStream journal, Neo4j store';
          const label = `pipeline runs/s, ${size} kernel process${size === 1 ? '' : 'es'} taking runs from the queue (${how})${size === 1 ? ', vs one process on the memory store' : ', vs 1 process'}`;
          const judged = journal === 'jetstream' && store === 'memory';
          const target = !judged ? 'reported' : size === 1 ? '≥ 0.4×' : '≥ 1× (noise aside)';
          rows.push(row(label, rate, size === 1 ? inProcess : single, 'runs/s', target, judged ? (ratio) => ratio !== null && ratio >= (size === 1 ? 0.4 : 0.9) : null));
        } finally {
          await origin.stop();
          for (const child of workers) child.kill('SIGTERM');
          await Promise.all(workers.map((child) => new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))));
          const nc = await connect({ servers: env.NATS_URL });
          const jsm = await jetstreamManager(nc);
          for (const name of [stream, `FORGE_JOURNAL_${stream}`, ...['forge_members', 'forge_chains', 'forge_run_leases'].map((bucket) => `KV_${bucket}_${stream}`)]) await jsm.streams.delete(name).catch(() => false);
          await nc.close();
        }
      }
    }
  } finally {
    if (started.length > 0) await stopServices({ names: started });
  }
  return rows;
}
