import { afterEach, describe, expect, it } from 'vitest';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { until } from '../support/wait.ts';

/** A native overlay that records what reached it and re-publishes the insight (so a chain would loop without its guards). */
function relay(name: string, seen: string[]): NativeOverlay {
  return {
    manifest: { name, version: '1.0.0', phases: ['propagation'], subscribes: ['insight.detected'] },
    exports: {
      run: (input, context) => {
        const event = (input as { event: { payload: { cascadeId?: string; note: string } } }).event;
        seen.push(`${name}:${event.payload.note}`);
        context.publish('insight.detected', { note: `${name} saw ${event.payload.note}` });
        return { ok: true };
      },
    },
  };
}

const settle = (kernel: Kernel): Promise<void> => until(() => kernel.bus.metrics().queueDepth === 0, 'the bus to drain', { everyMs: 5 });

describe('cascades through the kernel (bus + overlay actors + chains)', () => {
  let kernel: Kernel;
  afterEach(async () => {
    await kernel.stop();
  });

  it('spreads an insight to subscribed overlays through their actors, continues the chain with their insights, and stops at cycles', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    const seen: string[] = [];
    await kernel.overlays.load(relay('relay-a', seen), { internal: true, trusted: true });
    await kernel.overlays.load(relay('relay-b', seen), { internal: true, trusted: true });
    const chain = await kernel.cascades.start('kernel', 'insight.detected', { note: 'root' }, { maxHops: 5, correlationId: 'corr-c' });
    await settle(kernel);
    const view = kernel.cascades.get(chain.id)!;
    expect(view.hops).toBe(2);
    expect([...view.visited].sort()).toEqual(['kernel', 'relay-a', 'relay-b']);
    // A relay's insight came back to the other relay, already on the chain: the chain stopped there, at once.
    expect(view).toMatchObject({ status: 'stopped', endReason: 'cycle', insights: 3, actions: 2, errors: 0 });
    expect(seen.filter((s) => s.endsWith(':root')).sort()).toEqual(['relay-a:root', 'relay-b:root']);
    // Each relay's insight reached the other only if the other was not yet on the chain: no loop, no dead letters.
    expect(kernel.bus.deadLetters()).toEqual([]);
    expect(kernel.overlays.history.list().map((h) => h.correlationId)).toEqual(['corr-c', 'corr-c']);
    expect(kernel.cascades.active()).toEqual([]);
    expect((await kernel.store.loadChains()).find((c) => c.id === chain.id)).toMatchObject({ status: 'stopped', endReason: 'cycle' });
  });

  it('honours the hop limit across overlays', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    const seen: string[] = [];
    for (const name of ['hop-a', 'hop-b', 'hop-c']) await kernel.overlays.load(relay(name, seen), { internal: true, trusted: true });
    const chain = await kernel.cascades.start('kernel', 'insight.detected', { note: 'root' }, { maxHops: 1 });
    await settle(kernel);
    expect(kernel.cascades.get(chain.id)).toMatchObject({ hops: 1, status: 'stopped', endReason: 'hop-limit' });
    expect(seen.filter((s) => s.endsWith(':root'))).toHaveLength(1);
  });

  it('starts a chain from a handler deep in a causal chain without inheriting its hops', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    const hops: number[] = [];
    kernel.bus.subscribe({ types: ['deep.step'] }, async (event) => {
      const depth = (event.payload as { depth: number }).depth;
      if (depth < 9) await kernel.bus.publish({ type: 'deep.step', payload: { depth: depth + 1 } });
      else await kernel.cascades.start('deep', 'insight.deep', {});
    });
    kernel.bus.subscribe({ types: ['insight.deep'] }, (event) => void hops.push(event.hops));
    await kernel.bus.publish({ type: 'deep.step', payload: { depth: 0 } });
    await until(() => hops.length === 1, 'the chain to start');
    expect(hops).toEqual([0]);
  });

  it('adds an insight to a live chain with append, with the chain’s id and correlation, and counts it', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    const delivered: { cascadeId: unknown; correlationId: string }[] = [];
    kernel.bus.subscribe({ types: ['insight.more'] }, (event) => void delivered.push({ cascadeId: (event.payload as { cascadeId?: unknown }).cascadeId, correlationId: event.correlationId }));
    const chain = await kernel.cascades.start('kernel', 'insight.detected', { note: 'root' }, { correlationId: 'corr-append' });
    const view = await kernel.cascades.append(chain.id, 'insight.more', { note: 'more' });
    expect(view.insights).toBe(2);
    await settle(kernel);
    expect(delivered).toEqual([{ cascadeId: chain.id, correlationId: 'corr-append' }]);
    await expect(kernel.cascades.append('csc_nope', 'insight.more')).rejects.toMatchObject({ code: 'CASCADE_NOT_FOUND' });
    await expect(kernel.cascades.append(chain.id, 'Not A Type')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await kernel.cascades.complete(chain.id);
    await expect(kernel.cascades.append(chain.id, 'insight.more')).rejects.toMatchObject({ code: 'CASCADE_NOT_ACTIVE' });
  });
  it('retries an event a subscribed overlay refuses ({ ok: false }) as the same hop, then dead-letters it naming the overlay', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, bus: { retryDelayMs: 1, maxAttempts: 3 } });
    let attempts = 0;
    await kernel.overlays.load(
      { manifest: { name: 'refuser', version: '1.0.0', subscribes: ['insight.detected'] }, exports: { run: () => (attempts++, { ok: false, error: { message: 'not today' } }) } },
      { internal: true, trusted: true, breaker: { consecutiveFailures: 10 } },
    );
    const chain = await kernel.cascades.start('kernel', 'insight.detected', { note: 'root' });
    await until(() => kernel.bus.deadLetters().length > 0, 'the refused insight to be dead-lettered', { everyMs: 5 });
    expect(attempts).toBe(3);
    expect(kernel.cascades.get(chain.id)).toMatchObject({ hops: 1, status: 'active', actions: 0, errors: 3 });
    expect(kernel.bus.deadLetters()).toMatchObject([{ attempts: 3, error: { code: 'OVERLAY_ERROR', message: 'Overlay "refuser" could not handle insight.detected: not today.' } }]);
  });
});
