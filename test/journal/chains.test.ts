// Cascade chains in the journal: started, each hop, and how they ended, in order; `journal show` reads them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { SqliteJournal } from '../../src/journal/sqlite-journal.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import { MemoryStore } from '../../src/store/memory-store.ts';
import { captureLogger } from '../support/engine.ts';

const kernels: Kernel[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(kernels.splice(0).map((k) => k.stop()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('cascade chains in the journal', () => {
  it('journals a restored chain\'s start once, and its hops before a stop lets the process exit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-chains-'));
    dirs.push(dir);
    const path = join(dir, 'journal.db');
    const store = new MemoryStore();
    const first = await createKernel({ logger: captureLogger().logger, cacheDir: false, store, journal: { kind: 'sqlite', path } });
    const chain = await first.cascades.start('demo', 'insight.detected');
    await first.cascades.propagate(chain.id, 'a');
    await first.stop();
    const second = await createKernel({ logger: captureLogger().logger, cacheDir: false, store, journal: { kind: 'sqlite', path } });
    await second.cascades.propagate(chain.id, 'b');
    await second.stop();
    const journal = new SqliteJournal({ path });
    await journal.open();
    try {
      expect((await journal.read(chain.id)).map((e) => e.kind)).toEqual(['chain.started', 'chain.hop', 'chain.hop']);
    } finally {
      await journal.close();
    }
  });

  it('journals a chain\'s start, hops and end, and a chain its guard stopped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-chains-'));
    dirs.push(dir);
    const path = join(dir, 'journal.db');
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, journal: { kind: 'sqlite', path } });
    const done = await k.cascades.start('demo', 'insight.detected', { maxHops: 3 });
    await k.cascades.propagate(done.id, 'a');
    await k.cascades.propagate(done.id, 'b');
    await k.cascades.complete(done.id);
    const looped = await k.cascades.start('demo', 'insight.detected');
    await k.cascades.propagate(looped.id, 'a');
    await expect(k.cascades.propagate(looped.id, 'a')).rejects.toMatchObject({ code: 'CASCADE_CYCLE' });
    await k.stop();

    const journal = new SqliteJournal({ path });
    await journal.open();
    try {
      const entries = await journal.read(done.id);
      expect(entries.map((e) => e.kind)).toEqual(['chain.started', 'chain.hop', 'chain.hop', 'chain.ended']);
      expect(entries.filter((e) => e.kind === 'chain.hop').map((e) => [e.body.hop.from, e.body.hop.to])).toEqual([['demo', 'a'], ['a', 'b']]);
      expect(entries.at(-1)).toMatchObject({ body: { status: 'completed', chain: { hops: 2, visited: ['demo', 'a', 'b'] } } });
      expect(await journal.head(done.id)).toMatchObject({ type: 'chain', status: 'completed', settled: true });
      expect((await journal.read(looped.id)).at(-1)).toMatchObject({ kind: 'chain.ended', body: { status: 'stopped', chain: { endReason: 'cycle' } } });
    } finally {
      await journal.close();
    }
    let stdout = '';
    expect(await main(['journal', 'show', done.id, '--journal', path], { stdout: (t) => (stdout += t), stderr: () => undefined })).toBe(0);
    expect(stdout).toMatch(/hop\s+demo → a/);
    expect(stdout).toMatch(/ended\s+completed/);
  });
});
