import { describe, expect, it } from 'vitest';
import { createActor, SimulatedClock } from 'xstate';
import { circuitBreakerMachine } from '../../actors/circuit-breaker.ts';
import { InspectionAdapter, stateName, type InspectionRecord } from '../../src/inspect/adapter.ts';
import { ActorCatalog } from '../../src/inspect/catalog.ts';
import { createKernel } from '../../src/kernel.ts';
import { captureLogger } from '../support/engine.ts';

const breaker = () => createActor(circuitBreakerMachine, { input: { config: { consecutiveFailures: 1 } }, clock: new SimulatedClock() }).start();

describe('InspectionAdapter', () => {
  it('maps XState inspection to created / transitioned / stopped records with kind, event and correlation id', () => {
    const catalog = new ActorCatalog();
    const adapter = new InspectionAdapter(catalog);
    const seen: InspectionRecord[] = [];
    adapter.subscribe((r) => seen.push(r));
    adapter.enable();
    const actor = breaker();
    catalog.add({ id: 'b1', kind: 'breaker', label: 'demo', actor, correlationId: 'corr-1', details: () => ({}) });
    actor.send({ type: 'FAILURE', at: 0, probe: false });
    actor.send({ type: 'SUCCESS', durationMs: 1, at: 0, probe: false });
    catalog.remove('b1');
    expect(seen.map((r) => [r.type, r.from ?? null, r.state, r.event ?? null])).toEqual([
      ['actor.created', null, 'closed', null],
      ['actor.transitioned', 'closed', 'open', 'FAILURE'],
      ['actor.stopped', null, 'open', null],
    ]);
    expect(seen.every((r) => r.kind === 'breaker' && r.correlationId === 'corr-1' && r.actorId === 'b1')).toBe(true);
    expect(seen.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(adapter.recent(1).map((r) => r.seq)).toEqual([2, 3]);
  });

  it('attaches nothing while off, attaches to live actors when enabled later, and detaches when disabled', () => {
    const catalog = new ActorCatalog();
    const adapter = new InspectionAdapter(catalog);
    const seen: InspectionRecord[] = [];
    adapter.subscribe((r) => seen.push(r));
    const actor = breaker();
    catalog.add({ id: 'b1', kind: 'breaker', label: 'demo', actor, details: () => ({}) });
    actor.send({ type: 'FAILURE', at: 0, probe: false });
    expect(seen).toEqual([]);
    adapter.enable();
    actor.send({ type: 'RESET' });
    expect(seen.map((r) => `${r.from}→${r.state}`)).toEqual(['open→closed']);
    adapter.disable();
    actor.send({ type: 'FAILURE', at: 0, probe: false });
    expect(seen).toHaveLength(1);
  });

  it('names nested and parallel states as dotted strings', () => {
    expect([stateName('idle'), stateName({ awaitingDecision: 'open' }), stateName({ a: { b: 'c' } }), stateName({ x: 'one', y: 'two' })]).toEqual(['idle', 'awaitingDecision.open', 'a.b.c', 'x.one,y.two']);
  });

  it('lists every kernel actor by kind: overlays, breakers, pipeline runs and cascade chains', async () => {
    const kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, inspect: true });
    try {
      const seen: InspectionRecord[] = [];
      kernel.inspector.subscribe((r) => seen.push(r));
      await kernel.overlays.load({ manifest: { name: 'relay', version: '1.0.0', phases: ['analysis'], subscribes: ['insight.detected'] }, exports: { run: () => ({ ok: true }) } }, { internal: true, trusted: true });
      const run = kernel.pipelines.start({ capsule: { id: 'c1' } }, { correlationId: 'corr-run' });
      await run.done;
      const chain = await kernel.cascades.start('kernel', 'insight.detected', {}, { correlationId: 'corr-chain' });
      await kernel.cascades.complete(chain.id);
      const kinds = new Set(seen.map((r) => r.kind));
      expect(kinds).toEqual(new Set(['overlay', 'breaker', 'pipeline', 'cascade']));
      const runRecords = seen.filter((r) => r.actorId === run.id);
      expect(runRecords.map((r) => r.state)).toEqual(['ingestion', 'analysis', 'validation', 'consensus', 'execution', 'propagation', 'settlement', 'completed', 'completed']);
      expect(runRecords.every((r) => r.correlationId === 'corr-run')).toBe(true);
      expect(seen.filter((r) => r.actorId === chain.id).map((r) => r.type)).toEqual(['actor.created', 'actor.transitioned', 'actor.stopped']);
      expect(kernel.inspector.records().length).toBe(seen.length);
    } finally {
      await kernel.stop();
    }
  });
});
