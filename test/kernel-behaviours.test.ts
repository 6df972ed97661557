// Behaviours an outside review ported from the Python kernel and found wrong (issue #20): each is pinned here.
import { afterEach, describe, expect, it } from 'vitest';
import type { BusEvent } from '../src/bus/event.ts';
import { createKernel, type Kernel } from '../src/kernel.ts';
import type { NativeOverlay } from '../src/wasm/trusted-engine.ts';
import { captureLogger } from './support/engine.ts';

const TRUSTED = { internal: true, trusted: true } as const;
const native = (name: string, exports: NativeOverlay['exports'], manifest: Record<string, unknown> = {}): NativeOverlay => ({ manifest: { name, version: '1.0.0', phases: ['analysis'], ...manifest }, exports });

describe('the kernel, as its users rely on it', () => {
  let kernel: Kernel;
  afterEach(async () => {
    await kernel.stop();
  });
  const start = async (): Promise<Kernel> => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    return kernel;
  };
  /** Resolves with the first event of `type` the bus delivers. */
  const next = (type: string): Promise<BusEvent> =>
    new Promise((resolve) => {
      const off = kernel.bus.subscribe({ types: [type] }, (event) => {
        off();
        resolve(event);
      });
    });

  it('gives the events an overlay publishes the correlation id of the call that published them', async () => {
    await start();
    await kernel.overlays.load(native('emitter', { run: (_input, ctx) => ctx.publish('capsule.analyzed', { score: 1 }) ?? { ok: true } }), TRUSTED);
    const seen = next('capsule.analyzed');
    await kernel.overlays.call('emitter', 'run', {}, { correlationId: 'corr-emit' });
    expect((await seen).correlationId).toBe('corr-emit');
  });

  it('counts a native overlay that throws as an overlay fault, with a typed error, and trips its breaker', async () => {
    await start();
    await kernel.overlays.load(native('thrower', { run: () => { throw new Error('boom'); } }), { ...TRUSTED, breaker: { consecutiveFailures: 5 } });
    for (let i = 0; i < 5; i++) await expect(kernel.overlays.call('thrower', 'run', {})).rejects.toMatchObject({ code: 'OVERLAY_TRAP', message: expect.stringContaining('Error: boom') as string });
    expect(kernel.overlays.get('thrower')?.breaker).toBe('open');
    expect(kernel.overlays.history.list().map((h) => h.outcome)).toEqual(Array(5).fill('fault'));
  });

  it("counts a call of a native overlay's missing export as the caller's mistake: EXPORT_NOT_FOUND, breaker untouched", async () => {
    await start();
    await kernel.overlays.load(native('echo', { run: (input) => input }), TRUSTED);
    for (let i = 0; i < 6; i++) await expect(kernel.overlays.call('echo', 'nope', {})).rejects.toMatchObject({ code: 'EXPORT_NOT_FOUND', details: { available: ['run'] } });
    expect(kernel.overlays.get('echo')?.breaker).toBe('closed');
  });

  it.each(['pipeline.completed', 'system.shutdown', 'cascade.completed', 'overlay.loaded', 'kernel.stopping'])('refuses an overlay publishing under the kernel’s own namespace (%s) with RESERVED_EVENT_TYPE', async (type) => {
    await start();
    const delivered: BusEvent[] = [];
    kernel.bus.subscribe({ patterns: [`${type.split('.')[0]}.*`] }, (event) => {
      if (event.source !== 'kernel') delivered.push(event);
    });
    await kernel.overlays.load(native('impostor', { run: (_input, ctx) => ctx.publish(type, {}) ?? { ok: true } }), TRUSTED);
    await expect(kernel.overlays.call('impostor', 'run', {})).rejects.toMatchObject({ code: 'RESERVED_EVENT_TYPE' });
    expect(delivered.filter((e) => e.type === type)).toEqual([]);
  });
});
