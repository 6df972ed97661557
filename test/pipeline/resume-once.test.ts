// One writer per run, whatever the callers do: a refused resume revives nothing, two resumes of one paused run from
// two kernels sharing a store drive it once, and an acknowledged decision is in the store before resume resolves.
import { afterEach, describe, expect, it } from 'vitest';
import { ForgeError } from '../../src/errors.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import { MemoryStore } from '../../src/store/memory-store.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { until } from '../support/wait.ts';

const TRUSTED = { internal: true, trusted: true } as const;

/** A store whose snapshot removals fail (the store is down for them) while `failing` is set. */
class FlakyDelete extends MemoryStore {
  failing = true;
  override deleteRunSnapshot(runId: string, expected?: { status: string; updatedAt: number }): Promise<boolean> {
    return this.failing ? Promise.reject(new ForgeError('STORE_UNAVAILABLE', 'down')) : super.deleteRunSnapshot(runId, expected);
  }
}

/** Two kernels on one store stand in for two processes sharing Neo4j (no NATS, so no leases). */
describe('resuming a run: one writer, always', () => {
  const kernels: Kernel[] = [];
  afterEach(async () => {
    await Promise.all(kernels.splice(0).map((k) => k.stop()));
  });

  /** A kernel whose consensus asks for a decision and whose execution phase counts its calls (and may be held). */
  const kernel = async (store: MemoryStore, calls: string[], name: string, hold?: Promise<void>): Promise<Kernel> => {
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store, pipelines: { checkpoints: true } });
    kernels.push(k);
    const voter: NativeOverlay = { manifest: { name: 'voter', version: '1.0.0', phases: ['consensus'] }, exports: { run: () => ({ ok: true, data: { needsDecision: true } }) } };
    const doer: NativeOverlay = {
      manifest: { name: 'doer', version: '1.0.0', phases: ['execution'] },
      exports: {
        run: async () => {
          calls.push(name);
          await hold;
          return { ok: true, data: { done: true } };
        },
      },
    };
    await k.overlays.load(voter, TRUSTED);
    await k.overlays.load(doer, TRUSTED);
    return k;
  };

  it('refuses to resume a run the store holds as running, without reviving or driving it', async () => {
    const store = new MemoryStore();
    const calls: string[] = [];
    let open: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (open = resolve));
    const a = await kernel(store, calls, 'a', held);
    const b = await kernel(store, calls, 'b');
    const run = a.pipelines.start({ capsule: { id: 'c1' } });
    await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision');
    await a.pipelines.resume(run.id, { decision: 'approve', by: 'ops' });
    await until(() => calls.length === 1, 'execution to start on a');
    expect((await store.loadRunSnapshot(run.id))?.status).toBe('running');
    await expect(b.pipelines.resume(run.id)).rejects.toMatchObject({ code: 'RUN_NOT_PAUSED' });
    await expect(b.pipelines.resume(run.id, { decision: 'approve', by: 'mallory' })).rejects.toMatchObject({ code: 'RUN_NOT_PAUSED' });
    expect(b.pipelines.get(run.id)).toBeUndefined();
    expect(b.pipelines.active()).toEqual([]);
    open();
    expect(await run.done).toMatchObject({ status: 'completed', decision: { by: 'ops' } });
    expect(calls).toEqual(['a']);
    expect(await store.listAudit({ runId: run.id })).toHaveLength(1);
  });

  it('lets exactly one of two kernels resume the same paused run; the other gets RUN_CLAIMED and the run runs once', async () => {
    const store = new MemoryStore();
    const calls: string[] = [];
    const a = await kernel(store, calls, 'a');
    const b = await kernel(store, calls, 'b');
    const c = await kernel(store, calls, 'c');
    const run = a.pipelines.start({ capsule: { id: 'c2' } });
    await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision');
    const outcomes = await Promise.allSettled([
      b.pipelines.resume(run.id, { decision: 'approve', by: 'bob' }),
      c.pipelines.resume(run.id, { decision: 'reject', by: 'carol' }),
      a.pipelines.resume(run.id, { decision: 'approve', by: 'alice' }),
    ]);
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const lost of outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected')) expect(lost.reason).toMatchObject({ code: expect.stringMatching(/^RUN_(CLAIMED|NOT_PAUSED)$/) as string });
    const winner = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<Kernel['pipelines']['resume']>>>).value;
    const result = await winner.done;
    expect(result.status).toBe('completed');
    await until(async () => (await store.loadRunSnapshot(run.id)) === undefined, 'the run to end');
    expect(calls.length).toBeLessThanOrEqual(1);
    expect(await store.listAudit({ runId: run.id })).toHaveLength(1);
    // The losers hold no live copy that could drive it later.
    for (const k of [a, b, c]) expect(k.pipelines.active().map((r) => r.id)).not.toContain(run.id);
  });

  it('has the decision in the store before resume resolves: a kernel that dies in execution continues it decided', async () => {
    const store = new MemoryStore();
    const calls: string[] = [];
    const a = await kernel(store, calls, 'a', new Promise(() => undefined));
    const run = a.pipelines.start({ capsule: { id: 'c3' } });
    await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision');
    await a.pipelines.resume(run.id, { decision: 'approve', by: 'ops', reason: 'looked fine' });
    const stored = await store.loadRunSnapshot(run.id);
    expect(stored?.status).toBe('running');
    expect((stored?.snapshot as { context: { decision: unknown } }).context.decision).toMatchObject({ approve: true, by: 'ops', reason: 'looked fine' });
    // "a" hangs in execution and is never heard from again; a new kernel restores the run from the store.
    const b = await kernel(store, calls, 'b');
    const [restored] = await b.pipelines.restore();
    expect(restored?.id).toBe(run.id);
    expect(await restored!.done).toMatchObject({ status: 'completed', decision: { approve: true, by: 'ops' } });
    expect(calls).toEqual(['a', 'b']);
  });

  it('refuses a malformed decision on a run revived from the store and keeps it waiting for a good one', async () => {
    const store = new MemoryStore();
    const calls: string[] = [];
    const a = await kernel(store, calls, 'a');
    const run = a.pipelines.start({ capsule: { id: 'c4' } });
    await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision');
    const b = await kernel(store, calls, 'b');
    await expect(b.pipelines.resume(run.id, { decision: 'maybe', by: 'x' })).rejects.toMatchObject({ code: 'INVALID_DECISION' });
    await expect(b.pipelines.resume(run.id)).rejects.toMatchObject({ code: 'INVALID_DECISION' });
    expect(b.pipelines.get(run.id)).toBeUndefined();
    expect((await store.loadRunSnapshot(run.id))?.status).toBe('awaitingDecision');
    const resumed = await b.pipelines.resume(run.id, { decision: 'reject', by: 'ops' });
    expect(await resumed.done).toMatchObject({ status: 'completed', decision: { approve: false } });
    expect(calls.length).toBeLessThanOrEqual(1);
  });

  it('ends a run whose store fails a checkpoint as failed with the store’s code, not as cancelled', async () => {
    class FailingStore extends MemoryStore {
      override saveRunSnapshot(): Promise<void> {
        return Promise.reject(new ForgeError('STORE_UNAVAILABLE', 'Neo4j is down'));
      }
    }
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store: new FailingStore(), pipelines: { checkpoints: true } });
    kernels.push(k);
    await k.overlays.load({ manifest: { name: 'step', version: '1.0.0', phases: ['ingestion'] }, exports: { run: () => ({ ok: true }) } }, TRUSTED);
    const result = await k.pipelines.start({ capsule: { id: 'c5' } }).done;
    expect(result).toMatchObject({ status: 'failed', error: { code: 'STORE_UNAVAILABLE', message: expect.stringContaining('Neo4j is down') as string } });
  });

  it('stops a driver that lost its run to a restore elsewhere at its next checkpoint: the run completes once', async () => {
    const store = new MemoryStore();
    const analysed: string[] = [];
    let open: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (open = resolve));
    const analyst = (name: string, hold?: Promise<void>): NativeOverlay => ({
      manifest: { name: 'analyst', version: '1.0.0', phases: ['analysis'] },
      exports: { run: async () => (analysed.push(name), await hold, { ok: true }) },
    });
    const make = async (name: string, hold?: Promise<void>): Promise<Kernel> => {
      const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store, pipelines: { checkpoints: true } });
      kernels.push(k);
      await k.overlays.load(analyst(name, hold), TRUSTED);
      return k;
    };
    // "a" checkpoints ingestion, then hangs in analysis (a partitioned process, say); "b" restores the run and ends it.
    const a = await make('a', held);
    const run = a.pipelines.start({ capsule: { id: 'c6' } });
    await until(() => analysed.length === 1, 'a to reach analysis');
    const b = await make('b');
    const [taken] = await b.pipelines.restore();
    expect(taken?.id).toBe(run.id);
    expect(await taken!.done).toMatchObject({ status: 'completed' });
    // "a" wakes up: its next checkpoint finds the run moved on without it, and it stops there.
    open();
    expect(await run.done).toMatchObject({ status: 'interrupted' });
    expect(analysed).toEqual(['a', 'b']);
    expect(await store.listAudit({ runId: run.id })).toHaveLength(1);
    expect(await store.loadRunSnapshot(run.id)).toBeUndefined();
  });

  it('never restores a run that completed but whose snapshot could not be removed (the store was down then)', async () => {
    const store = new FlakyDelete();
    const calls: string[] = [];
    const a = await kernel(store, calls, 'a');
    const run = a.pipelines.start({ capsule: { id: 'c7' } });
    await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision');
    await a.pipelines.resume(run.id, { decision: 'approve', by: 'ops' });
    expect(await run.done).toMatchObject({ status: 'completed' });
    // Its ending is in the store (a compare and set on its last checkpoint); only the removal failed.
    expect((await store.loadRunSnapshot(run.id))?.status).toBe('completed');
    // The same process never drives it again; nor does a new one, which finds the audit entry and cleans up.
    expect(await a.pipelines.restore()).toEqual([]);
    store.failing = false;
    const b = await kernel(store, calls, 'b');
    expect(await b.pipelines.restore()).toEqual([]);
    expect(await store.loadRunSnapshot(run.id)).toBeUndefined();
    expect(calls).toEqual(['a']);
    expect(await store.listAudit({ runId: run.id })).toHaveLength(1);
  });

  it('keeps trying to remove an ended run’s snapshot while the store is down, and succeeds once it is back', async () => {
    class DownThenUp extends MemoryStore {
      failures = 2;
      override deleteRunSnapshot(runId: string, expected?: { status: string; updatedAt: number }): Promise<boolean> {
        return this.failures-- > 0 ? Promise.reject(new ForgeError('STORE_UNAVAILABLE', 'down')) : super.deleteRunSnapshot(runId, expected);
      }
    }
    const store = new DownThenUp();
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store, pipelines: { checkpoints: true } });
    kernels.push(k);
    await k.overlays.load({ manifest: { name: 'step', version: '1.0.0', phases: ['ingestion'] }, exports: { run: () => ({ ok: true }) } }, TRUSTED);
    const run = k.pipelines.start({ capsule: { id: 'c8' } });
    expect(await run.done).toMatchObject({ status: 'completed' });
    await until(async () => (await store.loadRunSnapshot(run.id)) === undefined, 'the snapshot to be removed on a retry');
  });

  it('has a started run in the store before its first phase (run.durable): a process that dies in ingestion loses nothing', async () => {
    const store = new MemoryStore();
    const ran: string[] = [];
    const make = async (name: string, hold?: Promise<void>): Promise<Kernel> => {
      const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store, pipelines: { checkpoints: true } });
      kernels.push(k);
      await k.overlays.load({ manifest: { name: 'intake', version: '1.0.0', phases: ['ingestion'] }, exports: { run: async () => (ran.push(name), await hold, { ok: true }) } }, TRUSTED);
      return k;
    };
    const a = await make('a', new Promise(() => undefined));
    const run = a.pipelines.start({ capsule: { id: 'c9' } });
    await run.durable;
    expect((await store.loadRunSnapshot(run.id))?.status).toBe('queued');
    await until(() => ran.length === 1, 'a to start ingestion');
    const b = await make('b');
    const [restored] = await b.pipelines.restore();
    expect(restored?.id).toBe(run.id);
    expect(await restored!.done).toMatchObject({ status: 'completed' });
    expect(ran).toEqual(['a', 'b']);
  });

  it('rejects run.durable with the store’s error when a run cannot be stored, and fails that run with it', async () => {
    class Down extends MemoryStore {
      override saveRunSnapshot(): Promise<void> {
        return Promise.reject(new ForgeError('STORE_UNAVAILABLE', 'Neo4j is down'));
      }
    }
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store: new Down(), pipelines: { checkpoints: true } });
    kernels.push(k);
    let ran = 0;
    await k.overlays.load({ manifest: { name: 'intake', version: '1.0.0', phases: ['ingestion'] }, exports: { run: () => (ran++, { ok: true }) } }, TRUSTED);
    const run = k.pipelines.start({ capsule: { id: 'c10' } });
    await expect(run.durable).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(await run.done).toMatchObject({ status: 'failed', error: { code: 'STORE_UNAVAILABLE' } });
    expect(ran).toBe(0);
  });

  it('lets only one of two copies end a run, even when the takeover lands in its last phase (one audit entry)', async () => {
    const store = new MemoryStore();
    const settled: string[] = [];
    let open: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (open = resolve));
    const make = async (name: string, hold?: Promise<void>): Promise<Kernel> => {
      const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store, pipelines: { checkpoints: true } });
      kernels.push(k);
      await k.overlays.load({ manifest: { name: 'settler', version: '1.0.0', phases: ['settlement'] }, exports: { run: async () => (settled.push(name), await hold, { ok: true }) } }, TRUSTED);
      return k;
    };
    const a = await make('a', held);
    const run = a.pipelines.start({ capsule: { id: 'c11' } });
    await until(() => settled.length === 1, 'a to reach settlement');
    const b = await make('b');
    const [taken] = await b.pipelines.restore();
    expect(await taken!.done).toMatchObject({ status: 'completed' });
    open();
    expect(await run.done).toMatchObject({ status: 'interrupted' });
    expect(settled).toEqual(['a', 'b']);
    expect(await store.listAudit({ runId: run.id })).toHaveLength(1);
  });

  it('never drives again a run that was cancelled while its snapshot could not be removed', async () => {
    const store = new FlakyDelete();
    const calls: string[] = [];
    const a = await kernel(store, calls, 'a');
    const run = a.pipelines.start({ capsule: { id: 'c12' } });
    await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision');
    expect(await run.cancel('not needed')).toMatchObject({ status: 'cancelled' });
    expect((await store.loadRunSnapshot(run.id))?.status).toBe('cancelled');
    store.failing = false;
    const b = await kernel(store, calls, 'b');
    expect(await b.pipelines.restore()).toEqual([]);
    expect(await store.loadRunSnapshot(run.id)).toBeUndefined();
    expect(calls).toEqual([]);
  });

  it('settles a run cancelled while its decision pause is being saved, and a stop with the store down', async () => {
    class SlowPause extends MemoryStore {
      release: () => void = () => undefined;
      override async replaceRunSnapshot(expected: { status: string; updatedAt: number }, next: Parameters<MemoryStore['saveRunSnapshot']>[0]): Promise<boolean> {
        if (next.status === 'awaitingDecision') await new Promise<void>((resolve) => (this.release = resolve));
        return super.replaceRunSnapshot(expected, next);
      }
    }
    const store = new SlowPause();
    const calls: string[] = [];
    const a = await kernel(store, calls, 'a');
    const run = a.pipelines.start({ capsule: { id: 'c13' } });
    await until(() => run.status === 'awaitingDecision', 'the run to ask for a decision');
    const cancelled = run.cancel('changed our mind');
    store.release();
    expect(await cancelled).toMatchObject({ status: 'cancelled' });
    expect(await run.done).toMatchObject({ status: 'cancelled' });

    class Down extends MemoryStore {
      override saveRunSnapshot(): Promise<void> {
        return Promise.reject(new ForgeError('STORE_UNAVAILABLE', 'down'));
      }
    }
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, store: new Down(), pipelines: { checkpoints: true, maxActiveRuns: 1 } });
    await k.overlays.load({ manifest: { name: 'step', version: '1.0.0', phases: ['ingestion'] }, exports: { run: () => new Promise(() => undefined) } }, TRUSTED);
    k.pipelines.start({ capsule: { id: 'c14' } });
    k.pipelines.start({ capsule: { id: 'c15' } });
    await expect(k.stop()).resolves.toBeUndefined();
  });
});
