// The idempotent phase cache: a phase configured `cache: true` reuses the result of an earlier run with the same
// input, trust and overlay modules; a hit runs nothing, shows in the outcome and in the journal, and is served only
// to a run its calls would have admitted. Phases whose overlays publish, fail, call the host, or are native are
// never cached.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildOverlays } from '../../src/build/build.ts';
import type { PhaseOutcome } from '../../actors/pipeline.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { RunResult } from '../../src/pipeline/pipelines.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { buildExamples, GOOD_CAPSULE } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const TRUSTED = { internal: true, trusted: true } as const;
const kernels: Kernel[] = [];
let classifier: { bytes: Uint8Array; manifest: Record<string, unknown> };
let variant: string;
let dir: string;
beforeAll(async () => {
  const examples = await buildExamples();
  classifier = examples['analysis-classifier'];
  dir = mkdtempSync(join(tmpdir(), 'forge-phase-cache-'));
  const source = readFileSync(join(ROOT, 'overlays-as', 'examples', 'analysis-classifier.ts'), 'utf8').replace('"version": "1.0.0"', '"version": "1.1.0"').replace('const TRUST_FLOOR: f64 = 0.5;', 'const TRUST_FLOOR: f64 = 0.95;');
  writeFileSync(join(dir, 'analysis-classifier.ts'), source);
  const [built] = await buildOverlays([join(dir, 'analysis-classifier.ts')], { outDir: join(dir, 'out') });
  variant = built!.wasm!;
}, budget(240_000));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await Promise.all(kernels.splice(0).map((k) => k.stop()));
});

/** A kernel caching analysis, with the example classifier (wasm, relaxed) loaded with `manifest` changes. */
async function cachingKernel(manifest: Record<string, unknown> = {}, cache = true): Promise<Kernel> {
  const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { phases: { analysis: { cache } } } });
  kernels.push(k);
  await k.overlays.load(classifier.bytes, { manifest: { ...classifier.manifest, ...manifest }, grant: [], mode: 'relaxed' });
  return k;
}

const calls = (k: Kernel): number => k.overlays.get('analysis-classifier')!.calls;
const analysis = (r: RunResult): PhaseOutcome => r.phases.find((p) => p.phase === 'analysis')!;

describe('the phase cache', () => {
  it('reuses a phase result for the same input: the overlay runs once, the hit is marked and journaled', async () => {
    const k = await cachingKernel();
    const first = await k.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    const second = await k.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    const other = await k.pipelines.start({ capsule: { ...GOOD_CAPSULE, content: 'a different text about a data breach' } }).done;
    expect(calls(k)).toBe(2);
    expect(analysis(first).cached).toBeUndefined();
    expect(analysis(second)).toMatchObject({ status: 'completed', cached: true, overlays: [{ name: 'analysis-classifier', status: 'ok', attempts: 0, fuelUsed: 0 }] });
    expect(second.data.analysis).toEqual(first.data.analysis);
    expect(other.data.analysis).not.toEqual(first.data.analysis);
    const entries = await k.journal!.read(second.id);
    expect(entries.some((e) => e.kind === 'run.event' && (e.body.event as { outcome?: { cached?: boolean } }).outcome?.cached === true)).toBe(true);
    expect(entries.filter((e) => e.kind === 'run.call' && e.body.phase === 'analysis')).toEqual([]);
  });

  it('serves a hit only to a run its calls would have admitted: trust, an inactive overlay, an open breaker', async () => {
    const k = await cachingKernel({ trustRequired: 90 });
    expect(await k.pipelines.start({ capsule: GOOD_CAPSULE }, { trust: 100 }).done).toMatchObject({ status: 'completed' });
    const low = await k.pipelines.start({ capsule: GOOD_CAPSULE }, { trust: 10 }).done;
    expect(low).toMatchObject({ status: 'failed' });
    expect(analysis(low).cached).toBeUndefined();
    k.overlays.deactivate('analysis-classifier');
    expect(await k.pipelines.start({ capsule: GOOD_CAPSULE }, { trust: 100 }).done).toMatchObject({ status: 'failed' });
    k.overlays.activate('analysis-classifier');
    k.overlays.forceOpenCircuit('analysis-classifier');
    expect(await k.pipelines.start({ capsule: GOOD_CAPSULE }, { trust: 100 }).done).toMatchObject({ status: 'failed' });
    expect(calls(k)).toBe(1);
  });

  it('misses when the overlay module changes (a hot reload to another version)', async () => {
    const k = await cachingKernel();
    const before = await k.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    await k.overlays.load(variant, { grant: [], mode: 'relaxed' });
    const after = await k.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    expect(analysis(after).cached).toBeUndefined();
    expect(after.data.analysis).not.toEqual(before.data.analysis);
  });

  it('keeps its own frozen copy of a result: a caller changing a result changes no later hit', async () => {
    const k = await cachingKernel();
    const first = await k.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    analysis(first).overlays.push({ name: 'analysis-classifier', status: 'failed', attempts: 1, fuelUsed: 0, durationMs: 0 });
    const second = await k.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    expect(second).toMatchObject({ status: 'completed' });
    expect(analysis(second)).toMatchObject({ cached: true });
    expect(analysis(second).overlays).toHaveLength(1);
  });

  it('never caches a native overlay, a phase that published or failed, or a phase not configured to cache', async () => {
    const count = { native: 0, publisher: 0, failing: 0 };
    const native = async (name: keyof typeof count, run: NativeOverlay['exports']['run']): Promise<void> => {
      const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { phases: { analysis: { cache: true } } } });
      kernels.push(k);
      await k.overlays.load({ manifest: { name, version: '1.0.0', phases: ['analysis'], capabilities: ['EVENT_PUBLISH'] }, exports: { run } }, TRUSTED);
      await k.pipelines.start({ capsule: { id: 'x' } }).done;
      await k.pipelines.start({ capsule: { id: 'x' } }).done;
    };
    await native('native', () => (count.native++, { ok: true, data: {} }));
    await native('publisher', (_input, context) => (count.publisher++, context.publish('insight.detected', {}), { ok: true, data: {} }));
    await native('failing', () => (count.failing++, { ok: false, error: { message: 'no' } }));
    expect(count).toEqual({ native: 2, publisher: 2, failing: 2 });
    const off = await cachingKernel({}, false);
    await off.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    await off.pipelines.start({ capsule: GOOD_CAPSULE }).done;
    expect(calls(off)).toBe(2);
  });

  it('records the version that runs after a failed hot reload (the old one stays current)', async () => {
    const k = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    kernels.push(k);
    await k.overlays.load({ manifest: { name: 'scorer', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => ({ ok: true, data: { by: 'v1' } }) } }, TRUSTED);
    await expect(k.overlays.load({ manifest: { name: 'scorer', version: '2.0.0', phases: ['analysis'] }, exports: { initialize: () => ({ ok: false, error: { message: 'no' } }), run: () => ({ ok: true, data: { by: 'v2' } }) } }, TRUSTED)).rejects.toMatchObject({ code: 'INITIALIZATION_FAILED' });
    const run = k.pipelines.start({ capsule: { id: 'h' } });
    expect((await run.done).data.analysis).toEqual({ by: 'v1' });
    const [started] = await k.journal!.read(run.id);
    expect(started?.kind === 'run.started' && started.body.overlays.find((o) => o.name === 'scorer')?.version).toBe('1.0.0');
  });

  it('refuses a malformed cache setting', async () => {
    await expect(createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { phases: { analysis: { cache: 'yes' as unknown as boolean } } } })).rejects.toMatchObject({ code: 'INVALID_PIPELINE_CONFIG' });
  });
});
