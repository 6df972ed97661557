// Copies of one run in the processes of a cluster: two Pipelines managers share a durable store and a lease table,
// as two kernel processes do (the NATS and Neo4j parts are tested in test/integration/pipeline-processes.test.ts).
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedClock } from 'xstate';
import type { RunLeases } from '../../src/cluster/run-leases.ts';
import { PHASES, type Phase } from '../../src/manifest.ts';
import { Pipelines, type RunResult } from '../../src/pipeline/pipelines.ts';
import { MemoryStore } from '../../src/store/memory-store.ts';
import { captureLogger } from '../support/engine.ts';
import { until as waitUntil } from '../support/wait.ts';

/** The memory store standing in for a store that outlives processes (checkpoints on, leases honoured). */
class SharedStore extends MemoryStore {
  override readonly kind = 'neo4j' as unknown as 'memory';
  /** While set, a checkpoint of this status waits for the test to let it through. */
  holdStatus: string | undefined;
  #held: (() => void)[] = [];

  override async saveRunSnapshot(record: Parameters<MemoryStore['saveRunSnapshot']>[0]): Promise<void> {
    if (record.status === this.holdStatus) await new Promise<void>((resolve) => this.#held.push(resolve));
    return super.saveRunSnapshot(record);
  }

  /** Checkpoints after a run's first are compare-and-set: held the same way. */
  override async replaceRunSnapshot(expected: { status: string; updatedAt: number }, record: Parameters<MemoryStore['saveRunSnapshot']>[0]): Promise<boolean> {
    if (record.status === this.holdStatus) await new Promise<void>((resolve) => this.#held.push(resolve));
    return super.replaceRunSnapshot(expected, record);
  }

  get holding(): boolean {
    return this.#held.length > 0;
  }

  letThrough(): void {
    this.holdStatus = undefined;
    for (const resolve of this.#held.splice(0)) resolve();
  }
}

/** A lease table shared by the "processes"; re-entrant within one, as RunLeases is. */
function leaseTable(): { leasesFor: (pid: string) => RunLeases; owner: (runId: string) => string | undefined; onClaim: { hook?: (() => void) | undefined }; slowRelease: { on: boolean } } {
  const owners = new Map<string, string>();
  const onClaim: { hook?: (() => void) | undefined } = {};
  // A release that takes a few turns of the event loop, as a delete in NATS does.
  const slowRelease = { on: false };
  const leasesFor = (pid: string): RunLeases =>
    ({
      claim: async (runId: string) => {
        const hook = onClaim.hook;
        onClaim.hook = undefined;
        hook?.();
        await Promise.resolve();
        const owner = owners.get(runId);
        if (owner !== undefined && owner !== pid) return false;
        owners.set(runId, pid);
        return true;
      },
      release: async (runId: string) => {
        if (slowRelease.on) for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
        if (owners.get(runId) === pid) owners.delete(runId);
      },
      holds: (runId: string) => owners.get(runId) === pid,
    }) as unknown as RunLeases;
  return { leasesFor, owner: (runId) => owners.get(runId), onClaim, slowRelease };
}

/** Overlay calls, by process and phase; a phase can be held until the test lets it go. */
function overlayCalls() {
  const calls: string[] = [];
  const held = new Map<string, () => void>();
  const holds = new Set<string>();
  const callFor =
    (pid: string) =>
    async (name: string): Promise<{ output: unknown; fuelUsed: number }> => {
      calls.push(`${pid}:${name}`);
      if (holds.has(`${pid}:${name}`)) await new Promise<void>((resolve) => held.set(`${pid}:${name}`, resolve));
      return { output: { ok: true, data: {} }, fuelUsed: 1 };
    };
  return { calls, callFor, hold: (key: string) => holds.add(key), release: (key: string) => (holds.delete(key), held.get(key)?.()) };
}

const until = (condition: () => boolean | Promise<boolean>): Promise<void> => waitUntil(condition, 'the copies to agree', { everyMs: 0 });

const resultOf = (id: string): RunResult => ({ id, status: 'completed', correlationId: id, phases: [], data: {}, warnings: [], error: null, decision: null, fuel: {}, events: [], startedAt: 0, durationMs: 1, drivenBy: 'P9' });

describe('copies of a run across the processes of a cluster', () => {
  const managers: Pipelines[] = [];
  afterEach(async () => {
    await Promise.all(managers.splice(0).map((m) => m.stop()));
  });

  function cluster(maxActiveRuns = 8) {
    const store = new SharedStore();
    const table = leaseTable();
    const overlays = overlayCalls();
    const processOf = (pid: string): Pipelines => {
      const pipelines = new Pipelines(
        {
          store,
          logger: captureLogger().logger,
          callOverlay: overlays.callFor(pid),
          overlaysOf: (phase: Phase) => [`ov-${phase}`],
          watchOverlays: () => undefined,
          publish: () => undefined,
          leases: table.leasesFor(pid),
          processId: pid,
        },
        { clock: new SimulatedClock(), decisionTimeoutMs: null, maxActiveRuns },
      );
      managers.push(pipelines);
      return pipelines;
    };
    return { store, table, overlays, processOf };
  }

  it('a stale waiting copy is not driven again: the run goes on from the state another process saved', async () => {
    const { store, overlays, processOf } = cluster();
    const [p1, p2] = [processOf('P1'), processOf('P2')];
    const first = p1.start({ capsule: { id: 'c' } });
    const resumeAt = async (): Promise<unknown> => ((await store.loadRunSnapshot(first.id))?.snapshot as { context: { resumeAt: unknown } }).context.resumeAt;
    await first.pause();
    expect(await resumeAt()).toBe('ingestion');

    // P2 resumes it from the store, runs ingestion, and pauses it again before analysis.
    overlays.hold('P2:ov-ingestion');
    const second = await p2.resume(first.id);
    await until(() => overlays.calls.includes('P2:ov-ingestion'));
    const pausedAgain = second.pause();
    overlays.release('P2:ov-ingestion');
    await pausedAgain;
    expect(second.status).toBe('paused');
    expect(await resumeAt()).toBe('analysis');

    // P1's copy still says "paused before ingestion": resuming there continues from the store's state.
    await p1.resume(first.id);
    const result = await first.done;
    expect(result.status).toBe('completed');
    expect(overlays.calls.filter((c) => c.endsWith(':ov-ingestion'))).toEqual(['P2:ov-ingestion']);
    expect(overlays.calls.filter((c) => c.startsWith('P1:'))).toEqual(PHASES.slice(1).map((phase) => `P1:ov-${phase}`));
    expect(p1.active()).toEqual([]);
  });

  it('a resume that loses to another process, or to an ending run, refuses and holds no slot and no lease', async () => {
    const { store, table, processOf } = cluster(1);
    const [p1, p2] = [processOf('P1'), processOf('P2')];
    const run = p1.start({ capsule: { id: 'c' } });
    await run.pause();

    // Another process is resuming it: P1 cannot.
    await store.saveRunSnapshot({ ...(await store.loadRunSnapshot(run.id))!, status: 'running' });
    await expect(p1.resume(run.id)).rejects.toMatchObject({ code: 'RUN_CLAIMED' });
    await store.saveRunSnapshot({ ...(await store.loadRunSnapshot(run.id))!, status: 'paused' });

    // The run's result arrives from another process while P1's resume waits for the lease.
    table.onClaim.hook = () => p1.settledElsewhere(resultOf(run.id));
    await expect(p1.resume(run.id)).rejects.toMatchObject({ code: 'RUN_FINISHED' });
    expect(await run.done).toMatchObject({ status: 'completed', drivenBy: 'P9' });
    expect(table.owner(run.id)).toBeUndefined();
    expect(p1.stats()).toMatchObject({ active: 0, queued: 0 });
    // The one slot is free: the next run is driven at once.
    expect((await p1.start({ capsule: { id: 'd' } }).done).status).toBe('completed');
    void p2;
  });

  it('two resumes of one run in one process: one drives it, the other is refused', async () => {
    const { overlays, processOf } = cluster();
    const p1 = processOf('P1');
    const run = p1.start({ capsule: { id: 'c' } });
    await run.pause();
    const outcomes = await Promise.allSettled([p1.resume(run.id), p1.resume(run.id)]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(outcomes.find((o) => o.status === 'rejected')).toMatchObject({ reason: { code: 'RUN_CLAIMED' } });
    expect((await run.done).status).toBe('completed');
    expect(overlays.calls.filter((c) => c.endsWith(':ov-ingestion'))).toHaveLength(1);
  });

  it('a copy waiting for a slot, settled by another process, is never begun and gives up its lease', async () => {
    const { table, overlays, processOf } = cluster(1);
    const p1 = processOf('P1');
    overlays.hold('P1:ov-ingestion');
    const busy = p1.start({ capsule: { id: 'busy' } });
    const waiting = p1.start({ capsule: { id: 'waiting' } });
    expect(waiting.status).toBe('queued');
    await table.leasesFor('P1').claim(waiting.id);
    p1.settledElsewhere(resultOf(waiting.id));
    expect(await waiting.done).toMatchObject({ status: 'completed', drivenBy: 'P9' });
    expect(table.owner(waiting.id)).toBeUndefined();
    overlays.release('P1:ov-ingestion');
    expect((await busy.done).status).toBe('completed');
    expect(overlays.calls).toHaveLength(PHASES.length);
    expect(p1.active()).toEqual([]);
  });

  it('a pause is acknowledged once the lease is free: another process can resume the run at once', async () => {
    const { table, processOf } = cluster();
    table.slowRelease.on = true;
    const [p1, p2] = [processOf('P1'), processOf('P2')];
    const run = p1.start({ capsule: { id: 'c' } });
    await run.pause();
    expect(table.owner(run.id)).toBeUndefined();
    const resumed = await p2.resume(run.id);
    expect((await resumed.done).status).toBe('completed');
  });

  it('a run stopped while it saves its pause ends as interrupted, and its paused checkpoint stands', async () => {
    const { store, processOf } = cluster();
    const p1 = processOf('P1');
    store.holdStatus = 'paused';
    const run = p1.start({ capsule: { id: 'c' } });
    void run.pause();
    await until(() => store.holding);
    // The run shows as paused already, but it is still saving (and driving) when the process stops.
    expect(run.status).toBe('paused');
    const stopped = p1.stop();
    store.letThrough();
    await stopped;
    expect((await run.done).status).toBe('interrupted');
    expect((await store.loadRunSnapshot(run.id))?.status).toBe('paused');
  });
});
