import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { buildExamples, GOOD_CAPSULE } from '../support/examples.ts';
import { buildFixture } from '../support/overlays.ts';
import { codeOf } from '../support/errors.ts';
import { budget } from '../support/wait.ts';

const native = (name: string, version: string, exports: NativeOverlay['exports'], manifest: Record<string, unknown> = {}): NativeOverlay => ({
  manifest: { name, version, phases: ['analysis'], ...manifest },
  exports,
});
const TRUSTED = { internal: true, trusted: true } as const;

describe('kernel.overlays (registry)', () => {
  let kernel: Kernel;
  let examples: Awaited<ReturnType<typeof buildExamples>>;
  beforeAll(async () => {
    examples = await buildExamples();
  }, budget(120_000));
  afterEach(async () => {
    await kernel.stop();
  });
  const start = async (): Promise<Kernel> => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    return kernel;
  };

  it('loads a .wasm with the manifest beside it, activates it, and indexes it by id, name, phase and subscription', async () => {
    await start();
    const propagator = await kernel.overlays.load(examples['cascade-propagator'].wasm, { grant: ['EVENT_PUBLISH', 'LOGGING'], mode: 'relaxed' });
    expect(propagator).toMatchObject({ name: 'cascade-propagator', version: '1.0.0', state: 'active', breaker: 'closed', mode: 'relaxed', current: true });
    expect(kernel.overlays.get(propagator.id)?.name).toBe('cascade-propagator');
    expect(kernel.overlays.get('cascade-propagator')?.id).toBe(propagator.id);
    expect(kernel.overlays.byPhase('propagation').map((o) => o.id)).toEqual([propagator.id]);
    expect(kernel.overlays.bySubscription('insight.detected').map((o) => o.id)).toEqual([propagator.id]);
    expect(kernel.overlays.bySubscription('capsule.created')).toEqual([]);
    const again = await kernel.overlays.load(examples['cascade-propagator'].wasm, { grant: ['EVENT_PUBLISH', 'LOGGING'], mode: 'relaxed' });
    expect(again.id).toBe(propagator.id);
    expect(kernel.overlays.list()).toHaveLength(1);
  });

  it('calls an overlay and records every call in a bounded history, rejected ones too', async () => {
    await start();
    await kernel.overlays.load(examples['ingestion-normalizer'].wasm, { grant: ['LOGGING'], mode: 'relaxed' });
    const result = await kernel.overlays.call('ingestion-normalizer', 'run', { capsule: GOOD_CAPSULE }, { correlationId: 'corr-1' });
    expect(result.output).toMatchObject({ ok: true });
    expect(await codeOf(kernel.overlays.call('nope', 'run', {}))).toBe('OVERLAY_NOT_FOUND');
    const history = kernel.overlays.history.list();
    expect(history.map((h) => [h.overlay, h.outcome, h.code])).toEqual([
      ['ingestion-normalizer', 'ok', null],
      ['nope', 'rejected', 'OVERLAY_NOT_FOUND'],
    ]);
    expect(history[0]).toMatchObject({ export: 'run', correlationId: 'corr-1', fuelUsed: result.fuelUsed, version: '1.0.0' });
  });

  it('refuses callers below trustRequired, and inactive overlays, without touching the breaker', async () => {
    await start();
    await kernel.overlays.load(examples['security-validator'].wasm, { grant: ['LOGGING'], mode: 'relaxed' });
    for (let i = 0; i < 8; i++) expect(await codeOf(kernel.overlays.call('security-validator', 'run', { capsule: GOOD_CAPSULE }, { trust: 5 }))).toBe('TRUST_INSUFFICIENT');
    expect((await kernel.overlays.call('security-validator', 'run', { capsule: GOOD_CAPSULE }, { trust: 50 })).output).toMatchObject({ ok: true });
    kernel.overlays.deactivate('security-validator');
    expect(await codeOf(kernel.overlays.call('security-validator', 'run', {}, { trust: 50 }))).toBe('OVERLAY_INACTIVE');
    kernel.overlays.activate('security-validator');
    expect(kernel.overlays.get('security-validator')).toMatchObject({ state: 'active', breaker: 'closed' });
  });

  it('opens the breaker on overlay faults only, rejects fast with CIRCUIT_OPEN, and closes on reset', async () => {
    await start();
    const breakerEvents: string[] = [];
    kernel.overlays.on('breaker', (event: { type: string }) => breakerEvents.push(event.type));
    const { bytes, manifest } = await buildFixture('fixtures/basics.ts', { name: 'flaky', capabilities: ['LOGGING', 'EVENT_PUBLISH'] });
    await kernel.overlays.load(bytes, { manifest, grant: ['LOGGING', 'EVENT_PUBLISH'], mode: 'relaxed' });
    // Caller mistakes: never counted.
    for (let i = 0; i < 6; i++) expect(await codeOf(kernel.overlays.call('flaky', 'noSuchExport', {}))).toBe('EXPORT_NOT_FOUND');
    for (let i = 0; i < 6; i++) expect(await codeOf(kernel.overlays.call('flaky', 'run', undefined))).toBe('INVALID_INPUT');
    expect(kernel.overlays.get('flaky')?.breaker).toBe('closed');
    // The overlay's own faults: five open it.
    for (let i = 0; i < 5; i++) expect(await codeOf(kernel.overlays.call('flaky', 'spin', 'x', { fuel: 10_000 }))).toBe('OUT_OF_FUEL');
    expect(kernel.overlays.get('flaky')?.breaker).toBe('open');
    expect(await codeOf(kernel.overlays.call('flaky', 'run', 1))).toBe('CIRCUIT_OPEN');
    kernel.overlays.resetCircuit('flaky');
    expect((await kernel.overlays.call('flaky', 'run', 1)).output).toBe(1);
    kernel.overlays.forceOpenCircuit('flaky');
    expect(await codeOf(kernel.overlays.call('flaky', 'run', 1))).toBe('CIRCUIT_OPEN');
    expect(breakerEvents).toEqual(['open', 'reject', 'close', 'open', 'reject']);
    expect(kernel.overlays.history.list('flaky').filter((h) => h.outcome === 'fault')).toHaveLength(5);
  });

  it('counts an error result ({ ok: false }) as a fault, and returns it to the caller', async () => {
    await start();
    await kernel.overlays.load(examples['ingestion-normalizer'].wasm, { grant: ['LOGGING'], mode: 'relaxed', breaker: { consecutiveFailures: 3 } });
    for (let i = 0; i < 3; i++) expect((await kernel.overlays.call('ingestion-normalizer', 'run', { capsule: {} })).output).toMatchObject({ ok: false });
    expect(kernel.overlays.get('ingestion-normalizer')).toMatchObject({ breaker: 'open', faults: 3, calls: 3 });
  });

  it('refuses an overlay whose dependency is missing or too old, naming it; loadAll orders by dependencies', async () => {
    await start();
    const voter = examples['governance-voter'];
    const error = await kernel.overlays.load(voter.wasm, { mode: 'relaxed' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'DEPENDENCY_ERROR', details: { dependency: 'analysis-classifier' } });
    const handles = await kernel.overlays.loadAll([
      { source: voter.wasm, options: { mode: 'relaxed' } },
      { source: examples['security-validator'].wasm, options: { mode: 'relaxed', grant: ['LOGGING'] } },
      { source: examples['analysis-classifier'].wasm, options: { mode: 'relaxed' } },
    ]);
    const order = handles.map((h) => h.name);
    expect(order).toHaveLength(3);
    expect(order[2]).toBe('governance-voter');
    expect(order.slice(0, 2).sort()).toEqual(['analysis-classifier', 'security-validator']);
  });

  it('refuses a dependency cycle and a dependency on a version that is not loaded', async () => {
    await start();
    const dir = mkdtempSync(join(tmpdir(), 'forge-deps-'));
    const copy = (name: string, dependencies: Record<string, string>) => {
      const { bytes, manifest } = examples['lineage-tracker'];
      const wasm = join(dir, `${name}.wasm`);
      writeFileSync(wasm, bytes);
      writeFileSync(join(dir, `${name}.manifest.json`), JSON.stringify({ ...manifest, name, dependencies }));
      return wasm;
    };
    const a = copy('cycle-a', { 'cycle-b': '^1.0.0' });
    const b = copy('cycle-b', { 'cycle-a': '^1.0.0' });
    await expect(kernel.overlays.loadAll([{ source: a }, { source: b }])).rejects.toMatchObject({ code: 'DEPENDENCY_ERROR', details: { cycle: ['cycle-a', 'cycle-b', 'cycle-a'] } });
    await kernel.overlays.load(examples['analysis-classifier'].wasm, { mode: 'relaxed' });
    const tooNew = copy('needs-new', { 'analysis-classifier': '^2.0.0' });
    await expect(kernel.overlays.load(tooNew)).rejects.toMatchObject({ code: 'DEPENDENCY_ERROR', details: { loaded: '1.0.0', range: '^2.0.0' } });
    expect(kernel.overlays.list().map((o) => o.name)).toEqual(['analysis-classifier']);
  });

  it('runs health checks in parallel with their own deadline, and quarantines an overlay that keeps failing', async () => {
    await start();
    const quarantined: unknown[] = [];
    kernel.overlays.on('quarantined', (event) => quarantined.push(event));
    await kernel.overlays.load(native('steady', '1.0.0', { run: () => 1, healthCheck: () => ({ ok: true }) }), TRUSTED);
    await kernel.overlays.load(native('hung', '1.0.0', { run: () => 1, healthCheck: () => new Promise(() => {}) }), TRUSTED);
    await kernel.overlays.load(native('sick', '1.0.0', { run: () => 1, healthCheck: () => ({ ok: false, error: { message: 'disk full' } }) }), TRUSTED);
    const started = performance.now();
    const first = await kernel.overlays.health();
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(first.map((r) => [r.name, r.healthy])).toEqual([
      ['steady', true],
      ['hung', false],
      ['sick', false],
    ]);
    expect(first.find((r) => r.name === 'hung')?.detail).toContain('DEADLINE_EXCEEDED');
    await kernel.overlays.health();
    await kernel.overlays.health();
    expect(kernel.overlays.get('sick')?.state).toBe('quarantined');
    expect(kernel.overlays.get('steady')?.state).toBe('active');
    expect(quarantined).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'sick', reason: expect.stringContaining('disk full') as unknown })]));
    expect(await codeOf(kernel.overlays.call('sick', 'run', {}))).toBe('OVERLAY_INACTIVE');
    kernel.overlays.activate('sick');
    expect(kernel.overlays.get('sick')?.state).toBe('active');
  });

  it('hot-reloads a new version without dropping the call in flight on the old one', async () => {
    await start();
    let release: () => void = () => {};
    const gate = new Promise<void>((done) => (release = done));
    await kernel.overlays.load(native('scorer', '1.0.0', { run: async () => { await gate; return 'v1'; } }), TRUSTED);
    const inFlight = kernel.overlays.call('scorer', 'run', {});
    await kernel.overlays.load(native('scorer', '2.0.0', { run: () => 'v2' }), TRUSTED);
    expect(kernel.overlays.list().map((o) => [o.version, o.current])).toEqual([
      ['1.0.0', false],
      ['2.0.0', true],
    ]);
    expect((await kernel.overlays.call('scorer', 'run', {})).output).toBe('v2');
    release();
    expect((await inFlight).output).toBe('v1');
    await new Promise((r) => setTimeout(r, 10));
    expect(kernel.overlays.list().map((o) => o.version)).toEqual(['2.0.0']);
  });

  it('refuses a native overlay that is not registered as internal and trusted, and bad load input', async () => {
    await start();
    expect(await codeOf(kernel.overlays.load(native('rogue', '1.0.0', { run: () => 1 })))).toBe('TRUST_REQUIRED');
    expect(await codeOf(kernel.overlays.load('/nonexistent/x.wasm'))).toBe('NOT_FOUND');
    expect(await codeOf(kernel.overlays.load(new Uint8Array([1, 2, 3])))).toBe('INVALID_MANIFEST');
    expect(await codeOf(kernel.overlays.load(new Uint8Array([1, 2, 3]), { manifest: { name: 'x-y', version: 'one' } }))).toBe('INVALID_MANIFEST');
    expect(() => kernel.overlays.activate('ghost')).toThrow(expect.objectContaining({ code: 'OVERLAY_NOT_FOUND' }) as Error);
    await kernel.overlays.load(native('gone', '1.0.0', { run: () => 1 }), TRUSTED);
    await kernel.overlays.unload('gone');
    expect(kernel.overlays.list()).toEqual([]);
  });
});
