// Behaviours an outside review ported from the Python kernel and found wrong (issue #20): each is pinned here.
import { afterEach, describe, expect, it } from 'vitest';
import type { BusEvent } from '../src/bus/event.ts';
import { createKernel, type Kernel } from '../src/kernel.ts';
import type { NativeOverlay } from '../src/wasm/trusted-engine.ts';
import { captureLogger } from './support/engine.ts';
import { budget, until } from './support/wait.ts';

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

  it('counts a kernel error a native overlay lets escape (a failed call to another overlay) as its own fault, not the caller’s mistake', async () => {
    await start();
    await kernel.overlays.load(native('relay', { run: async () => (await kernel.overlays.call('gone-away', 'run', {})).output }), { ...TRUSTED, breaker: { consecutiveFailures: 3 } });
    for (let i = 0; i < 3; i++) await expect(kernel.overlays.call('relay', 'run', {})).rejects.toMatchObject({ code: 'OVERLAY_TRAP', details: { thrownCode: 'OVERLAY_NOT_FOUND' } });
    expect(kernel.overlays.get('relay')?.breaker).toBe('open');
  });

  it('refuses a load whose initialize answers { ok: false }, as one that throws', async () => {
    await start();
    await expect(kernel.overlays.load(native('unready', { run: () => ({ ok: true }), initialize: () => ({ ok: false, error: { message: 'no database' } }) }), TRUSTED)).rejects.toMatchObject({
      code: 'INITIALIZATION_FAILED',
      message: expect.stringContaining('no database') as string,
    });
    expect(kernel.overlays.list()).toEqual([]);
  });

  it('runs shutdown once when an unload and the kernel’s stop race', async () => {
    await start();
    let shutdowns = 0;
    await kernel.overlays.load(native('tidy', { run: () => ({ ok: true }), shutdown: async () => (shutdowns++, await new Promise((r) => setTimeout(r, 20)), { ok: true }) }), TRUSTED);
    await Promise.all([kernel.overlays.unload('tidy'), kernel.stop()]);
    expect(shutdowns).toBe(1);
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

  it('calls the shutdown export on unload and on the kernel’s stop, and a failing or hung one holds up neither', async () => {
    await start();
    const calls: string[] = [];
    await kernel.overlays.load(native('tidy', { run: () => ({ ok: true }), shutdown: () => (calls.push('tidy'), { ok: true }) }), TRUSTED);
    await kernel.overlays.load(native('grumpy', { run: () => ({ ok: true }), shutdown: () => { calls.push('grumpy'); throw new Error('cannot flush'); } }), TRUSTED);
    await kernel.overlays.load(native('stuck', { run: () => ({ ok: true }), shutdown: () => (calls.push('stuck'), new Promise(() => undefined)) }), TRUSTED);
    await kernel.overlays.unload('tidy');
    expect(calls).toEqual(['tidy']);
    await kernel.overlays.unload('grumpy');
    expect(kernel.overlays.get('grumpy')).toBeUndefined();
    const stopped = kernel.stop();
    await expect(stopped).resolves.toBeUndefined();
    expect(calls).toEqual(['tidy', 'grumpy', 'stuck']);
  });

  it('refuses a load whose initialize export throws (INITIALIZATION_FAILED) and keeps nothing of it; a hot reload keeps the old version', async () => {
    await start();
    const failing = (version: string) => ({ ...native('fragile', { run: () => ({ version }), initialize: () => { throw new Error('no config'); } }), manifest: { name: 'fragile', version, phases: ['analysis'] } });
    await expect(kernel.overlays.load(failing('1.0.0'), TRUSTED)).rejects.toMatchObject({ code: 'INITIALIZATION_FAILED', message: expect.stringContaining('no config') as string });
    expect(kernel.overlays.list()).toEqual([]);
    await kernel.overlays.load({ manifest: { name: 'fragile', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => ({ version: '1.0.0' }) } }, TRUSTED);
    await expect(kernel.overlays.load(failing('2.0.0'), TRUSTED)).rejects.toMatchObject({ code: 'INITIALIZATION_FAILED' });
    expect(kernel.overlays.list().map((o) => o.version)).toEqual(['1.0.0']);
    expect((await kernel.overlays.call('fragile', 'run', {})).output).toEqual({ version: '1.0.0' });
  });

  it('delivers nothing to a deactivated overlay and counts its events as skipped, not as dead letters', async () => {
    await start();
    let received = 0;
    await kernel.overlays.load(native('listener', { run: () => ((received += 1), { ok: true }) }, { subscribes: ['capsule.created'] }), TRUSTED);
    kernel.overlays.deactivate('listener');
    for (let i = 0; i < 3; i++) await kernel.bus.publish({ type: 'capsule.created', payload: { i } });
    const deadline = Date.now() + 10_000;
    while (kernel.overlays.stats()[kernel.overlays.get('listener')!.id]!.skippedEvents < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(received).toBe(0);
    expect(kernel.bus.deadLetters()).toEqual([]);
    expect(kernel.overlays.stats()[kernel.overlays.get('listener')!.id]).toMatchObject({ skippedEvents: 3, calls: 0 });
  });

  it('tells an overlay whose call it serves: trust, correlation, run and capsule, and the capabilities in force', async () => {
    await start();
    const seen: unknown[] = [];
    await kernel.overlays.load(native('curious', { run: (_input, ctx) => (seen.push({ caller: ctx.caller, capabilities: ctx.capabilities }), { ok: true }) }, { capabilities: ['LOGGING'], trustRequired: 40 }), TRUSTED);
    const run = kernel.pipelines.start({ capsule: { id: 'cap-7' } }, { trust: 60, correlationId: 'corr-run' });
    const result = await run.done;
    expect(result.status).toBe('completed');
    expect(seen).toEqual([{ caller: { trust: 60, correlationId: 'corr-run', runId: run.id, capsuleId: 'cap-7' }, capabilities: ['LOGGING'] }]);
    await kernel.overlays.call('curious', 'run', {}, { trust: 50 });
    expect(seen[1]).toEqual({ caller: { trust: 50, correlationId: null, runId: null, capsuleId: null }, capabilities: ['LOGGING'] });
  });

  it.each([
    [{ trust: '100' }, 'trust'],
    [{ trust: Number.NaN }, 'trust'],
    [{ trust: 101 }, 'trust'],
    [{ correlationId: 7 }, 'correlationId'],
    [{ runId: '' }, 'runId'],
    [{ capsuleId: {} }, 'capsuleId'],
    [{ signal: {} }, 'signal'],
    [{ signal: 'abort' }, 'signal'],
    [null, 'options'],
    [[], 'options'],
  ])('refuses a call with malformed options %j (INVALID_INPUT, breaker untouched)', async (options, option) => {
    await start();
    await kernel.overlays.load(native('plain', { run: () => ({ ok: true }) }), TRUSTED);
    await expect(kernel.overlays.call('plain', 'run', {}, options as never)).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { option } });
    expect(kernel.overlays.get('plain')?.breaker).toBe('closed');
    expect(kernel.overlays.history.list().map((h) => h.outcome)).toEqual(['rejected']);
  });

  it("lists in a run's result the events its overlays published, with phase, overlay and attempt (a failed attempt's too: they were delivered)", async () => {
    await start();
    const delivered: string[] = [];
    kernel.bus.subscribe({ patterns: ['capsule.*'] }, (event) => void delivered.push(event.type));
    let attempt = 0;
    await kernel.overlays.load(native('announcer', { run: (_input, ctx) => (ctx.publish('capsule.scored', { score: 3 }), ctx.publish('capsule.tagged', { tag: 'x' }), { ok: true }) }, { capabilities: ['EVENT_PUBLISH'] }), TRUSTED);
    await kernel.overlays.load(
      native('flaky', { run: (_input, ctx) => (ctx.publish('capsule.flaky', { attempt: ++attempt }), attempt === 1 ? { ok: false, error: { message: 'again' } } : { ok: true }) }, { phases: ['validation'], capabilities: ['EVENT_PUBLISH'] }),
      TRUSTED,
    );
    const result = await kernel.pipelines.start({ capsule: { id: 'cap-e' } }, { phases: { validation: { retries: 1, backoffMs: 1 } } }).done;
    expect(result.status).toBe('completed');
    expect(result.events).toEqual([
      { phase: 'analysis', overlay: 'announcer', type: 'capsule.scored', attempt: 1 },
      { phase: 'analysis', overlay: 'announcer', type: 'capsule.tagged', attempt: 1 },
      { phase: 'validation', overlay: 'flaky', type: 'capsule.flaky', attempt: 1 },
      { phase: 'validation', overlay: 'flaky', type: 'capsule.flaky', attempt: 2 },
    ]);
    // What the result lists is what the bus delivered.
    await until(() => delivered.length === 4, 'the four events on the bus');
    expect(delivered).toEqual(['capsule.scored', 'capsule.tagged', 'capsule.flaky', 'capsule.flaky']);
  });

  it('keeps call statistics per overlay: counts, success rate, p50/p95/max duration and fuel', async () => {
    await start();
    await kernel.overlays.load(native('mixed', { run: (input) => ((input as { fail?: boolean }).fail === true ? { ok: false, error: { message: 'no' } } : { ok: true }) }), TRUSTED);
    for (let i = 0; i < 8; i++) await kernel.overlays.call('mixed', 'run', { fail: i % 4 === 0 });
    await expect(kernel.overlays.call('mixed', 'nope', {})).rejects.toMatchObject({ code: 'EXPORT_NOT_FOUND' });
    const stats = kernel.overlays.stats()[kernel.overlays.get('mixed')!.id]!;
    expect(stats).toMatchObject({ name: 'mixed', calls: 9, ok: 6, faults: 2, rejected: 1, successRate: 0.75, fuelUsed: 0 });
    expect(stats.durationMs.max).toBeGreaterThanOrEqual(stats.durationMs.p95);
    expect(stats.durationMs.p95).toBeGreaterThanOrEqual(stats.durationMs.p50);
  });

  it('hears every pause when runs are resumed from a pipeline.paused handler through a queue of one (no inherited hops)', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { maxActiveRuns: 1 } });
    await kernel.overlays.load({ manifest: { name: 'escalator', version: '1.0.0', phases: ['consensus'] }, exports: { run: () => ({ ok: true, data: { needsDecision: true } }) } }, TRUSTED);
    kernel.bus.subscribe({ types: ['pipeline.paused'] }, async ({ payload, hops }) => {
      expect(hops).toBe(0);
      await kernel.pipelines.resume((payload as { runId: string }).runId, { decision: 'approve', by: 'ops', reason: 'ok' });
    });
    const runs = Array.from({ length: 30 }, (_, i) => kernel.pipelines.start({ capsule: { id: `c${i}` } }));
    const results = await Promise.all(runs.map((run) => run.done));
    expect(results.map((r) => r.status)).toEqual(Array(30).fill('completed'));
    expect(results.every((r) => r.decision?.by === 'ops')).toBe(true);
  });

  it('starts a run from a subscriber without the run inheriting its hops: a chain of 15 runs, each started on the last one’s completion', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    await kernel.overlays.load({ manifest: { name: 'instant', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => ({ ok: true }) } }, TRUSTED);
    const hops: number[] = [];
    let finished: () => void = () => undefined;
    const allDone = new Promise<void>((resolve) => (finished = resolve));
    kernel.bus.subscribe({ types: ['pipeline.completed'] }, (event) => {
      hops.push(event.hops);
      if (hops.length < 15) kernel.pipelines.start({ capsule: { id: `c${hops.length}` } });
      else finished();
    });
    kernel.pipelines.start({ capsule: { id: 'c0' } });
    await allDone;
    expect(hops).toEqual(Array(15).fill(0));
  });

  it('lets timers fire while a backlog of queued runs works through', async () => {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { maxActiveRuns: 4, maxQueuedRuns: 10_000 } });
    await kernel.overlays.load({ manifest: { name: 'instant', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => ({ ok: true }) } }, TRUSTED);
    let ticks = 0;
    const interval = setInterval(() => ticks++, 1);
    await new Promise((r) => setTimeout(r, 5));
    const before = ticks;
    const runs = Array.from({ length: 2_000 }, (_, i) => kernel.pipelines.start({ capsule: { id: `c${i}` } }));
    let ticksWhenDone = -1;
    await runs[runs.length - 1]!.done.then(() => (ticksWhenDone = ticks));
    clearInterval(interval);
    await Promise.all(runs.map((run) => run.done));
    expect(ticksWhenDone).toBeGreaterThan(before);
  }, budget(120_000));
});
