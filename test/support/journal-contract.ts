import fc from 'fast-check';
import { expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import type { Journal, NewEntry } from '../../src/journal/journal.ts';

const event = (type: string, at = 1): NewEntry => ({ kind: 'run.event', at, body: { event: { type } } });

/** The journal port's contract: every backend passes it (`make` opens a fresh, empty journal). */
export function journalContract(make: () => Promise<Journal>): void {
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

  it('feeds appends in one global order, positions only growing (pruning included), from any position', async () => {
    const journal = await make();
    // (The memory journal keeps its feed from the first read on.)
    expect(await journal.feed!(0, 10)).toEqual([]);
    await journal.append('run_f1', 0, [event('A')], { status: 'running' });
    await journal.append('run_f1', 1, [event('C')], { status: 'running' });
    // The newest append is a settled stream's, which the prune below drops.
    await journal.append('run_f2', 0, [event('B')], { status: 'completed', settled: true });
    const all = await journal.feed!(0, 10);
    expect(all.map((a) => [a.stream, a.entries.map((e) => e.seq)])).toEqual([
      ['run_f1', [1]],
      ['run_f1', [2]],
      ['run_f2', [1]],
    ]);
    const positions = all.map((a) => a.position);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(new Set(positions).size).toBe(3);
    expect(await journal.lastPosition!()).toBe(positions[2]);
    expect((await journal.feed!(positions[1]!, 1)).map((a) => a.stream)).toEqual(['run_f2']);
    expect(await journal.feed!(positions[2]!, 10)).toEqual([]);
    // A pruned stream leaves no room for a later append to take a position a follower has passed.
    await journal.prune({ maxAgeMs: 0, now: Date.now() + 1_000 });
    await journal.append('run_f3', 0, [event('D')], { status: 'running' });
    const [next] = await journal.feed!(positions[2]!, 10);
    expect(next).toMatchObject({ stream: 'run_f3' });
    expect(next!.position).toBeGreaterThan(positions[2]!);
    for (const [after, limit] of [[-1, 1], [0, 0], [0.5, 1], ['1', 1]]) await expect(journal.feed!(after as number, limit as number)).rejects.toMatchObject({ code: 'INVALID_JOURNAL_INPUT' });
  });
}
