import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { NewEntry } from '../../src/journal/journal.ts';
import { JournalProjector } from '../../src/journal/projector.ts';
import { SqliteJournal } from '../../src/journal/sqlite-journal.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import { MemoryStore } from '../../src/store/memory-store.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { until } from '../support/wait.ts';

const dirs: string[] = [];
const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function journal(path = join(mkdtempSync(join(tmpdir(), 'forge-projector-')), 'journal.db')): Promise<SqliteJournal> {
  dirs.push(join(path, '..'));
  const j = new SqliteJournal({ path, commitIntervalMs: 0 });
  await j.open();
  closers.push(() => j.close());
  return j;
}

function projector(j: SqliteJournal, store: MemoryStore, log = captureLogger()): JournalProjector {
  const p = new JournalProjector({ journal: j, store, logger: log.logger, intervalMs: 5, batch: 4 });
  closers.push(() => p.stop());
  return p;
}

const settled = (capsuleId: string, status = 'completed'): NewEntry => ({ kind: 'run.settled', at: 1_000, body: { status, error: null, ...(status === 'completed' ? { audit: { capsuleId, decision: 'approve', detail: { by: 'ops' } } } : {}) } });
const started: NewEntry = { kind: 'run.event', at: 1, body: { event: { type: 'X' } } };

/** Journals `count` runs (ids run_<from+i>): a start, then a settle (every third one failed). */
async function runs(j: SqliteJournal, from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++) {
    await j.append(`run_${i}`, 0, [started], { status: 'running' });
    await j.append(`run_${i}`, 1, [settled(`cap-${i}`, i % 3 === 2 ? 'failed' : 'completed')], { status: i % 3 === 2 ? 'failed' : 'completed', settled: true });
  }
}

describe('audit projection (SQLite journal, memory store)', () => {
  it('writes one audit entry per completed run, in batches, and resumes from its stored position without doubling', async () => {
    const j = await journal();
    const store = new MemoryStore();
    await runs(j, 0, 9);
    const first = projector(j, store);
    first.start();
    await first.caughtUp();
    const ids = (await store.listAudit()).map((a) => a.runId);
    expect(ids).toEqual(['run_0', 'run_1', 'run_3', 'run_4', 'run_6', 'run_7']);
    expect(await store.listAudit({ runId: 'run_1' })).toEqual([{ id: 'aud_run_1', runId: 'run_1', capsuleId: 'cap-1', decision: 'approve', detail: { by: 'ops' }, at: 1_000 }]);
    expect(first.status()).toMatchObject({ behind: 0, lagMs: 0, projected: 6, error: null });
    await first.stop();

    // A later projector (a restart) goes on from the stored position: the next runs only, nothing twice.
    await runs(j, 9, 3);
    const second = projector(j, store);
    second.start();
    await second.caughtUp();
    expect((await store.listAudit()).map((a) => a.runId)).toEqual(['run_0', 'run_1', 'run_3', 'run_4', 'run_6', 'run_7', 'run_9', 'run_10']);
    expect(second.status().projected).toBe(2);
  });

  it('a position past the journal\'s end (another journal) starts over; pruned newest appends do not leave it stuck', async () => {
    const j = await journal();
    const store = new MemoryStore();
    await store.saveProjection('audit', 500);
    await runs(j, 0, 3);
    const log = captureLogger();
    const p = projector(j, store, log);
    p.start();
    await p.caughtUp();
    expect((await store.listAudit()).map((a) => a.runId)).toEqual(['run_0', 'run_1']);
    expect(log.lines().some((l) => String(l.msg).includes('past the journal'))).toBe(true);
    // The newest appends are a settled run's; pruning it leaves positions nothing will feed.
    await j.append('run_x', 0, [started], { status: 'running' });
    await j.append('run_x', 1, [settled('cap-x', 'cancelled')], { status: 'cancelled', settled: true });
    await j.prune({ maxAgeMs: 0, now: Date.now() + 60_000 });
    await p.caughtUp();
    expect(p.status().behind).toBe(0);
  });

  it('while the store refuses writes the runs are not lost: the status says why, and it catches up after', async () => {
    const j = await journal();
    const store = new MemoryStore();
    let down = true;
    const flaky = Object.assign(Object.create(store) as MemoryStore, {
      saveProjection: (name: string, position: number) => (down ? Promise.reject(new Error('store down')) : store.saveProjection(name, position)),
      loadProjection: (name: string) => store.loadProjection(name),
      appendAudit: (entry: Parameters<MemoryStore['appendAudit']>[0]) => store.appendAudit(entry),
      flush: () => store.flush(),
    });
    await runs(j, 0, 2);
    const p = new JournalProjector({ journal: j, store: flaky, logger: captureLogger().logger, intervalMs: 5 });
    closers.push(() => p.stop());
    p.start();
    await until(() => p.status().error === 'store down', 'the projection to report the store down');
    expect(p.status()).toMatchObject({ position: 0, behind: 4 });
    down = false;
    await p.caughtUp();
    expect(p.status()).toMatchObject({ error: null, behind: 0 });
    // Written twice (once before the position could be saved), each run is still one entry.
    expect((await store.listAudit()).map((a) => a.id)).toEqual(['aud_run_0', 'aud_run_1']);
  });

  it('caughtUp() on a stopped projector fails with a typed error instead of waiting forever', async () => {
    const j = await journal();
    const p = projector(j, new MemoryStore());
    await expect(p.caughtUp()).rejects.toMatchObject({ code: 'PROJECTION_STOPPED' });
    p.start();
    await runs(j, 0, 1);
    const waiting = p.caughtUp();
    await p.stop();
    await expect(waiting).rejects.toMatchObject({ code: 'PROJECTION_STOPPED' });
  });

  it('projects what a kernel\'s runs journaled: the same entries the kernel writes itself without a projection', async () => {
    const j = await journal();
    const kernel: Kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, journal: j });
    closers.push(() => kernel.stop());
    const voter: NativeOverlay = { manifest: { name: 'voter', version: '1.0.0', phases: ['consensus'] }, exports: { run: () => ({ ok: true, data: { decision: 'approve' } }) } };
    await kernel.overlays.load(voter, { internal: true, trusted: true });
    const results = await Promise.all([1, 2, 3].map((i) => kernel.pipelines.start({ capsule: { id: `cap-${i}` } }).done));
    expect(results.map((r) => r.status)).toEqual(['completed', 'completed', 'completed']);
    const projected = new MemoryStore();
    const p = projector(j, projected);
    p.start();
    await p.caughtUp();
    // The entries' times differ by when each was made (the settle's time, the kernel's end of run).
    const strip = (entries: { runId: string; at: number }[]): unknown[] => entries.map((entry) => ({ ...entry, at: 0 })).sort((a, b) => a.runId.localeCompare(b.runId));
    expect(strip(await projected.listAudit())).toEqual(strip(await kernel.store.listAudit()));
    expect((await projected.listAudit()).map((a) => a.capsuleId).sort()).toEqual(['cap-1', 'cap-2', 'cap-3']);
  });

  it('in a cluster only the lease holder projects; a standby takes over from the stored position when it gets the lease', async () => {
    const j = await journal();
    const store = new MemoryStore();
    await runs(j, 0, 2);
    let leader = false;
    const p = new JournalProjector({ journal: j, store, logger: captureLogger().logger, intervalMs: 5, leader: () => Promise.resolve(leader) });
    closers.push(() => p.stop());
    p.start();
    await until(() => p.status().role === 'standby', 'the projector to stand by');
    await expect(p.caughtUp()).rejects.toMatchObject({ code: 'PROJECTION_STANDBY' });
    expect(await store.listAudit()).toEqual([]);
    // What the other process projected meanwhile is not projected again.
    await store.saveProjection('audit', await j.lastPosition());
    await runs(j, 2, 2);
    leader = true;
    await until(() => p.status().role === 'projecting' && p.status().behind === 0 && p.status().position === p.status().last && p.status().last > 0, 'the projector to take over');
    await p.caughtUp();
    expect((await store.listAudit()).map((a) => a.runId)).toEqual(['run_3']);
  });
});
