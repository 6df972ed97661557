// Runs journaled: the journal is the source of truth for a run, a restore folds it, and the conditional append makes
// one writer per run across kernels sharing one SQLite file (standing in for processes on one machine).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { JournalUnavailableError, type JournalEntry } from '../../src/journal/journal.ts';
import { SqliteJournal } from '../../src/journal/sqlite-journal.ts';
import { createKernel, type JournalOption, type Kernel, type KernelOptions } from '../../src/kernel.ts';
import type { PipelineRun } from '../../src/pipeline/pipelines.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { until } from '../support/wait.ts';

const TRUSTED = { internal: true, trusted: true } as const;

const kernels: Kernel[] = [];
const dirs: string[] = [];
/** Overlay calls held for a test, let go before the kernels stop (a stop waits for calls in flight). */
const holds: (() => void)[] = [];
function hold(): Promise<void> {
  return new Promise((resolve) => holds.push(resolve));
}
afterEach(async () => {
  for (const release of holds.splice(0)) release();
  await Promise.all(kernels.splice(0).map((k) => k.stop()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function journalPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'forge-runs-'));
  dirs.push(dir);
  return join(dir, 'journal.db');
}

/** A kernel on a SQLite journal whose consensus asks for a decision and whose execution counts (and may hold) its calls. */
async function kernel(path: string, calls: string[], name: string, options: { hold?: Promise<void>; decide?: boolean; extra?: Partial<KernelOptions> } = {}): Promise<Kernel> {
  const log = captureLogger();
  const k = await createKernel({ logger: log.logger, cacheDir: false, journal: { kind: 'sqlite', path }, ...options.extra });
  kernels.push(k);
  const voter: NativeOverlay = { manifest: { name: 'voter', version: '1.0.0', phases: ['consensus'] }, exports: { run: () => ({ ok: true, data: { needsDecision: options.decide ?? true } }) } };
  const doer: NativeOverlay = {
    manifest: { name: 'doer', version: '1.0.0', phases: ['execution'] },
    exports: {
      run: async (input) => {
        calls.push(name);
        await options.hold;
        return { ok: true, data: { done: true, saw: (input as { capsule?: { id?: string } }).capsule?.id ?? null } };
      },
    },
  };
  await k.overlays.load(voter, TRUSTED);
  await k.overlays.load(doer, TRUSTED);
  return k;
}

/**
 * Resolves once the run waits for a decision as the journal knows it: its status flips when consensus asks, and the
 * pause is acknowledged (`pause()` resolves, `pipeline.paused` is published) once it is journaled.
 */
async function waiting(run: PipelineRun): Promise<void> {
  await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision');
  await run.pause();
}

const kinds = (entries: JournalEntry[]): string[] => entries.map((e) => (e.kind === 'run.event' ? `event:${e.body.event.type}` : e.kind));

describe('runs on the SQLite journal', () => {
  it('journals a run from start to settle: its input, overlays, every event and call, and one settle', async () => {
    const path = journalPath();
    const calls: string[] = [];
    const k = await kernel(path, calls, 'a', { decide: false });
    const run = k.pipelines.start({ capsule: { id: 'c1' } });
    await run.durable;
    expect(await run.done).toMatchObject({ status: 'completed' });
    const entries = await k.journal!.read(run.id);
    expect(entries[0]).toMatchObject({ kind: 'run.started', seq: 1, body: { input: { runId: run.id, data: { capsule: { id: 'c1' } } } } });
    expect(entries[0]?.kind === 'run.started' && entries[0].body.overlays.find((o) => o.name === 'doer')).toMatchObject({ version: '1.0.0' });
    expect(kinds(entries).filter((k) => k === 'run.settled')).toHaveLength(1);
    expect(entries.at(-1)).toMatchObject({ kind: 'run.settled', body: { status: 'completed', error: null } });
    expect(kinds(entries).filter((k) => k.startsWith('event:'))).toEqual(Array(7).fill('event:PHASE_DONE'));
    const call = entries.find((e) => e.kind === 'run.call' && e.body.overlay === 'doer');
    expect(call).toMatchObject({ body: { phase: 'execution', attempt: 1, output: { ok: true, data: { done: true, saw: 'c1' } } } });
    expect(await k.journal!.head(run.id)).toMatchObject({ status: 'completed', settled: true });
  });

  it('brings a paused run back after a restart with no services, and the decision completes it once', async () => {
    const path = journalPath();
    const calls: string[] = [];
    const a = await kernel(path, calls, 'a');
    const run = a.pipelines.start({ capsule: { id: 'c2' } });
    await waiting(run);
    await a.stop();
    const b = await kernel(path, calls, 'b');
    const [restored] = await b.pipelines.restore();
    expect(restored?.id).toBe(run.id);
    expect(restored?.status).toBe('awaitingDecision');
    await b.pipelines.resume(run.id, { decision: 'approve', by: 'ops' });
    expect(await restored!.done).toMatchObject({ status: 'completed', decision: { by: 'ops' } });
    expect(calls).toEqual(['b']);
    // Nothing to restore a third time: an ended run never reopens.
    await b.stop();
    const c = await kernel(path, calls, 'c');
    expect(await c.pipelines.restore()).toEqual([]);
  });

  it('continues an interrupted run from the phase after its last journaled step, driving no phase twice', async () => {
    const path = journalPath();
    const calls: string[] = [];
    let open: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (open = resolve));
    const a = await kernel(path, calls, 'a', { decide: false, hold: held });
    const run = a.pipelines.start({ capsule: { id: 'c3' } });
    await until(() => calls.length === 1, 'execution to start');
    // A second kernel on the file while the first is stuck in execution (the first "died" there), once the first's
    // checkpoints up to consensus are committed (they are group-committed, within the journal's commit interval).
    const b = await kernel(path, calls, 'b', { decide: false });
    await until(async () => (await b.journal!.read(run.id)).filter((e) => e.kind === 'run.event').length === 4, 'the checkpoints before execution to be committed');
    const [restored] = await b.pipelines.restore();
    expect(restored?.status).toBe('execution');
    const result = await restored!.done;
    expect(result.status).toBe('completed');
    expect(result.phases.map((p) => p.phase)).toEqual(['ingestion', 'analysis', 'validation', 'consensus', 'execution', 'propagation', 'settlement']);
    // The first copy wakes up and loses: it records nothing.
    open();
    expect(await run.done).toMatchObject({ status: 'interrupted' });
    const entries = await b.journal!.read(run.id);
    expect(kinds(entries).filter((k) => k === 'run.settled')).toHaveLength(1);
    expect(kinds(entries).filter((k) => k === 'event:PHASE_DONE')).toHaveLength(7);
  });

  it('lets exactly one of two kernels resume the same paused run; the other gets RUN_CLAIMED and the run runs once', async () => {
    const path = journalPath();
    const calls: string[] = [];
    const a = await kernel(path, calls, 'a');
    const run = a.pipelines.start({ capsule: { id: 'c4' } });
    await waiting(run);
    const b = await kernel(path, calls, 'b');
    const c = await kernel(path, calls, 'c');
    const outcomes = await Promise.allSettled([b.pipelines.resume(run.id, { decision: 'approve', by: 'bob' }), c.pipelines.resume(run.id, { decision: 'reject', by: 'carol' })]);
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    expect(outcomes.find((o) => o.status === 'rejected')).toMatchObject({ reason: { code: 'RUN_CLAIMED' } });
    const winner = (outcomes.find((o) => o.status === 'fulfilled') as PromiseFulfilledResult<{ done: Promise<unknown> }>).value;
    await winner.done;
    const entries = await a.journal!.read(run.id);
    expect(kinds(entries).filter((k) => k === 'event:DECIDE')).toHaveLength(1);
    expect(kinds(entries).filter((k) => k === 'run.settled')).toHaveLength(1);
    // The first kernel's waiting copy is stale: resuming it is refused, and changes nothing.
    const late = await a.pipelines.resume(run.id, { decision: 'approve', by: 'late' }).catch((error: unknown) => error as { code: string });
    expect(['RUN_CLAIMED', 'RUN_FINISHED', 'RUN_NOT_PAUSED']).toContain((late as { code?: string }).code);
    expect((await a.journal!.read(run.id)).length).toBe(entries.length);
  });

  it('lets exactly one of two kernels restoring the same run drive it: the other runs no phase', async () => {
    const path = journalPath();
    const a = await createKernel({ logger: captureLogger().logger, cacheDir: false, journal: { kind: 'sqlite', path } });
    kernels.push(a);
    const stuck: NativeOverlay = { manifest: { name: 'stuck', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => hold().then(() => ({ ok: true, data: {} })) } };
    await a.overlays.load(stuck, TRUSTED);
    const run = a.pipelines.start({ capsule: { id: 'r2' } });
    await run.durable;
    const calls: string[] = [];
    const restorer = async (name: string): Promise<Kernel> => {
      const k = await kernel(path, calls, name, { decide: false });
      await k.overlays.load({ manifest: { name: 'stuck', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => (calls.push(`${name}:analysis`), { ok: true, data: {} }) } }, TRUSTED);
      return k;
    };
    const [b, c] = await Promise.all([restorer('b'), restorer('c')]);
    const [fromB, fromC] = await Promise.all([b.pipelines.restore(), c.pipelines.restore()]);
    const results = await Promise.all([...fromB, ...fromC].map((r) => r.done));
    expect(results.map((r) => r.status).sort()).toEqual(['completed', 'interrupted']);
    const winner = results.find((r) => r.status === 'completed')!;
    expect(new Set(calls.map((c) => c.split(':')[0])).size).toBe(1);
    expect(calls.filter((c) => c.endsWith(':analysis'))).toHaveLength(1);
    expect(winner.phases.map((p) => p.phase)).toEqual(['ingestion', 'analysis', 'validation', 'consensus', 'execution', 'propagation', 'settlement']);
    const entries = await b.journal!.read(run.id);
    expect(kinds(entries).filter((k) => k === 'run.driven')).toHaveLength(1);
    expect(kinds(entries).filter((k) => k === 'run.settled')).toHaveLength(1);
  });

  it('refuses to resume a run the journal holds as running, reviving nothing', async () => {
    const path = journalPath();
    const calls: string[] = [];
    let open: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (open = resolve));
    const a = await kernel(path, calls, 'a', { hold: held });
    const b = await kernel(path, calls, 'b');
    const run = a.pipelines.start({ capsule: { id: 'c5' } });
    await waiting(run);
    await a.pipelines.resume(run.id, { decision: 'approve', by: 'ops' });
    await until(() => calls.length === 1, 'execution to start');
    await expect(b.pipelines.resume(run.id)).rejects.toMatchObject({ code: 'RUN_NOT_PAUSED' });
    await expect(b.pipelines.resume(run.id, { decision: 'approve', by: 'mallory' })).rejects.toMatchObject({ code: 'RUN_NOT_PAUSED' });
    expect(b.pipelines.active()).toEqual([]);
    open();
    expect(await run.done).toMatchObject({ status: 'completed', decision: { by: 'ops' } });
    expect(calls).toEqual(['a']);
  });

  it('has the decision journaled before resume resolves: a kernel that dies in execution is continued decided', async () => {
    const path = journalPath();
    const calls: string[] = [];
    const a = await kernel(path, calls, 'a', { hold: hold() });
    const run = a.pipelines.start({ capsule: { id: 'c6' } });
    await waiting(run);
    await a.pipelines.resume(run.id, { decision: 'approve', by: 'ops', reason: 'looks right' });
    const b = await kernel(path, calls, 'b');
    const [restored] = await b.pipelines.restore();
    expect(restored?.status).toBe('execution');
    expect(await restored!.done).toMatchObject({ status: 'completed', decision: { by: 'ops', reason: 'looks right' } });
  });

  it('is in the journal before its first phase (run.durable): a process that dies in ingestion loses nothing', async () => {
    const path = journalPath();
    const a = await createKernel({ logger: captureLogger().logger, cacheDir: false, journal: { kind: 'sqlite', path } });
    kernels.push(a);
    const stuck: NativeOverlay = { manifest: { name: 'stuck', version: '1.0.0', phases: ['ingestion'] }, exports: { run: () => hold().then(() => ({ ok: false })) } };
    await a.overlays.load(stuck, TRUSTED);
    const run = a.pipelines.start({ capsule: { id: 'c7' } });
    await run.durable;
    const b = await kernel(path, [], 'b', { decide: false });
    const [restored] = await b.pipelines.restore();
    expect(restored?.id).toBe(run.id);
  });

  /**
   * Two runs wait for a decision; the kernel stops; `damage` spoils the first one's journal in the file; a new kernel
   * restores: the second comes back, and the log names the first with JOURNAL_CORRUPT.
   */
  async function restoreAfterDamage(damage: (raw: DatabaseSync, runId: string) => void): Promise<void> {
    const path = journalPath();
    const a = await kernel(path, [], 'a');
    const first = a.pipelines.start({ capsule: { id: 'd1' } });
    const second = a.pipelines.start({ capsule: { id: 'd2' } });
    await until(() => first.status === 'awaitingDecision' && second.status === 'awaitingDecision', 'both runs to wait');
    await a.stop();
    const raw = new DatabaseSync(path);
    damage(raw, first.id);
    raw.close();
    const log = captureLogger();
    const b = await createKernel({ logger: log.logger, cacheDir: false, journal: { kind: 'sqlite', path } });
    kernels.push(b);
    expect((await b.pipelines.restore()).map((r) => r.id)).toEqual([second.id]);
    expect(log.lines().some((l) => l.runId === first.id && (l.err as { code?: string } | undefined)?.code === 'JOURNAL_CORRUPT')).toBe(true);
  }

  it('restores the other runs when one run\'s journal is damaged, naming the damaged one in the log', async () => {
    await restoreAfterDamage((raw, runId) => raw.prepare("UPDATE journal_entries SET text = replace(text, 'd1', 'x1') WHERE stream = ? AND seq = 1").run(runId));
  });

  it('restores the others when a run lost entries at its end (no hang: the run is named in the log)', async () => {
    await restoreAfterDamage((raw, runId) => {
      const { seq } = raw.prepare('SELECT seq FROM journal_streams WHERE stream = ?').get(runId) as { seq: number };
      raw.prepare('DELETE FROM journal_entries WHERE stream = ? AND seq >= ?').run(runId, seq - 1);
    });
  });

  it('refuses to start a kernel whose journal cannot be opened, with a typed error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-runs-'));
    dirs.push(dir);
    await expect(createKernel({ logger: captureLogger().logger, cacheDir: false, journal: { kind: 'sqlite', path: dir } })).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
    await expect(createKernel({ logger: captureLogger().logger, cacheDir: false, journal: { kind: 'nope' } as unknown as JournalOption })).rejects.toMatchObject({ code: 'INVALID_CONFIG' });
  });
});

/** A SQLite journal whose next `failNext` appends fail (the disk is full, say). */
class FailingJournal extends SqliteJournal {
  failNext = 0;
  override append(...args: Parameters<SqliteJournal['append']>): ReturnType<SqliteJournal['append']> {
    if (this.failNext > 0) {
      this.failNext--;
      return Promise.reject(new JournalUnavailableError('disk full'));
    }
    return super.append(...args);
  }
}

describe('a journal that cannot be written', () => {
  /** A kernel whose analysis overlay makes the journal fail its next `failures` appends. */
  async function failingKernel(failures: number): Promise<{ k: Kernel; journal: FailingJournal; path: string; calls: string[] }> {
    const path = journalPath();
    const journal = new FailingJournal({ path });
    const calls: string[] = [];
    const k = await kernel(path, calls, 'a', { decide: false, extra: { journal } });
    const breaker: NativeOverlay = {
      manifest: { name: 'breaker', version: '1.0.0', phases: ['analysis'] },
      exports: {
        run: () => {
          journal.failNext = failures;
          return { ok: true, data: {} };
        },
      },
    };
    await k.overlays.load(breaker, TRUSTED);
    return { k, journal, path, calls };
  }

  it('halts a run whose checkpoint fails with JOURNAL_UNAVAILABLE, and resolves it only once its end is journaled', async () => {
    // The checkpoint after analysis fails, and so does the first try at journaling the end; the second lands.
    const { k, journal, path, calls } = await failingKernel(2);
    const run = k.pipelines.start({ capsule: { id: 'f1' } });
    await run.durable;
    expect(await run.done).toMatchObject({ status: 'failed', error: { code: 'JOURNAL_UNAVAILABLE' } });
    expect(calls).toEqual([]);
    expect(await journal.head(run.id)).toMatchObject({ settled: true, status: 'failed' });
    expect((await journal.read(run.id)).filter((e) => e.kind === 'run.settled')).toHaveLength(1);
    await k.stop();
    const b = await kernel(path, calls, 'b', { decide: false });
    expect(await b.pipelines.restore()).toEqual([]);
  });

  it('ends a run whose end cannot be journaled as interrupted, and a restore continues it once the journal is back', async () => {
    const { k, path, calls } = await failingKernel(Number.POSITIVE_INFINITY);
    const run = k.pipelines.start({ capsule: { id: 'f3' } });
    await run.durable;
    // Halted (its actor failed) while the end keeps failing to land; the kernel stops meanwhile.
    await until(() => run.status === 'failed', 'the run to halt');
    await k.stop();
    expect(await run.done).toMatchObject({ status: 'interrupted' });
    const b = await kernel(path, calls, 'b', { decide: false });
    await b.overlays.load({ manifest: { name: 'breaker', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => ({ ok: true, data: {} }) } }, TRUSTED);
    const [restored] = await b.pipelines.restore();
    expect(restored?.id).toBe(run.id);
    expect(await restored!.done).toMatchObject({ status: 'completed' });
    expect(calls).toEqual(['b']);
  });

  it('recognises an end that landed though its answer was lost: the run completes, journaled once', async () => {
    const path = journalPath();
    /** Commits the run's end, then reports a failure (the answer lost on the way back), once. */
    class LostAnswer extends SqliteJournal {
      lose = true;
      override async append(...args: Parameters<SqliteJournal['append']>): ReturnType<SqliteJournal['append']> {
        const seq = await super.append(...args);
        if (this.lose && args[3].settled === true) {
          this.lose = false;
          throw new JournalUnavailableError('connection reset');
        }
        return seq;
      }
    }
    const journal = new LostAnswer({ path });
    const k = await kernel(path, [], 'a', { decide: false, extra: { journal } });
    const run = k.pipelines.start({ capsule: { id: 'l1' } });
    expect(await run.done).toMatchObject({ status: 'completed' });
    expect((await journal.read(run.id)).filter((e) => e.kind === 'run.settled')).toHaveLength(1);
  });

  it('ends a run once when the kernel stops while its end is being retried', async () => {
    const { k, path } = await failingKernel(2);
    const run = k.pipelines.start({ capsule: { id: 's1' } });
    await run.durable;
    await until(() => run.status === 'failed', 'the run to halt');
    await k.stop();
    const result = await run.done;
    const reader = new SqliteJournal({ path });
    await reader.open();
    const settled = (await reader.read(run.id)).filter((e) => e.kind === 'run.settled');
    await reader.close();
    expect(settled.length).toBeLessThanOrEqual(1);
    expect(result.status).toBe(settled.length === 1 ? 'failed' : 'interrupted');
  });

  it('refuses to start a run it cannot journal, and the run runs nothing', async () => {
    const path = journalPath();
    const journal = new FailingJournal({ path });
    const calls: string[] = [];
    const k = await kernel(path, calls, 'a', { decide: false, extra: { journal } });
    journal.failNext = Number.POSITIVE_INFINITY;
    const run = k.pipelines.start({ capsule: { id: 'f2' } });
    await expect(run.durable).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
    expect(await run.done).toMatchObject({ status: 'failed' });
    expect(calls).toEqual([]);
  });
});

describe('the default memory journal', () => {
  it('records each run (calls with outputs and fuel) without checkpoints, and keeps store snapshots out of it', async () => {
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    kernels.push(k);
    expect(k.journal?.kind).toBe('memory');
    const echo: NativeOverlay = { manifest: { name: 'echo', version: '2.0.0', phases: ['analysis'] }, exports: { run: () => ({ ok: true, data: { seen: true } }) } };
    await k.overlays.load(echo, TRUSTED);
    const run = k.pipelines.start({ capsule: { id: 'm1' } });
    expect(await run.done).toMatchObject({ status: 'completed' });
    const entries = await k.journal!.read(run.id);
    expect(kinds(entries)[0]).toBe('run.started');
    expect(entries.find((e) => e.kind === 'run.call')).toMatchObject({ body: { overlay: 'echo', phase: 'analysis', output: { ok: true, data: { seen: true } } } });
    expect(await k.store.listRunSnapshots()).toEqual([]);
  });

  it('is off with journal: false (runs are store snapshots, as before)', async () => {
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, journal: false });
    kernels.push(k);
    expect(k.journal).toBeUndefined();
    expect(await k.pipelines.start({ capsule: { id: 'm2' } }).done).toMatchObject({ status: 'completed' });
  });
});
