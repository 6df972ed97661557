import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChainRecord, Store } from '../../src/store/store.ts';

/** The behaviour every Store adapter must have; run against the memory store and the real Neo4j. */
export function storeContract(name: string, make: () => Promise<Store>): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    const tag = randomUUID().slice(0, 8);
    const id = (s: string): string => `${tag}-${s}`;
    beforeAll(async () => {
      store = await make();
      await store.start();
      await store.start();
    });
    afterAll(async () => {
      await store.close();
    });

    const chain = (suffix: string, status: ChainRecord['status'] = 'active'): ChainRecord => ({
      id: id(suffix),
      source: 'analysis-classifier',
      insightType: 'insight.detected',
      status,
      insights: 1,
      actions: 0,
      errors: 0,
      endReason: status === 'stopped' ? 'cycle' : null,
      hops: 0,
      maxHops: 5,
      visited: ['analysis-classifier'],
      createdAt: 1_000,
      expiresAt: 61_000,
      correlationId: id('corr'),
    });

    it('keeps cascade chains and their hops in order, and filters chains by status', async () => {
      await store.saveChain(chain('c1'));
      await store.saveChain(chain('c2', 'completed'));
      for (let i = 1; i <= 3; i++) store.appendHop({ chainId: id('c1'), index: i, from: `o${i - 1}`, to: `o${i}`, eventType: 'insight.detected', at: 1_000 + i });
      await store.flush();
      const hops = await store.loadHops(id('c1'));
      expect(hops.map((h) => [h.index, h.to])).toEqual([
        [1, 'o1'],
        [2, 'o2'],
        [3, 'o3'],
      ]);
      const active = (await store.loadChains({ status: 'active' })).filter((c) => c.id.startsWith(tag));
      expect(active).toEqual([chain('c1')]);
      await store.saveChain({ ...chain('c1'), status: 'completed', hops: 3, visited: ['analysis-classifier', 'o1', 'o2', 'o3'] });
      const all = (await store.loadChains()).filter((c) => c.id.startsWith(tag));
      expect(all.map((c) => [c.id, c.status, c.hops])).toEqual([
        [id('c1'), 'completed', 3],
        [id('c2'), 'completed', 0],
      ]);
    });

    it('saves, loads, lists and deletes pipeline-run snapshots with their version', async () => {
      const snapshot = { value: 'awaitingDecision', context: { capsule: { id: 'c', tags: ['x'] }, n: 1.5, nested: [{ a: null }] } };
      await store.saveRunSnapshot({ runId: id('r1'), version: 1, status: 'paused', snapshot, updatedAt: 5 });
      await store.saveRunSnapshot({ runId: id('r2'), version: 1, status: 'running', snapshot: {}, updatedAt: 6 });
      expect(await store.loadRunSnapshot(id('r1'))).toEqual({ runId: id('r1'), version: 1, status: 'paused', snapshot, updatedAt: 5 });
      expect((await store.listRunSnapshots({ status: 'paused' })).filter((r) => r.runId.startsWith(tag)).map((r) => r.runId)).toEqual([id('r1')]);
      await store.saveRunSnapshot({ runId: id('r1'), version: 2, status: 'completed', snapshot: { value: 'completed' }, updatedAt: 7 });
      expect(await store.loadRunSnapshot(id('r1'))).toMatchObject({ version: 2, status: 'completed' });
      await store.deleteRunSnapshot(id('r1'));
      expect(await store.loadRunSnapshot(id('r1'))).toBeUndefined();
    });

    it('replaces a run snapshot only if it is still the expected one: of concurrent replacements exactly one wins', async () => {
      const runId = id('cas');
      await store.saveRunSnapshot({ runId, version: 1, status: 'awaitingDecision', snapshot: { n: 0 }, updatedAt: 10 });
      expect(await store.replaceRunSnapshot({ status: 'paused', updatedAt: 10 }, { runId, version: 1, status: 'running', snapshot: { n: -1 }, updatedAt: 11 })).toBe(false);
      expect(await store.replaceRunSnapshot({ status: 'awaitingDecision', updatedAt: 9 }, { runId, version: 1, status: 'running', snapshot: { n: -1 }, updatedAt: 11 })).toBe(false);
      const attempts = await Promise.all(
        Array.from({ length: 8 }, (_, n) => store.replaceRunSnapshot({ status: 'awaitingDecision', updatedAt: 10 }, { runId, version: 1, status: 'running', snapshot: { n: n + 1 }, updatedAt: 20 + n })),
      );
      expect(attempts.filter(Boolean)).toHaveLength(1);
      const winner = attempts.indexOf(true);
      expect(await store.loadRunSnapshot(runId)).toEqual({ runId, version: 1, status: 'running', snapshot: { n: winner + 1 }, updatedAt: 20 + winner });
      expect(await store.replaceRunSnapshot({ status: 'awaitingDecision', updatedAt: 10 }, { runId: id('gone'), version: 1, status: 'running', snapshot: {}, updatedAt: 30 })).toBe(false);
      // Removal can be conditional the same way: a stale version removes nothing.
      expect(await store.deleteRunSnapshot(runId, { status: 'awaitingDecision', updatedAt: 10 })).toBe(false);
      expect(await store.loadRunSnapshot(runId)).toBeDefined();
      expect(await store.deleteRunSnapshot(runId, { status: 'running', updatedAt: 20 + winner })).toBe(true);
      expect(await store.loadRunSnapshot(runId)).toBeUndefined();
      expect(await store.deleteRunSnapshot(runId)).toBe(false);
    });

    it('keeps overlay registrations, the audit trail and dead letters', async () => {
      const registration = { id: id('ov'), name: 'scorer', version: '1.0.0', sha256: 'a'.repeat(64), manifest: { name: 'scorer', fuel: { run: 5 } }, grant: ['LOGGING'], state: 'active', updatedAt: 9 };
      await store.saveOverlay(registration);
      expect((await store.listOverlays()).find((o) => o.id === id('ov'))).toEqual(registration);
      await store.removeOverlay(id('ov'));
      expect((await store.listOverlays()).find((o) => o.id === id('ov'))).toBeUndefined();

      store.appendAudit({ id: id('a1'), runId: id('run'), capsuleId: id('cap'), decision: 'approve', detail: { by: 'voter', risk: 0.1 }, at: 1 });
      store.appendAudit({ id: id('a2'), runId: id('run'), capsuleId: id('cap'), decision: 'stored', detail: null, at: 2 });
      await store.flush();
      expect((await store.listAudit({ capsuleId: id('cap') })).map((a) => [a.decision, a.detail])).toEqual([
        ['approve', { by: 'voter', risk: 0.1 }],
        ['stored', null],
      ]);

      const letter = { id: id('dl'), event: { type: 'capsule.created', payload: { id: 1 } }, subscriber: 'sub-1', error: { code: 'HANDLER_TIMEOUT', message: 'slow' }, attempts: 3, at: 4 };
      await store.saveDeadLetter(letter);
      expect((await store.listDeadLetters()).find((d) => d.id === id('dl'))).toEqual(letter);
      await store.removeDeadLetter(id('dl'));
      expect((await store.listDeadLetters()).find((d) => d.id === id('dl'))).toBeUndefined();
    });

    it('returns copies: changing a loaded record changes nothing stored', async () => {
      await store.saveRunSnapshot({ runId: id('copy'), version: 1, status: 'paused', snapshot: { list: [1] }, updatedAt: 1 });
      const loaded = await store.loadRunSnapshot(id('copy'));
      (loaded!.snapshot as { list: number[] }).list.push(2);
      expect((await store.loadRunSnapshot(id('copy')))!.snapshot).toEqual({ list: [1] });
    });
  });
}
