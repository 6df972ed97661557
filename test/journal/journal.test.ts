import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import type { Journal, NewEntry } from '../../src/journal/journal.ts';
import { MemoryJournal } from '../../src/journal/memory-journal.ts';
import { SqliteJournal } from '../../src/journal/sqlite-journal.ts';
import { captureLogger } from '../support/engine.ts';
import { journalContract } from '../support/journal-contract.ts';

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

describe.each(backends)('journal contract: %s', (_name, make) => journalContract(make));

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
