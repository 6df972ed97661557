import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Capability } from '../../src/wasm/abi.ts';
import { loadWasmOverlay, type LoadWasmOptions, type OverlayEngine } from '../../src/wasm/engine.ts';
import type { HostFunction } from '../../src/wasm/host-functions.ts';
import type { PublishedEvent } from '../../src/wasm/engine.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { buildFixture } from '../support/overlays.ts';
import { codeOf } from '../support/errors.ts';

const ALL: Capability[] = ['LOGGING', 'EVENT_PUBLISH', 'DATABASE_READ'];

const modes = ['strict', 'relaxed'] as const;

describe.each(modes)('WASM engine, %s mode', (mode) => {
  let basics: { bytes: Uint8Array; manifest: Record<string, unknown> };
  let overlay: OverlayEngine;
  const published: PublishedEvent[][] = [];
  const log = captureLogger();

  const load = (bytes: Uint8Array, options: Partial<LoadWasmOptions> & { manifest: unknown }): Promise<OverlayEngine> =>
    loadWasmOverlay(bytes, { mode, cache: testCache, logger: log.logger, poolSize: 1, ...options });

  beforeAll(async () => {
    basics = await buildFixture('fixtures/basics.ts', { capabilities: ['LOGGING', 'EVENT_PUBLISH'] });
    overlay = await load(basics.bytes, { manifest: basics.manifest, grant: ALL, onEvents: (events) => published.push([...events]) });
  });
  afterAll(async () => {
    await overlay.close();
  });

  it('round-trips JSON through the overlay and reports fuel and duration', async () => {
    const input = { id: 'c1', kind: 'note', content: 'héllo 👋 "quoted"', tags: ['a', 'b'], trust: 0.5, parents: [] };
    const result = await overlay.call('run', input);
    expect(result.output).toEqual(input);
    expect(result.fuelUsed).toBeGreaterThan(0);
    expect(result.durationMs).toBeGreaterThanOrEqual(0);
    expect(overlay.mode).toBe(mode);
    expect(overlay.exports).toContain('run');
  });

  it('burns the same fuel for the same input on every call', async () => {
    const runs = await Promise.all(Array.from({ length: 10 }, () => overlay.call('count', 5000)));
    expect(runs.map((r) => r.output)).toEqual(Array(10).fill(7500));
    expect(new Set(runs.map((r) => r.fuelUsed)).size).toBe(1);
  });

  it('delivers published events only after the call succeeded, and logs through the overlay-bound logger', async () => {
    published.length = 0;
    const result = await overlay.call('publish', 'from-test');
    expect(result.events).toEqual([
      { type: 'capsule.analyzed', payload: { score: 7 }, source: overlay.id },
      { type: 'insight.found', payload: { pattern: 'x' }, source: overlay.id },
    ]);
    expect(published).toEqual([result.events]);
    const line = log.lines().find((l) => l.msg === 'publishing for "from-test"');
    expect(line).toMatchObject({ overlayId: overlay.id, overlay: 'fixture', export: 'publish', level: 30 });
  });

  it('publishes nothing when the call fails after publishing', async () => {
    published.length = 0;
    expect(await codeOf(overlay.call('publishThenTrap', 'x'))).toBe('OVERLAY_TRAP');
    expect(published).toEqual([]);
  });

  it('refuses a malformed event type with INVALID_EVENT', async () => {
    expect(await codeOf(overlay.call('publishBadType', 'x'))).toBe('INVALID_EVENT');
  });

  const faults: [string, string, unknown][] = [
    ['an infinite loop', 'spin', 'x'],
    ['unbounded recursion', 'recurse', 'x'],
    ['a call-tree bomb without loops', 'bomb', 'x'],
    ['memory.grow beyond the cap', 'hog', 'x'],
    ['memory.fill over the whole heap, repeatedly', 'fillAll', 'x'],
    ['output that is not JSON', 'notJson', 'x'],
    ['output that is not valid Unicode (cannot become UTF-8)', 'badText', 'x'],
    ['an AssemblyScript abort', 'fail', 'x'],
    ['an export that does not exist', 'doesNotExist', 'x'],
  ];
  const expected: Record<string, string> = {
    spin: 'OUT_OF_FUEL',
    recurse: 'STACK_OVERFLOW',
    bomb: 'OUT_OF_FUEL',
    hog: 'MEMORY_LIMIT',
    fillAll: 'OUT_OF_FUEL',
    notJson: 'INVALID_OUTPUT',
    badText: 'INVALID_OUTPUT',
    fail: 'OVERLAY_TRAP',
    doesNotExist: 'EXPORT_NOT_FOUND',
  };
  it.each(faults)('stops %s with a typed error and keeps serving', async (_what, exportName, input) => {
    expect(await codeOf(overlay.call(exportName, input))).toBe(expected[exportName]);
    expect((await overlay.call('run', { still: 'serving' })).output).toEqual({ still: 'serving' });
  });

  it('reports the fuel used when it runs out, and a per-call budget overrides the manifest', async () => {
    const needed = (await overlay.call('count', 1000)).fuelUsed;
    let caught: unknown;
    try {
      await overlay.call('count', 1000, { fuel: needed - 1 });
    } catch (error) {
      caught = error;
    }
    expect(caught).toMatchObject({ code: 'OUT_OF_FUEL', fuelUsed: needed - 1 });
    expect((await overlay.call('count', 1000, { fuel: needed })).fuelUsed).toBe(needed);
  });

  it('refuses bad call input with INVALID_INPUT or INPUT_TOO_LARGE, before running anything', async () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(await codeOf(overlay.call('run', undefined))).toBe('INVALID_INPUT');
    expect(await codeOf(overlay.call('run', cyclic))).toBe('INVALID_INPUT');
    expect(await codeOf(overlay.call('run', 'x'.repeat(600_000)))).toBe('INPUT_TOO_LARGE');
    expect(await codeOf(overlay.call('run', {}, { fuel: -5 }))).toBe('INVALID_INPUT');
    expect(await codeOf(overlay.call('run', {}, { deadlineMs: 0 }))).toBe('INVALID_INPUT');
    expect(await codeOf(overlay.call('', {}))).toBe('INVALID_INPUT');
  });

  it('cancels a call through its AbortSignal', async () => {
    const controller = new AbortController();
    controller.abort();
    expect(await codeOf(overlay.call('run', {}, { signal: controller.signal }))).toBe('CANCELLED');
    expect((await overlay.call('run', 1)).output).toBe(1);
  });

  it('refuses calls after close with INSTANCE_TERMINATED', async () => {
    const closing = await load(basics.bytes, { manifest: basics.manifest, grant: ALL });
    await closing.close();
    expect(await codeOf(closing.call('run', {}))).toBe('INSTANCE_TERMINATED');
  });

  describe('async host functions (db_read, as the graph store will plug it in)', () => {
    let hostCalls: { bytes: Uint8Array; manifest: Record<string, unknown> };
    const dbRead = (invoke: HostFunction['invoke']): HostFunction => ({
      name: 'db_read',
      capability: 'DATABASE_READ',
      async: true,
      params: ['string', 'string'],
      result: 'string',
      invoke,
    });
    beforeAll(async () => {
      hostCalls = await buildFixture('fixtures/host-calls.ts', { capabilities: ['DATABASE_READ'] });
    });

    it('suspends the overlay until the host function resolves, and returns its result', async () => {
      const seen: unknown[] = [];
      const host = await load(hostCalls.bytes, {
        manifest: hostCalls.manifest,
        grant: ALL,
        hostFunctions: [
          dbRead(async (context, args) => {
            seen.push({ overlay: context.overlayName, export: context.exportName, args, caller: context.caller, capabilities: context.capabilities });
            await new Promise((r) => setTimeout(r, 5));
            return JSON.stringify({ rows: [{ id: args[1] }] });
          }),
        ],
      });
      try {
        expect((await host.call('run', 'c-9', { caller: { trust: 70, runId: 'run_1', capsuleId: 'c-9', correlationId: 'corr-1' } })).output).toEqual({ rows: [{ id: '"c-9"' }] });
        expect((await host.call('twice', 1)).output).toEqual([{ rows: [{ id: '1' }] }, { rows: [{ id: '1' }] }]);
        // The host function knows whose call it serves, and what the overlay may do; a call without a caller says so.
        expect(seen[0]).toEqual({ overlay: 'fixture', export: 'run', args: ['MATCH (c:Capsule) RETURN c.id', '"c-9"'], caller: { trust: 70, runId: 'run_1', capsuleId: 'c-9', correlationId: 'corr-1' }, capabilities: hostCalls.manifest.capabilities });
        expect(seen[1]).toMatchObject({ caller: { trust: 0, runId: null, capsuleId: null, correlationId: null } });
      } finally {
        await host.close();
      }
    });

    it('fails the call with the host function\'s own typed error', async () => {
      const host = await load(hostCalls.bytes, {
        manifest: hostCalls.manifest,
        grant: ALL,
        hostFunctions: [
          dbRead(() => {
            throw Object.assign(new Error('no graph'), { code: 'X' });
          }),
        ],
      });
      try {
        expect(await codeOf(host.call('run', 1))).toMatch(/untyped|X/);
      } finally {
        await host.close();
      }
    });

    it(`stops a hanging host call at the deadline (${mode === 'strict' ? 'the worker is killed' : 'the call is rejected'}) and serves the next call`, async () => {
      let hang = true;
      const host = await load(hostCalls.bytes, {
        manifest: hostCalls.manifest,
        grant: ALL,
        hostFunctions: [dbRead(() => (hang ? new Promise(() => {}) : '"ok"'))],
      });
      try {
        expect(await codeOf(host.call('run', 1, { deadlineMs: 150 }))).toBe('DEADLINE_EXCEEDED');
        hang = false;
        expect((await host.call('run', 1)).output).toBe('ok');
      } finally {
        await host.close();
      }
    });

    it('refuses at load an import whose capability is not granted, or not declared', async () => {
      const fn = dbRead(() => '"x"');
      const notGranted = load(hostCalls.bytes, { manifest: hostCalls.manifest, grant: ['LOGGING'], hostFunctions: [fn] });
      await expect(notGranted).rejects.toMatchObject({ code: 'CAPABILITY_DENIED', details: { declared: true, capability: 'DATABASE_READ' } });
      const undeclared = { ...hostCalls.manifest, capabilities: [] };
      await expect(load(hostCalls.bytes, { manifest: undeclared, grant: ALL, hostFunctions: [fn] })).rejects.toMatchObject({
        code: 'CAPABILITY_DENIED',
        details: { declared: false },
      });
    });
  });
});

describe('WASM engine, both modes together', () => {
  it('gives identical outputs and fuel in strict and relaxed mode for any input', async () => {
    const { bytes, manifest } = await buildFixture('fixtures/basics.ts', { capabilities: ['LOGGING', 'EVENT_PUBLISH'] });
    const [strict, relaxed] = await Promise.all(
      modes.map((mode) => loadWasmOverlay(bytes, { manifest, grant: ALL, mode, cache: testCache, logger: captureLogger().logger, poolSize: 1 })),
    );
    try {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: 3000 }), fc.jsonValue({ maxDepth: 3 }), async (n, value) => {
          const [a, b] = await Promise.all([strict!.call('count', n), relaxed!.call('count', n)]);
          expect(a.output).toEqual(b.output);
          expect(a.fuelUsed).toBe(b.fuelUsed);
          const [c, d] = await Promise.all([strict!.call('run', value), relaxed!.call('run', value)]);
          expect(c.output).toEqual(d.output);
          expect(c.fuelUsed).toBe(d.fuelUsed);
        }),
        { numRuns: 40 },
      );
    } finally {
      await Promise.all([strict!.close(), relaxed!.close()]);
    }
  });

  it('kills a runaway that never yields in strict mode at its wall-clock deadline', async () => {
    const { bytes, manifest } = await buildFixture('fixtures/basics.ts', { capabilities: ['LOGGING', 'EVENT_PUBLISH'] });
    const strict = await loadWasmOverlay(bytes, { manifest, grant: ALL, mode: 'strict', cache: testCache, logger: captureLogger().logger, poolSize: 1 });
    try {
      // With a budget far beyond the deadline, only the wall clock can stop it.
      expect(await codeOf(strict.call('spin', 'x', { fuel: Number.MAX_SAFE_INTEGER, deadlineMs: 200 }))).toBe('DEADLINE_EXCEEDED');
      expect((await strict.call('run', 'next')).output).toBe('next');
    } finally {
      await strict.close();
    }
  });
});
