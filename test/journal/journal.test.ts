import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import type { Journal, NewEntry } from '../../src/journal/journal.ts';
import { MemoryJournal } from '../../src/journal/memory-journal.ts';
import { SqliteJournal } from '../../src/journal/sqlite-journal.ts';
import { captureLogger } from '../support/engine.ts';

const dirs: string[] = [];
const journals: Journal[] = [];
afterEach(async () => {
  await Promise.all(journals.splice(0).map((j) => j.close().catch(() => undefined)));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'forge-journal-'));
  dirs.push(dir);
  return dir;
}

const log = captureLogger();

async function sqlite(path = join(tempDir(), 'journal.db')): Promise<SqliteJournal> {
  const journal = new SqliteJournal({ path, logger: log.logger });
  journals.push(journal);
  await journal.open();
  return journal;
}

const event = (type: string, at = 1): NewEntry => ({ kind: 'run.event', at, body: { event: { type } } });

const backends: [string, () => Promise<Journal>][] = [
  ['memory', () => Promise.resolve(new MemoryJournal())],
  ['sqlite', () => sqlite()],
];

describe.each(backends)('journal contract: %s', (_name, make) => {
  it('appends in order, conditional on the last sequence number', async () => {
    const journal = await make();
    expect(await journal.append('run_a', 0, [event('A'), event('B')], { status: 'running' })).toBe(2);
    // A writer that read seq 0 (or 1) lost the race: nothing of its append lands.
    expect(await journal.append('run_a', 0, [event('X')], { status: 'running' })).toBeUndefined();
    expect(await journal.append('run_a', 1, [event('X')], { status: 'running' })).toBeUndefined();
    expect(await journal.append('run_a', 2, [event('C')], { status: 'paused' })).toBe(3);
    const entries = await journal.read('run_a');
    expect(entries.map((e) => [e.seq, e.kind, (e.body as { event: { type: string } }).event.type])).toEqual([
      [1, 'run.event', 'A'],
      [2, 'run.event', 'B'],
      [3, 'run.event', 'C'],
    ]);
    expect((await journal.read('run_a', 3)).map((e) => e.seq)).toEqual([3]);
    expect(await journal.head('run_a')).toMatchObject({ stream: 'run_a', type: 'run', seq: 3, status: 'paused', settled: false });
    expect(await journal.read('run_none')).toEqual([]);
    for (const from of [0, -1, 1.5, '2']) await expect(journal.read('run_a', from as number)).rejects.toMatchObject({ code: 'INVALID_JOURNAL_INPUT' });
    expect(await journal.head('run_none')).toBeUndefined();
  });

  it('is idempotent by dedupe key: a retried append lands once', async () => {
    const journal = await make();
    expect(await journal.append('run_a', 0, [event('A')], { status: 'running', dedupeKey: 'k1' })).toBe(1);
    expect(await journal.append('run_a', 0, [event('A')], { status: 'running', dedupeKey: 'k1' })).toBe(1);
    expect(await journal.read('run_a')).toHaveLength(1);
  });

  it('lets exactly one of many concurrent writers at the same sequence number win', async () => {
    const journal = await make();
    await journal.append('run_a', 0, [event('start')], { status: 'running' });
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => journal.append('run_a', 1, [event(`w${i}`)], { status: 'running' })));
    expect(results.filter((r) => r === 2)).toHaveLength(1);
    expect(results.filter((r) => r === undefined)).toHaveLength(9);
    expect(await journal.read('run_a')).toHaveLength(2);
  });

  it('chains appends on their keys: { after } the last append\'s key, refused after any other', async () => {
    const journal = await make();
    expect(await journal.append('run_k', { after: null }, [event('A')], { status: 'running', dedupeKey: 'k1' })).toBe(1);
    expect(await journal.append('run_k', { after: null }, [event('X')], { status: 'running', dedupeKey: 'kx' })).toBeUndefined();
    // Two appends chained without waiting in between: both land, in order.
    const [second, third] = await Promise.all([
      journal.append('run_k', { after: 'k1' }, [event('B')], { status: 'running', dedupeKey: 'k2', lazy: true }),
      journal.append('run_k', { after: 'k2' }, [event('C')], { status: 'paused', dedupeKey: 'k3' }),
    ]);
    expect([second, third]).toEqual([2, 3]);
    // A writer still chaining on an older key lost the run.
    expect(await journal.append('run_k', { after: 'k2' }, [event('Y')], { status: 'running', dedupeKey: 'ky' })).toBeUndefined();
    expect(await journal.head('run_k')).toMatchObject({ seq: 3, status: 'paused', lastKey: 'k3' });
    await expect(journal.append('run_k', { after: 'k3' }, [event('Z')], { status: 'running' })).rejects.toMatchObject({ code: 'INVALID_JOURNAL_INPUT' });
  });

  it('lists heads by status and type, newest first', async () => {
    const journal = await make();
    await journal.append('run_a', 0, [event('A')], { status: 'running' });
    await journal.append('run_b', 0, [event('A')], { status: 'paused' });
    await journal.append('chain_c', 0, [{ kind: 'chain.started', at: 1, body: { chain: {} } }], { status: 'active' });
    expect((await journal.list({ statuses: ['running', 'paused'] })).map((h) => h.stream).sort()).toEqual(['run_a', 'run_b']);
    expect((await journal.list({ type: 'chain' })).map((h) => h.stream)).toEqual(['chain_c']);
    expect(await journal.list({ statuses: [] })).toEqual([]);
  });

  it('refuses malformed appends with a typed error and writes nothing', async () => {
    const journal = await make();
    const bad: [string, unknown, unknown, unknown][] = [
      ['../etc', 0, [event('A')], { status: 'running' }],
      ['run_a', -1, [event('A')], { status: 'running' }],
      ['run_a', 0.5, [event('A')], { status: 'running' }],
      ['run_a', 0, [], { status: 'running' }],
      ['run_a', 0, [{ kind: 'nope', at: 1, body: {} }], { status: 'running' }],
      ['run_a', 0, [{ kind: 'run.event', at: 'x', body: {} }], { status: 'running' }],
      ['run_a', 0, [{ kind: 'run.event', at: 1, body: null }], { status: 'running' }],
      ['run_a', 0, [event('A')], { status: '' }],
      ['run_a', 0, [event('A')], { status: 'x', dedupeKey: 3 }],
    ];
    for (const [stream, seq, entries, options] of bad) {
      const error = await Promise.resolve()
        .then(() => journal.append(stream, seq as number, entries as NewEntry[], options as { status: string }))
        .then(() => undefined, (e: unknown) => e);
      expect(isForgeError(error, 'INVALID_JOURNAL_INPUT'), `${JSON.stringify([stream, seq, entries, options])}`).toBe(true);
    }
    expect(await journal.list()).toEqual([]);
  });

  it('drops settled streams by age and by size, never a live one', async () => {
    const journal = await make();
    await journal.append('run_old', 0, [event('A')], { status: 'completed', settled: true });
    await journal.append('run_live', 0, [event('A')], { status: 'running' });
    const later = Date.now() + 60_000;
    expect(await journal.prune({ maxAgeMs: 1_000, now: later })).toBe(1);
    expect((await journal.list()).map((h) => h.stream)).toEqual(['run_live']);
    await expect(journal.prune({ maxAgeMs: -1 })).rejects.toMatchObject({ code: 'INVALID_JOURNAL_INPUT' });
  });

  it('property: any interleaving of writers leaves each stream a gap-free sequence with one winner per slot', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom('run_x', 'run_y'), fc.nat(4)), { minLength: 1, maxLength: 30 }), async (ops) => {
        const journal = await make();
        const model = new Map<string, number>();
        const results = await Promise.all(ops.map(([stream, seq]) => journal.append(stream, seq, [event(`${seq}`)], { status: 'running' }).then((r) => [stream, seq, r] as const)));
        // Appends of one turn are decided in order: replay them on a model.
        for (const [stream, seq, result] of results) {
          const head = model.get(stream) ?? 0;
          if (head === seq) {
            model.set(stream, head + 1);
            expect(result).toBe(head + 1);
          } else expect(result).toBeUndefined();
        }
        for (const [stream, head] of model) expect((await journal.read(stream)).map((e) => e.seq)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
        await journal.close();
      }),
      { numRuns: 25 },
    );
  });
});

describe('SQLite journal', () => {
  it('keeps what it acknowledged across a reopen', async () => {
    const path = join(tempDir(), 'j.db');
    const first = await sqlite(path);
    await first.append('run_a', 0, [event('A'), event('B')], { status: 'paused' });
    await first.close();
    const second = await sqlite(path);
    expect((await second.read('run_a')).map((e) => e.seq)).toEqual([1, 2]);
    expect(await second.head('run_a')).toMatchObject({ seq: 2, status: 'paused' });
  });

  it('names the stream and sequence number of a damaged entry, truncates a damaged last one at open, and reads other streams', async () => {
    const path = join(tempDir(), 'j.db');
    const first = await sqlite(path);
    await first.append('run_a', 0, [event('A'), event('B'), event('C')], { status: 'running' });
    await first.append('run_b', 0, [event('A')], { status: 'running' });
    await first.close();
    const raw = new DatabaseSync(path);
    // Entry 2 of run_a damaged in the middle; entry 3 (the last) damaged too.
    raw.prepare("UPDATE journal_entries SET text = replace(text, '\"B\"', '\"b\"') WHERE stream = 'run_a' AND seq = 2").run();
    raw.prepare("UPDATE journal_entries SET text = substr(text, 1, 10) WHERE stream = 'run_a' AND seq = 3").run();
    raw.close();
    const second = await sqlite(path);
    expect(await second.head('run_a')).toMatchObject({ seq: 2 });
    expect(log.lines().some((l) => l.stream === 'run_a' && l.seq === 3 && String(l.msg).includes('truncated'))).toBe(true);
    const error = await second.read('run_a').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'JOURNAL_CORRUPT', details: { stream: 'run_a', seq: 2 } });
    expect(await second.read('run_b')).toHaveLength(1);
  });

  it('refuses an entry of an unknown format version with a typed error', async () => {
    const path = join(tempDir(), 'j.db');
    const first = await sqlite(path);
    await first.append('run_a', 0, [event('A'), event('B')], { status: 'running' });
    await first.close();
    const raw = new DatabaseSync(path);
    const { crc32 } = await import('node:zlib');
    const text = JSON.stringify({ v: 99, stream: 'run_a', seq: 1, kind: 'run.event', at: 1, body: {} });
    raw.prepare("UPDATE journal_entries SET text = ?, crc = ? WHERE stream = 'run_a' AND seq = 1").run(text, crc32(text));
    raw.close();
    const second = await sqlite(path);
    await expect(second.read('run_a')).rejects.toMatchObject({ code: 'JOURNAL_UNSUPPORTED', details: { stream: 'run_a', seq: 1 } });
  });

  it('fails with JOURNAL_UNAVAILABLE when the file cannot be opened, acknowledging nothing', async () => {
    // A directory that is a file (root writes anywhere, so permissions alone would not stop this test's user).
    const file = join(tempDir(), 'not-a-dir');
    writeFileSync(file, 'not a database, '.repeat(100));
    await expect(sqlite(join(file, 'j.db'))).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
    // A file that is not a database.
    await expect(sqlite(file)).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
  });

  it('fails appends with JOURNAL_UNAVAILABLE once the database refuses writes', async () => {
    const path = join(tempDir(), 'j.db');
    const journal = await sqlite(path);
    await journal.append('run_a', 0, [event('A')], { status: 'running' });
    // Another connection holds the write lock past the busy timeout: the append must fail, not hang or half-land.
    const other = new DatabaseSync(path);
    other.exec('PRAGMA busy_timeout = 0');
    other.exec('BEGIN IMMEDIATE');
    const quick = new SqliteJournal({ path, busyTimeoutMs: 50, logger: log.logger });
    journals.push(quick);
    await quick.open().catch(() => undefined);
    const error = await quick.append('run_a', 1, [event('B')], { status: 'running' }).catch((e: unknown) => e);
    other.exec('ROLLBACK');
    other.close();
    expect(error).toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
    expect(await journal.read('run_a')).toHaveLength(1);
  });

  it('commits lazy appends together within its commit interval, at once when someone waits, and before a read', async () => {
    const journal = new SqliteJournal({ path: join(tempDir(), 'lazy.db'), commitIntervalMs: 60_000 });
    journals.push(journal);
    await journal.open();
    let landed = 0;
    const lazies = [1, 2, 3].map((i) => journal.append(`run_l${i}`, 0, [event('A')], { status: 'running', lazy: true }).then((seq) => (landed++, seq)));
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(landed).toBe(0);
    // An append someone waits for takes the lazy ones with it.
    expect(await journal.append('run_now', 0, [event('A')], { status: 'running' })).toBe(1);
    expect(await Promise.all(lazies)).toEqual([1, 1, 1]);
    const late = journal.append('run_l4', 0, [event('A')], { status: 'running', lazy: true });
    expect(await journal.read('run_l4')).toHaveLength(1);
    expect(await late).toBe(1);
  });

  it('applies its retention policy at open: settled runs beyond the age or the size go, open ones stay', async () => {
    const path = join(tempDir(), 'retained.db');
    const first = await sqlite(path);
    await first.append('run_old', 0, [event('A')], { status: 'completed', settled: true });
    await first.append('run_big', 0, [event('x'.repeat(5_000))], { status: 'failed', settled: true });
    await first.append('run_open', 0, [event('A')], { status: 'paused' });
    await first.close();
    const bySize = new SqliteJournal({ path, retention: { maxBytes: 2_000 }, logger: log.logger });
    journals.push(bySize);
    await bySize.open();
    const kept = (await bySize.list()).map((h) => h.stream);
    expect(kept).toContain('run_open');
    expect(kept).not.toContain('run_big');
    expect((await bySize.list()).reduce((sum, h) => sum + h.bytes, 0)).toBeLessThanOrEqual(2_000);
    await bySize.append('run_new', 0, [event('A')], { status: 'completed', settled: true });
    await bySize.close();
    // As if a minute had passed: everything settled is older than 30 s.
    const byAge = new SqliteJournal({ path, retention: { maxAgeMs: 30_000, now: Date.now() + 60_000 }, logger: log.logger });
    journals.push(byAge);
    await byAge.open();
    expect((await byAge.list()).map((h) => h.stream)).toEqual(['run_open']);
    expect(() => new SqliteJournal({ path, retention: { maxAgeMs: -5 } })).toThrow(expect.objectContaining({ code: 'INVALID_JOURNAL_INPUT' }) as Error);
  });

  it('refuses an entry that is not JSON on its own, and the other appends of its commit land', async () => {
    const journal = await sqlite();
    const [bad, good] = await Promise.allSettled([
      journal.append('run_bad', 0, [{ kind: 'run.event', at: 1, body: { event: { type: 'X', n: 1n } } }], { status: 'running' }),
      journal.append('run_good', 0, [event('A')], { status: 'running' }),
    ]);
    expect(bad).toMatchObject({ status: 'rejected', reason: { code: 'INVALID_JOURNAL_INPUT' } });
    expect(good).toMatchObject({ status: 'fulfilled', value: 1 });
    expect(await journal.head('run_bad')).toBeUndefined();
  });

  it('refuses a malformed configuration', () => {
    expect(() => new SqliteJournal({ path: '' })).toThrow(expect.objectContaining({ code: 'INVALID_JOURNAL_INPUT' }) as Error);
    expect(() => new SqliteJournal({ path: 'x', durability: 'sometimes' as 'full' })).toThrow(expect.objectContaining({ code: 'INVALID_JOURNAL_INPUT' }) as Error);
    expect(() => new SqliteJournal({ path: 'x', busyTimeoutMs: 'abc' as never })).toThrow(expect.objectContaining({ code: 'INVALID_JOURNAL_INPUT' }) as Error);
    expect(() => new SqliteJournal({ path: 'x', commitIntervalMs: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_JOURNAL_INPUT' }) as Error);
    expect(() => new MemoryJournal({ maxStreams: 'many' as never })).toThrow(expect.objectContaining({ code: 'INVALID_JOURNAL_INPUT' }) as Error);
  });
});
