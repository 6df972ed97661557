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
 * Pipeline runs per second when 1, 2 and 3 kernel processes take runs from the cluster's queue (NATS JetStream,
 * Neo4j for the runs' checkpoints), with the seven example overlays; another kernel only starts the runs.
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
  const runs = options.quick ? 20 : 90;
  const rows: BenchRow[] = [];
  let single = 0;
  try {
    for (const size of [1, 2, 3]) {
      const stream = `BENCH_CLUSTER_${randomUUID().slice(0, 8)}`;
      const workers: ChildProcess[] = [];
      for (let i = 0; i < size; i++) {
        const child = spawn(process.execPath, [WORKER], { env: { ...process.env, ...env, STREAM: stream, PROCESS_ID: `${stream}-w${i}`, OVERLAYS: overlays }, stdio: ['ignore', 'pipe', 'inherit'] });
        workers.push(child);
        await new Promise<void>((resolve) => createInterface({ input: child.stdout }).once('line', () => resolve()));
      }
      const origin = await createKernel({
        logger: { level: 'silent' },
        store: { kind: 'neo4j', uri: env.NEO4J_URI, user: env.NEO4J_USER, password: env.NEO4J_PASSWORD },
        bus: { transport: 'nats', servers: env.NATS_URL, stream, processId: `${stream}-origin` },
        pipelines: { worker: false },
      });
      try {
        await origin.overlays.loadDirectory(overlays, { grant: 'declared', mode: 'relaxed' });
        await new Promise((r) => setTimeout(r, 500));
        const t = performance.now();
        const results = await Promise.all(Array.from({ length: runs }, (_, i) => origin.pipelines.start({ capsule: { ...CAPSULE, id: `bench-${stream}-${i}` } }).done));
        const rate = runs / ((performance.now() - t) / 1e3);
        if (results.some((r) => r.status !== 'completed')) throw new Error('a cluster bench run did not complete');
        if (size === 1) single = rate;
        rows.push(row(`pipeline runs/s, ${size} kernel process${size === 1 ? '' : 'es'} taking runs from the queue (Neo4j checkpoints)${size === 1 ? '' : ', vs 1 process'}`, rate, size === 1 ? null : single, 'runs/s', 'reported', null));
      } finally {
        await origin.stop();
        for (const child of workers) child.kill('SIGTERM');
        await Promise.all(workers.map((child) => new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))));
        const nc = await connect({ servers: env.NATS_URL });
        const jsm = await jetstreamManager(nc);
        await jsm.streams.delete(stream).catch(() => false);
        for (const bucket of ['forge_members', 'forge_chains', 'forge_run_leases']) await jsm.streams.delete(`KV_${bucket}_${stream}`).catch(() => false);
        await nc.close();
      }
    }
  } finally {
    if (started.length > 0) await stopServices({ names: started });
  }
  return rows;
}
