import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { Neo4jStore } from '../../src/store/neo4j-store.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { PipelineOptions } from '../../src/pipeline/pipelines.ts';
import { captureLogger } from '../support/engine.ts';
import { buildExamples, EXAMPLES_OUT, GOOD_CAPSULE, PERSONAL_CAPSULE } from '../support/examples.ts';
import { deleteStreams } from '../support/nats.ts';
import { until, budget } from '../support/wait.ts';

const SCRIPT = join(import.meta.dirname, 'fixtures', 'pipeline-process.ts');
/** Where a cluster keeps its runs: Neo4j snapshots, or a JetStream journal (the cluster tests run on both). */
const RUN_KEEPING = ['Neo4j snapshots', 'a JetStream journal'] as const;

/** A kernel process running the fixture script; its JSON lines arrive in order. */
function kernelProcess(env: Record<string, string>, ...args: string[]): { child: ChildProcess; next: () => Promise<Record<string, unknown>>; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [SCRIPT, ...args], { env: { ...process.env, ...env, EXAMPLES_DIR: EXAMPLES_OUT }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: Record<string, unknown>[] = [];
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    const waiter = waiting.shift();
    if (waiter === undefined) lines.push(parsed);
    else waiter(parsed);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const next = (): Promise<Record<string, unknown>> => {
    const line = lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return Promise.race([
      new Promise<Record<string, unknown>>((resolve) => waiting.push(resolve)),
      exited.then((code) => {
        throw new Error(`kernel process exited (${String(code)}) before printing: ${stderr}`);
      }),
    ]);
  };
  return { child, next, exited };
}

/** A phase handler that says when a run reaches it and holds the run there until `open()`. */
function heldPhase(): { handler: () => Promise<void>; reached: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let reach = (): void => undefined;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  return {
    handler: async () => {
      reach();
      await gate;
    },
    reached,
    open: () => open(),
  };
}

describe('pipeline runs across processes (real Neo4j, real child processes)', () => {
  const services = inject('services');
  const env = { NEO4J_URI: services.NEO4J_URI, NEO4J_USER: services.NEO4J_USER, NEO4J_PASSWORD: services.NEO4J_PASSWORD };
  const dir = mkdtempSync(join(tmpdir(), 'forge-pipeline-'));
  const capsuleFile = (capsule: Record<string, unknown>): string => {
    const file = join(dir, `${randomUUID()}.json`);
    writeFileSync(file, JSON.stringify({ capsule }));
    return file;
  };
  beforeAll(async () => {
    await buildExamples();
  }, budget(120_000));
  /** A fresh cluster of the test's own: a tag for its process ids, and its own stream and subject prefix on NATS. */
  const newCluster = (name: string, prefix: string, keeping: (typeof RUN_KEEPING)[number] = 'Neo4j snapshots') => {
    const tag = randomUUID().slice(0, 8);
    return { tag, cluster: { NATS_URL: services.NATS_URL, STREAM: `FORGE_${name}_${tag}`, PREFIX: `${prefix}${tag}`, ...(keeping === 'a JetStream journal' ? { JOURNAL: 'jetstream' } : {}) } };
  };
  /**
   * The runs whose pause the cluster acknowledged, as `kernel` hears it: `pipeline.paused` is published once the
   * pause is saved and its lease is free, so any process can resume the run from then on.
   */
  const pausesHeardBy = (kernel: Kernel): { until: (runId: string) => Promise<void> } => {
    const heard = new Set<string>();
    kernel.bus.subscribe({ name: `paused-${randomUUID()}`, types: ['pipeline.paused'] }, (event) => void heard.add((event.payload as { runId: string }).runId));
    return {
      until: async (runId) => {
        await until(() => heard.has(runId), `pipeline.paused for ${runId}`, { everyMs: 50 });
      },
    };
  };
  /** A kernel in this process joining the cluster on `cluster.STREAM`, with the example overlays loaded. */
  const clusterKernel = async (cluster: { NATS_URL: string; STREAM: string; PREFIX: string }, processId: string, pipelines: PipelineOptions) => {
    const kernel = await createKernel({
      logger: captureLogger().logger,
      cacheDir: false,
      store: { kind: 'neo4j', uri: env.NEO4J_URI, user: env.NEO4J_USER, password: env.NEO4J_PASSWORD },
      bus: { transport: 'nats', servers: cluster.NATS_URL, stream: cluster.STREAM, subjectPrefix: cluster.PREFIX, processId },
      pipelines,
    });
    await kernel.overlays.loadDirectory(EXAMPLES_OUT, { grant: 'declared', mode: 'relaxed' });
    return kernel;
  };

  it('a run paused at consensus by one process that exits is resumed from Neo4j by another', async () => {
    const id = `cap-${randomUUID()}`;
    const pauser = kernelProcess(env, 'pause', capsuleFile({ ...PERSONAL_CAPSULE, id }));
    const paused = await pauser.next();
    expect(paused.status).toBe('awaitingDecision');
    expect(await pauser.exited).toBe(0);

    const resumer = kernelProcess(env, 'resume', String(paused.runId), 'approve');
    const { result, ran } = (await resumer.next()) as { result: { status: string; decision: { by: string; approve: boolean }; data: { execution: { status: string; written: boolean } }; phases: { phase: string }[] }; ran: string[] };
    expect(await resumer.exited).toBe(0);
    expect(result.status).toBe('completed');
    expect(result.decision).toMatchObject({ approve: true, by: 'grace' });
    expect(result.data.execution).toMatchObject({ status: 'stored', written: true });
    expect(result.phases.map((p) => p.phase)).toEqual(['ingestion', 'analysis', 'validation', 'consensus', 'execution', 'propagation', 'settlement']);
    expect(ran).toEqual(['execution', 'propagation', 'settlement']);

    const kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, store: { kind: 'neo4j', uri: env.NEO4J_URI, user: env.NEO4J_USER, password: env.NEO4J_PASSWORD } });
    try {
      expect(await kernel.store.loadRunSnapshot(String(paused.runId))).toBeUndefined();
      expect(await kernel.store.listAudit({ runId: String(paused.runId) })).toMatchObject([{ capsuleId: id, decision: 'approve' }]);
      const { records } = await (kernel.store as Neo4jStore).driver.executeQuery('MATCH (c:Capsule {id: $id}) RETURN c.status AS status', { id });
      expect(records.map((r) => r.get('status') as string)).toEqual(['stored']);
    } finally {
      await kernel.stop();
    }
  }, budget(120_000));

  it('a process killed with SIGKILL mid-run has its run restarted from the last completed phase by the next', async () => {
    const crashing = kernelProcess(env, 'hang', capsuleFile({ ...GOOD_CAPSULE, id: `cap-${randomUUID()}` }), 'propagation');
    const hanging = await crashing.next();
    expect(hanging.hanging).toBe('propagation');
    crashing.child.kill('SIGKILL');
    await crashing.exited;

    const restorer = kernelProcess(env, 'restore', String(hanging.runId));
    const { result, ran } = (await restorer.next()) as { result: { status: string; phases: { phase: string; status: string }[] }; ran: string[] };
    expect(await restorer.exited).toBe(0);
    expect(result.status).toBe('completed');
    expect(ran).toEqual(['propagation', 'settlement']);
    expect(result.phases.map((p) => [p.phase, p.status])).toEqual(['ingestion', 'analysis', 'validation', 'consensus', 'execution', 'propagation', 'settlement'].map((p) => [p, 'completed']));
  }, budget(120_000));
  it.each(RUN_KEEPING)('in a cluster on NATS (runs in %s), another kernel process takes over a run whose process was killed, from its last checkpoint', async (keeping) => {
    const { tag, cluster } = newCluster('RUNS', 'r', keeping);
    // The doomed process is alone at first, so it takes its own run from the queue and hangs in it.
    const doomed = kernelProcess({ ...env, ...cluster, PROCESS_ID: `doomed-${tag}` }, 'hang', capsuleFile({ ...GOOD_CAPSULE, id: `cap-${randomUUID()}` }), 'propagation');
    const hanging = await doomed.next();
    expect(hanging.hanging).toBe('propagation');
    const survivor = kernelProcess({ ...env, ...cluster, PROCESS_ID: `survivor-${tag}` }, 'serve');
    try {
      expect(await survivor.next()).toMatchObject({ ready: `survivor-${tag}` });
      doomed.child.kill('SIGKILL');
      await doomed.exited;
      // The lease expires 5 s after the last renewal; the survivor looks every 2 s.
      // The survivor may also finish runs other tests left in the shared store: wait for this one.
      let taken: { completed?: string; status?: string; ran?: string[] } = {};
      while (taken.completed !== hanging.runId) taken = (await survivor.next());
      expect(taken).toEqual({ completed: hanging.runId, status: 'completed', ran: ['propagation', 'settlement'] });
    } finally {
      survivor.child.kill('SIGTERM');
      await survivor.exited;
      await deleteStreams(services.NATS_URL, [cluster.STREAM, `FORGE_JOURNAL_${cluster.STREAM}`]);
    }
  }, budget(120_000));
  it.each(RUN_KEEPING)('in a cluster on NATS (runs in %s), runs started on one process are taken from the queue and driven by the others', async (keeping) => {
    const { tag, cluster } = newCluster('QUEUE', 'q', keeping);
    const workers = [kernelProcess({ ...env, ...cluster, PROCESS_ID: `worker-1-${tag}` }, 'serve'), kernelProcess({ ...env, ...cluster, PROCESS_ID: `worker-2-${tag}` }, 'serve')];
    const origin = await createKernel({
      logger: captureLogger().logger,
      cacheDir: false,
      store: { kind: 'neo4j', uri: env.NEO4J_URI, user: env.NEO4J_USER, password: env.NEO4J_PASSWORD },
      bus: { transport: 'nats', servers: cluster.NATS_URL, stream: cluster.STREAM, subjectPrefix: cluster.PREFIX, processId: `origin-${tag}` },
      ...(keeping === 'a JetStream journal' ? { journal: { kind: 'jetstream' as const } } : {}),
      pipelines: { worker: false },
    });
    try {
      for (const w of workers) expect(await w.next()).toMatchObject({ ready: expect.stringContaining('worker-') as unknown });
      await origin.overlays.loadDirectory(EXAMPLES_OUT, { grant: 'declared', mode: 'relaxed' });
      await new Promise((r) => setTimeout(r, 500));
      const runs = Array.from({ length: 12 }, (_, i) => origin.pipelines.start({ capsule: { ...GOOD_CAPSULE, id: `cap-q${i}-${tag}` } }));
      expect(runs.every((r) => r.status === 'queued')).toBe(true);
      const results = await Promise.all(runs.map((r) => r.done));
      expect(results.map((r) => r.status)).toEqual(Array(12).fill('completed'));
      // Driven by the workers (which of them took which run is up to the queue), never by the origin.
      expect(results.every((r) => r.drivenBy === `worker-1-${tag}` || r.drivenBy === `worker-2-${tag}`)).toBe(true);

      // A run paused at consensus by a worker is resumed from the process that started it.
      const pauses = pausesHeardBy(origin);
      const paused = origin.pipelines.start({ capsule: { ...PERSONAL_CAPSULE, id: `cap-p-${tag}` } });
      await pauses.until(paused.id);
      await origin.pipelines.resume(paused.id, { decision: 'approve', by: 'grace' });
      expect(await paused.done).toMatchObject({ status: 'completed', decision: { approve: true, by: 'grace' }, drivenBy: `origin-${tag}` });
    } finally {
      await origin.stop();
      for (const w of workers) w.child.kill('SIGTERM');
      await Promise.all(workers.map((w) => w.exited));
      await deleteStreams(services.NATS_URL, [cluster.STREAM, `FORGE_JOURNAL_${cluster.STREAM}`]);
    }
  }, budget(120_000));

  it('in a cluster, the copy a worker keeps of a run it paused goes once another process resumes and finishes the run', async () => {
    const { tag, cluster } = newCluster('STALE', 's');
    // The origin's execution phase waits for the test, so the run is held while the origin drives it.
    const execution = heldPhase();
    const origin = await clusterKernel(cluster, `origin-${tag}`, { worker: false, phases: { execution: { handler: execution.handler } } });
    const worker = await clusterKernel(cluster, `worker-${tag}`, { worker: true });
    try {
      await new Promise((r) => setTimeout(r, 500));
      // The worker takes the run from the queue and pauses it at consensus: it keeps a waiting copy.
      const pauses = pausesHeardBy(origin);
      const started = origin.pipelines.start({ capsule: { ...PERSONAL_CAPSULE, id: `cap-s-${tag}` } });
      await pauses.until(started.id);
      const copy = worker.pipelines.active().find((r) => r.id === started.id);
      expect(copy?.status).toBe('awaitingDecision');

      // The origin resumes it from the store and drives it; while it does, the worker cannot resume its copy.
      await origin.pipelines.resume(started.id, { decision: 'approve', by: 'grace' });
      await execution.reached;
      await expect(worker.pipelines.resume(started.id, { decision: 'reject', by: 'mallory' })).rejects.toMatchObject({ code: 'RUN_CLAIMED' });
      execution.open();
      expect(await started.done).toMatchObject({ status: 'completed', drivenBy: `origin-${tag}` });

      // The worker's copy is gone once the result is broadcast; its handle resolves with that result.
      expect(await copy!.done).toMatchObject({ status: 'completed', drivenBy: `origin-${tag}` });
      expect(worker.pipelines.active().map((r) => r.id)).not.toContain(started.id);
      // Resuming it on the worker finds nothing to drive: a typed error, not a second execution.
      await expect(worker.pipelines.resume(started.id, { decision: 'approve', by: 'grace' })).rejects.toMatchObject({ code: 'RUN_NOT_FOUND' });
      expect(await origin.store.listAudit({ runId: started.id })).toHaveLength(1);
    } finally {
      await worker.stop();
      await origin.stop();
      await deleteStreams(services.NATS_URL, [cluster.STREAM, `FORGE_JOURNAL_${cluster.STREAM}`]);
    }
  }, budget(120_000));

  it('in a cluster, the process that started a run stops while a worker drives it: the worker\'s checkpoint stands', async () => {
    const { tag, cluster } = newCluster('ABANDON', 'a');
    const propagation = heldPhase();
    const origin = await clusterKernel(cluster, `origin-${tag}`, { worker: false });
    const worker = await clusterKernel(cluster, `worker-${tag}`, { phases: { propagation: { handler: propagation.handler } } });
    try {
      await new Promise((r) => setTimeout(r, 500));
      const run = origin.pipelines.start({ capsule: { ...GOOD_CAPSULE, id: `cap-a-${tag}` } });
      await propagation.reached;
      const before = await worker.store.loadRunSnapshot(run.id);
      expect(before?.status).toBe('running');
      // The origin's handle never ran a phase: stopping must end it without writing its first state over the
      // worker's checkpoint (which would restart the run from ingestion on a takeover).
      await origin.stop();
      expect(await run.done).toMatchObject({ status: 'interrupted' });
      expect(await worker.store.loadRunSnapshot(run.id)).toEqual(before);
      propagation.open();
      // The worker drops the run's snapshot as it ends, then writes its audit entry (durable before done resolves).
      await until(async () => (await worker.store.listAudit({ runId: run.id })).length > 0, 'the worker to settle the run', { everyMs: 50 });
      expect(await worker.store.loadRunSnapshot(run.id)).toBeUndefined();
      expect(await worker.store.listAudit({ runId: run.id })).toHaveLength(1);
      expect(worker.pipelines.history().find((r) => r.id === run.id)).toMatchObject({ status: 'completed', phases: expect.arrayContaining([expect.objectContaining({ phase: 'settlement', status: 'completed' })]) as unknown });
    } finally {
      propagation.open();
      await worker.stop();
      await origin.stop();
      await deleteStreams(services.NATS_URL, [cluster.STREAM, `FORGE_JOURNAL_${cluster.STREAM}`]);
    }
  }, budget(120_000));
});
