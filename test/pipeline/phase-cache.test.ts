// The idempotent phase cache: a phase configured `cache: true` reuses the result of an earlier run with the same
// input and the same overlay modules; a hit runs nothing, shows in the outcome and in the journal; a phase whose
// overlays publish or fail is never cached.
import { afterEach, describe, expect, it } from 'vitest';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';

const TRUSTED = { internal: true, trusted: true } as const;
const kernels: Kernel[] = [];
afterEach(async () => {
  await Promise.all(kernels.splice(0).map((k) => k.stop()));
});

async function kernelWith(overlay: NativeOverlay, cache = true): Promise<Kernel> {
  const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { phases: { analysis: { cache } } } });
  kernels.push(k);
  await k.overlays.load(overlay, TRUSTED);
  return k;
}

describe('the phase cache', () => {
  it('reuses a phase result for the same input: the overlay runs once, the hit is marked and journaled', async () => {
    let calls = 0;
    const k = await kernelWith({
      manifest: { name: 'scorer', version: '1.0.0', phases: ['analysis'] },
      exports: { run: (input) => (calls++, { ok: true, data: { score: ((input as { capsule: { n: number } }).capsule.n * 2) } }) },
    });
    const first = await k.pipelines.start({ capsule: { id: 'a', n: 21 } }).done;
    const second = await k.pipelines.start({ capsule: { id: 'a', n: 21 } }).done;
    const other = await k.pipelines.start({ capsule: { id: 'b', n: 1 } }).done;
    expect(calls).toBe(2);
    const analysis = (r: typeof first) => r.phases.find((p) => p.phase === 'analysis')!;
    expect(analysis(first).cached).toBeUndefined();
    expect(analysis(second)).toMatchObject({ status: 'completed', cached: true, overlays: [{ name: 'scorer', status: 'ok', attempts: 0, fuelUsed: 0 }] });
    expect(second.data.analysis).toEqual({ score: 42 });
    expect(other.data.analysis).toEqual({ score: 2 });
    const events = (await k.journal!.read(second.id)).filter((e) => e.kind === 'run.event');
    expect(events.some((e) => (e.body.event as { outcome?: { cached?: boolean } }).outcome?.cached === true)).toBe(true);
    expect((await k.journal!.read(second.id)).filter((e) => e.kind === 'run.call' && e.body.phase === 'analysis')).toEqual([]);
  });

  it('never caches a phase whose overlay published an event, failed, or that is not configured to cache', async () => {
    let calls = 0;
    const publisher = await kernelWith({
      manifest: { name: 'publisher', version: '1.0.0', phases: ['analysis'], capabilities: ['EVENT_PUBLISH'] },
      exports: {
        run: (_input, context) => {
          calls++;
          context.publish('insight.detected', { n: 1 });
          return { ok: true, data: {} };
        },
      },
    });
    await publisher.pipelines.start({ capsule: { id: 'p' } }).done;
    await publisher.pipelines.start({ capsule: { id: 'p' } }).done;
    expect(calls).toBe(2);

    let failures = 0;
    const failing = await kernelWith({ manifest: { name: 'flaky', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => (failures++, { ok: false, error: { message: 'no' } }) } });
    await failing.pipelines.start({ capsule: { id: 'f' } }).done;
    await failing.pipelines.start({ capsule: { id: 'f' } }).done;
    expect(failures).toBe(2);

    let plain = 0;
    const off = await kernelWith({ manifest: { name: 'plain', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => (plain++, { ok: true, data: {} }) } }, false);
    await off.pipelines.start({ capsule: { id: 'o' } }).done;
    await off.pipelines.start({ capsule: { id: 'o' } }).done;
    expect(plain).toBe(2);
  });

  it('misses when the overlay module changes (a hot reload to another version)', async () => {
    let calls = 0;
    const v = (version: string, factor: number): NativeOverlay => ({ manifest: { name: 'scorer', version, phases: ['analysis'] }, exports: { run: () => (calls++, { ok: true, data: { factor } }) } });
    const k = await kernelWith(v('1.0.0', 1));
    await k.pipelines.start({ capsule: { id: 'a' } }).done;
    await k.overlays.load(v('1.1.0', 2), TRUSTED);
    const after = await k.pipelines.start({ capsule: { id: 'a' } }).done;
    expect(calls).toBe(2);
    expect(after.data.analysis).toEqual({ factor: 2 });
  });

  it('refuses a malformed cache setting', async () => {
    await expect(createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { phases: { analysis: { cache: 'yes' as unknown as boolean } } } })).rejects.toMatchObject({ code: 'INVALID_PIPELINE_CONFIG' });
  });
});
