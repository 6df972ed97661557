import fc from 'fast-check';
import { SimulatedClock } from 'xstate';
import { describe, expect, it } from 'vitest';
import { CascadeManager } from '../../src/cascade/cascades.ts';
import { MemoryJournal } from '../../src/journal/memory-journal.ts';
import { MemoryStore } from '../../src/store/memory-store.ts';
import { captureLogger } from '../support/engine.ts';
import { codeOf } from '../support/errors.ts';

function setup(options: { maxLiveChains?: number } = {}) {
  const clock = new SimulatedClock();
  const store = new MemoryStore();
  const log = captureLogger();
  const cascades = new CascadeManager({ store, logger: log.logger, clock, now: () => clock.now(), ...options });
  return { clock, store, cascades, log };
}

describe('CascadeManager', () => {
  it('starts a chain, propagates hop by hop, completes it, and persists chain and hops', async () => {
    const { cascades, store } = setup();
    const chain = await cascades.start('analysis-classifier', 'insight.detected', { correlationId: 'corr-7' });
    expect(chain).toMatchObject({ status: 'active', hops: 0, maxHops: 5, visited: ['analysis-classifier'], correlationId: 'corr-7' });
    await cascades.propagate(chain.id, 'cascade-propagator');
    const after = await cascades.propagate(chain.id, 'lineage-tracker');
    expect(after).toMatchObject({ hops: 2, visited: ['analysis-classifier', 'cascade-propagator', 'lineage-tracker'] });
    expect(cascades.active().map((c) => c.id)).toEqual([chain.id]);
    await cascades.complete(chain.id);
    expect(cascades.active()).toEqual([]);
    expect((await store.loadChains()).map((c) => [c.status, c.hops])).toEqual([['completed', 2]]);
    expect((await store.loadHops(chain.id)).map((h) => [h.index, h.from, h.to])).toEqual([
      [1, 'analysis-classifier', 'cascade-propagator'],
      [2, 'cascade-propagator', 'lineage-tracker'],
    ]);
  });

  it('stops a chain at once, with the reason, when its guard refuses a hop (a cycle), taking no hop', async () => {
    const { cascades, store } = setup();
    const chain = await cascades.start('a', 'insight.detected', { maxHops: 5 });
    await cascades.propagate(chain.id, 'b');
    expect(await codeOf(cascades.propagate(chain.id, 'a'))).toBe('CASCADE_CYCLE');
    expect(cascades.get(chain.id)).toMatchObject({ status: 'stopped', endReason: 'cycle' });
    expect(cascades.active()).toEqual([]);
    expect(await codeOf(cascades.propagate(chain.id, 'c'))).toBe('CASCADE_NOT_FOUND');
    await new Promise((r) => setImmediate(r));
    expect((await store.loadChains()).map((c) => [c.status, c.endReason, c.hops, c.visited])).toEqual([['stopped', 'cycle', 1, ['a', 'b']]]);
    expect(await store.loadHops(chain.id)).toHaveLength(1);
  });

  it('stops a chain at once, with the reason, when its hop budget is spent', async () => {
    const { cascades, store } = setup();
    const chain = await cascades.start('a', 'insight.detected', { maxHops: 2 });
    await cascades.propagate(chain.id, 'b');
    await cascades.propagate(chain.id, 'c');
    expect(await codeOf(cascades.propagate(chain.id, 'd'))).toBe('CASCADE_HOP_LIMIT');
    await new Promise((r) => setImmediate(r));
    expect((await store.loadChains()).map((c) => [c.status, c.endReason, c.hops])).toEqual([['stopped', 'hop-limit', 2]]);
  });

  it('expires a chain at its TTL (SimulatedClock), and refuses to propagate an expired one', async () => {
    const { cascades, clock, store } = setup();
    const chain = await cascades.start('a', 'insight.detected', { ttlMs: 1_000 });
    clock.increment(999);
    expect(cascades.get(chain.id)?.status).toBe('active');
    clock.increment(1);
    await Promise.resolve();
    expect(cascades.get(chain.id)?.status).toBe('expired');
    expect(await codeOf(cascades.propagate(chain.id, 'b'))).toBe('CASCADE_NOT_FOUND');
    await new Promise((r) => setImmediate(r));
    expect((await store.loadChains()).map((c) => c.status)).toEqual(['expired']);
  });

  it('reloads active chains from the store with their TTL re-armed from the stored deadline', async () => {
    const first = setup();
    const chain = await first.cascades.start('a', 'insight.detected', { ttlMs: 10_000 });
    await first.cascades.propagate(chain.id, 'b');
    first.cascades.stop();

    const clock = new SimulatedClock();
    clock.set(4_000);
    const restored = new CascadeManager({ store: first.store, logger: captureLogger().logger, clock, now: () => clock.now() });
    expect(await restored.restore()).toBe(1);
    expect(restored.get(chain.id)).toMatchObject({ hops: 1, visited: ['a', 'b'] });
    clock.increment(5_999);
    expect(restored.get(chain.id)?.status).toBe('active');
    clock.increment(1);
    expect(restored.get(chain.id)?.status).toBe('expired');
  });

  it('caps live chains, refuses bad input, and logs with the cascade and correlation ids', async () => {
    const { cascades, log } = setup({ maxLiveChains: 2 });
    await cascades.start('a', 'insight.detected', { correlationId: 'corr-x' });
    await cascades.start('a', 'insight.detected');
    expect(await codeOf(cascades.start('a', 'insight.detected'))).toBe('CASCADE_LIMIT');
    expect(await codeOf(cascades.start('', 'insight.detected'))).toBe('INVALID_INPUT');
    expect(await codeOf(cascades.start('a', 'insight.detected', { maxHops: 0 }))).toBe('INVALID_INPUT');
    expect(await codeOf(cascades.complete('csc_nope'))).toBe('CASCADE_NOT_FOUND');
    expect(log.lines().find((l) => l.msg === 'cascade started' && l.correlationId === 'corr-x')).toMatchObject({ cascadeId: expect.stringMatching(/^csc_/) as unknown });
  });

  it('holds the hop and cycle limits for any graph of overlays and any propagation order (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 6 }), fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'), { maxLength: 30 }), async (maxHops, targets) => {
        const { cascades } = setup();
        const chain = await cascades.start('a', 'insight.detected', { maxHops });
        for (const to of targets) await cascades.propagate(chain.id, to).catch(() => undefined);
        // A live chain, or the stopped one as the store has it.
        const view = cascades.get(chain.id)!;
        expect(view.status === 'active' || view.status === 'stopped').toBe(true);
        expect(view.hops).toBeLessThanOrEqual(maxHops);
        expect(new Set(view.visited).size).toBe(view.visited.length);
        expect(view.hops).toBe(view.visited.length - 1);
      }),
      { numRuns: 100 },
    );
  });
});

describe('CascadeManager with the store behind its journal', () => {
  it('keeps chains in the journal only (the store is written by the projection) and restores them from it, counts included', async () => {
    const clock = new SimulatedClock();
    const store = new MemoryStore();
    const journal = new MemoryJournal();
    const make = (): CascadeManager => new CascadeManager({ store, logger: captureLogger().logger, clock, now: () => clock.now(), journal, storeBehind: true });
    const first = make();
    const chain = await first.start('analysis-classifier', 'insight.detected', { ttlMs: 60_000 });
    // Journaled before start() resolved: the chain is durable without the store.
    expect((await journal.read(chain.id)).map((e) => e.kind)).toEqual(['chain.started']);
    await first.propagate(chain.id, 'cascade-propagator');
    first.count(chain.id, 'insights');
    first.count(chain.id, 'insights');
    await first.persistAll();
    first.stop();
    await first.journaled();
    expect(await store.loadChains()).toEqual([]);
    expect(await store.loadHops(chain.id)).toEqual([]);

    const second = make();
    expect(await second.restore()).toBe(1);
    expect(second.get(chain.id)).toMatchObject({ status: 'active', hops: 1, visited: ['analysis-classifier', 'cascade-propagator'], insights: 2 });
    await second.propagate(chain.id, 'lineage-tracker');
    await second.complete(chain.id);
    await second.journaled();
    expect((await journal.read(chain.id)).map((e) => e.kind)).toEqual(['chain.started', 'chain.hop', 'chain.saved', 'chain.hop', 'chain.ended']);
    expect(await make().restore()).toBe(0);
  });
});
