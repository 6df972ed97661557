import { afterAll, describe, expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import { createKernel } from '../../src/kernel.ts';
import { loadWasmOverlay, type LoadWasmOptions, type OverlayEngine } from '../../src/wasm/engine.ts';
import { EFFECT_LIMITS, type HostFunction } from '../../src/wasm/host-functions.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { EMPTY_OBJECT, hostileModule, manifestOf, READ_NUMBER } from '../support/hostile.ts';
import { budget } from '../support/wait.ts';

const modes = ['strict', 'relaxed'] as const;

/** Where the stash module keeps its secret: page 40, far beyond the memory it starts with. */
const HIGH = 40 * 65_536;
const STASH = hostileModule(
  `(func (export "stash") (param $in i32) (result i32) (local $len i32)
    (local.set $len (i32.load (i32.sub (local.get $in) (i32.const 4))))
    (if (i32.lt_u (memory.size) (i32.const 41)) (then (drop (memory.grow (i32.sub (i32.const 41) (memory.size))))))
    (memory.copy (i32.const ${HIGH}) (local.get $in) (local.get $len))
    (i32.store (i32.const ${HIGH - 4}) (local.get $len))
    (i32.const ${EMPTY_OBJECT}))
  (func (export "peek") (param i32) (result i32)
    (if (result i32) (i32.eqz (i32.load (i32.const ${HIGH - 4}))) (then (i32.const ${EMPTY_OBJECT})) (else (i32.const ${HIGH}))))`,
);

const TABLES = hostileModule(
  `(table $t 1 funcref)
  (elem (i32.const 0) $entry)
  (func $entry (result i32) (i32.const ${EMPTY_OBJECT}))
  (func (export "growHuge") (param i32) (result i32)
    (drop (table.grow $t (ref.null func) (i32.const 10000000)))
    (drop (table.grow $t (ref.null func) (i32.const 10000000)))
    (i32.const ${EMPTY_OBJECT}))
  (func (export "growOne") (param i32) (result i32) (drop (table.grow $t (ref.null func) (i32.const 1))) (i32.const ${EMPTY_OBJECT}))
  (func (export "tamper") (param i32) (result i32) (table.set $t (i32.const 0) (ref.null func)) (i32.const ${EMPTY_OBJECT}))
  (func (export "check") (param i32) (result i32)
    (if (i32.ne (table.size $t) (i32.const 1)) (then unreachable))
    (call_indirect $t (result i32) (i32.const 0)))
  (func (export "growTableThenMemory") (param i32) (result i32)
    (drop (table.grow $t (ref.null func) (i32.const 1024)))
    (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
    (i32.const ${EMPTY_OBJECT}))`,
);

const DB_IMPORT = '(import "forge" "db_read" (func $db (param i32 i32) (result i32)))';
const DB_FROM_ALLOCATOR = hostileModule('', { imports: DB_IMPORT, onAllocate: `(drop (call $db (i32.const ${EMPTY_OBJECT}) (i32.const ${EMPTY_OBJECT})))` });
const DB_FROM_START = hostileModule(`(start $boot) (func $boot (drop (call $db (i32.const ${EMPTY_OBJECT}) (i32.const ${EMPTY_OBJECT}))))`, { imports: DB_IMPORT });

const LOG_IMPORT = '(import "forge" "log" (func $log (param i32 i32)))';
/** Writes `units` UTF-16 code units of `unit` at 64 KiB with its rtSize header, then logs it `times` times. */
const logLoop = (name: string, units: number, unit: number, times: number) => `(func (export "${name}") (param i32) (result i32) (local $i i32)
    (if (i32.lt_u (memory.size) (i32.const ${Math.ceil((65_536 + units * 2) / 65_536) + 1}))
      (then (drop (memory.grow (i32.sub (i32.const ${Math.ceil((65_536 + units * 2) / 65_536) + 1}) (memory.size))))))
    (i32.store (i32.const 65532) (i32.const ${units * 2}))
    (loop $fill
      (i32.store16 (i32.add (i32.const 65536) (i32.shl (local.get $i) (i32.const 1))) (i32.const ${unit}))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const ${units}))))
    (local.set $i (i32.const 0))
    (block $done (loop $log
      (br_if $done (i32.ge_u (local.get $i) (i32.const ${times})))
      (call $log (i32.const 1) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $log)))
    (i32.const ${EMPTY_OBJECT}))`;
const LOG_SIZES = { small: 1024, medium: 8192, huge: 4 * 1024 * 1024 } as const;
const LOGS = hostileModule(
  [logLoop('flood', 8192, 1, 1000), ...Object.entries(LOG_SIZES).flatMap(([size, units]) => [logLoop(`${size}30`, units, 0x61, 30), logLoop(`${size}0`, units, 0x61, 0)])].join('\n'),
  { imports: LOG_IMPORT, pages: 2 },
);

/** Recursion `depth` deep (the input) through frames of `locals` i64 locals each. */
const recursion = (locals: number) => `(func $rec${locals} (param $d i32) (result i32) ${Array.from({ length: locals }, (_, i) => `(local $l${i} i64)`).join(' ')}
    (if (result i32) (i32.eqz (local.get $d)) (then (i32.const ${EMPTY_OBJECT})) (else (call $rec${locals} (i32.sub (local.get $d) (i32.const 1))))))
  (func (export "rec${locals}") (param $in i32) (result i32) (call $rec${locals} (call $number (local.get $in))))`;
const RECURSION = hostileModule([READ_NUMBER, recursion(0), recursion(200), recursion(1000)].join('\n'));

describe.each(modes)('a hostile module, %s mode', (mode) => {
  const engines: OverlayEngine[] = [];
  const load = async (bytes: Uint8Array, options: Partial<LoadWasmOptions> & { manifest?: Record<string, unknown> } = {}): Promise<OverlayEngine> => {
    const engine = await loadWasmOverlay(bytes, { mode, cache: testCache, logger: captureLogger().logger, poolSize: 1, ...options, manifest: manifestOf(bytes, options.manifest) });
    engines.push(engine);
    return engine;
  };
  const outcome = (promise: Promise<{ output: unknown }>) => promise.then((r) => ({ output: r.output }), (error: unknown) => ({ code: isForgeError(error) ? error.code : `untyped ${String(error)}` }));
  afterAll(async () => {
    await Promise.all(engines.map((e) => e.close()));
  });

  it('cannot read what an earlier caller left in memory it grew (finding 1)', async () => {
    const overlay = await load(STASH, { manifest: { memoryPages: 64 } });
    const secret = { card: '4111-1111-1111-1111' };
    await overlay.call('stash', secret);
    for (let i = 0; i < 3; i++) {
      const seen = await outcome(overlay.call('peek', null));
      expect(JSON.stringify(seen)).not.toContain('4111');
      // As on a fresh instance: the page the stash grew into does not exist for the next caller.
      expect(seen).toEqual({ code: 'OVERLAY_TRAP' });
    }
  });

  it('charges table.grow by the elements asked for and counts tables toward the memory cap (finding 2)', async () => {
    const overlay = await load(TABLES, { manifest: { memoryPages: 2 } });
    const before = process.memoryUsage().rss;
    await expect(overlay.call('growHuge', null)).rejects.toMatchObject({ code: 'OUT_OF_FUEL' });
    // With fuel enough for the request, the cap refuses the elements: the grow fails (-1) and nothing is allocated.
    expect((await overlay.call('growHuge', null, { fuel: 100_000_000 })).fuelUsed).toBeGreaterThanOrEqual(20_000_000);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 * 1024);
    await expect(overlay.call('growTableThenMemory', null)).rejects.toMatchObject({ code: 'MEMORY_LIMIT' });
  });

  it('starts every call with the tables as after instantiation', async () => {
    const overlay = await load(TABLES, { manifest: { memoryPages: 2 } });
    await overlay.call('growOne', null);
    expect((await overlay.call('check', null)).output).toEqual({});
    await overlay.call('tamper', null);
    expect((await overlay.call('check', null)).output).toEqual({});
  });

  it('refuses an async host function called from the allocator, runs nothing, and keeps serving (finding 3)', async () => {
    let invoked = 0;
    const dbRead: HostFunction = { name: 'db_read', capability: 'DATABASE_READ', async: true, params: ['string', 'string'], result: 'string', invoke: () => (invoked++, Promise.resolve('{}')) };
    const overlay = await load(DB_FROM_ALLOCATOR, { manifest: { capabilities: ['DATABASE_READ'] }, grant: ['DATABASE_READ'], hostFunctions: [dbRead] });
    for (let i = 0; i < 3; i++) await expect(overlay.call('run', { i })).rejects.toMatchObject({ code: 'HOST_CALL_OUTSIDE_CALL' });
    expect(invoked).toBe(0);
  });

  it('refuses an async host function called from the start function at load, and settles', async () => {
    const dbRead: HostFunction = { name: 'db_read', capability: 'DATABASE_READ', async: true, params: ['string', 'string'], result: 'string', invoke: () => Promise.resolve('{}') };
    await expect(load(DB_FROM_START, { manifest: { capabilities: ['DATABASE_READ'] }, grant: ['DATABASE_READ'], hostFunctions: [dbRead] })).rejects.toMatchObject({ code: 'HOST_CALL_OUTSIDE_CALL' });
  });

  it('survives a flood of control-character log lines, and the next call succeeds (finding 4)', async () => {
    const overlay = await load(LOGS, { manifest: { capabilities: ['LOGGING'], memoryPages: 200 }, grant: ['LOGGING'] });
    const flood = await outcome(overlay.call('flood', null));
    if ('code' in flood) expect(flood.code).not.toMatch(/^untyped/);
    for (let i = 0; i < 3; i++) expect((await overlay.call('run', null)).output).toEqual({});
  });

  it('charges host work by the bytes the host reads, and reads a log line only up to its limit (finding 5)', async () => {
    const overlay = await load(LOGS, { manifest: { capabilities: ['LOGGING'], memoryPages: 200 }, grant: ['LOGGING'] });
    /** The fuel of one log call: 30 calls (within the per-call log budget) against none, the same string written before either. */
    const perLog = async (size: keyof typeof LOG_SIZES) => {
      const [many, none] = await Promise.all([overlay.call(`${size}30`, null, { fuel: 100_000_000 }), overlay.call(`${size}0`, null, { fuel: 100_000_000 })]);
      expect(many.logs).toHaveLength(30);
      expect(many.logs.every((line) => line.message.length <= EFFECT_LIMITS.logLineChars + 1)).toBe(true);
      return (many.fuelUsed - none.fuelUsed) / 30;
    };
    const [small, medium, huge] = [await perLog('small'), await perLog('medium'), await perLog('huge')];
    // Two bytes a code unit, one fuel unit per 8 bytes the host reads.
    expect(medium - small).toBe(((LOG_SIZES.medium - LOG_SIZES.small) * 2) / 8);
    // Past the line limit the host reads no more, and charges no more: 8 MB logged costs what 16 KB does.
    expect(huge).toBe(medium);
  });

  it('refuses a manifest asking for more memory than the service allows, before anything runs', async () => {
    await expect(load(STASH, { manifest: { memoryPages: 5_000 } })).rejects.toMatchObject({ code: 'MEMORY_LIMIT', message: expect.stringContaining('at most 4096') as string });
    await expect(load(STASH, { manifest: { memoryPages: 64 }, maxMemoryPages: 32 })).rejects.toMatchObject({ code: 'MEMORY_LIMIT' });
  });

  it('fails deep recursion through large frames with STACK_OVERFLOW naming the stack limit (finding 7)', async () => {
    const overlay = await load(RECURSION);
    await expect(overlay.call('rec200', 1500)).rejects.toMatchObject({ code: 'STACK_OVERFLOW', message: expect.stringMatching(/stack/) as string });
    expect((await overlay.call('rec200', 50)).output).toEqual({});
    expect((await overlay.call('rec0', 1500)).output).toEqual({});
  });
});

describe('both engines', () => {
  it('give the same outcome for the same recursion, whatever its frames (finding 7)', async () => {
    const engines = await Promise.all(modes.map((mode) => loadWasmOverlay(RECURSION, { mode, cache: testCache, logger: captureLogger().logger, poolSize: 1, manifest: manifestOf(RECURSION) })));
    try {
      for (const [name, depths] of [['rec0', [100, 1_000, 2_000, 3_000, 5_000, 20_000]], ['rec200', [10, 100, 150, 200, 400, 1_500]], ['rec1000', [5, 20, 30, 40, 100, 400]]] as const) {
        for (const depth of depths) {
          const results = await Promise.all(
            engines.map((engine) => engine.call(name, depth).then((r) => `ok ${r.fuelUsed}`, (error: unknown) => (isForgeError(error) ? error.code : `untyped ${String(error)}`))),
          );
          expect(results[1], `${name}(${depth})`).toBe(results[0]);
          expect(results[0]).not.toMatch(/untyped/);
        }
      }
    } finally {
      await Promise.all(engines.map((e) => e.close()));
    }
  }, budget(60_000));
});

describe('the kernel\'s limits', () => {
  it.each([0, -1, 1.5, 70_000, 'big'])('refuses limits.maxMemoryPages = %j with INVALID_INPUT', async (maxMemoryPages) => {
    await expect(createKernel({ logger: { level: 'silent' }, limits: { maxMemoryPages: maxMemoryPages as number } })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });

  it.each([0, -1, 1.5, 'lots', Number.MAX_VALUE])('refuses limits.maxFuel = %j with INVALID_INPUT', async (maxFuel) => {
    await expect(createKernel({ logger: { level: 'silent' }, limits: { maxFuel: maxFuel as number } })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });

  it('holds overlays loaded through the kernel to its fuel ceiling (FUEL_LIMIT at load)', async () => {
    const kernel = await createKernel({ logger: { level: 'silent' }, cacheDir: false, limits: { maxFuel: 1_000_000 } });
    try {
      await expect(kernel.overlays.load(STASH, { manifest: manifestOf(STASH, { fuel: { default: 5_000_000 } }) })).rejects.toMatchObject({ code: 'FUEL_LIMIT' });
    } finally {
      await kernel.stop();
    }
  });

  it('holds overlays loaded through the registry to its memory ceiling', async () => {
    const kernel = await createKernel({ logger: { level: 'silent' }, cacheDir: false, limits: { maxMemoryPages: 32 } });
    try {
      await expect(kernel.overlays.load(STASH, { manifest: manifestOf(STASH, { memoryPages: 64 }) })).rejects.toMatchObject({ code: 'MEMORY_LIMIT' });
    } finally {
      await kernel.stop();
    }
  });
});
