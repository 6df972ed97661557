import binaryen from 'binaryen';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import type { Capability } from '../../src/wasm/abi.ts';
import { loadWasmOverlay, type OverlayEngine } from '../../src/wasm/engine.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { EMPTY_OBJECT, hostileModule, manifestOf, nested, wat } from '../support/hostile.ts';
import { buildFixture } from '../support/overlays.ts';
import { budget } from '../support/wait.ts';

const modes = ['strict', 'relaxed'] as const;
const logger = captureLogger().logger;
const V128 = '(v128.const i64x2 0 0)';
const PASSIVE_ELEMENTS = `(table $t 2 funcref) (elem $e func $f) (func $f (result i32) (i32.const ${EMPTY_OBJECT}))
  (func (export "x") (param i32) (result i32) (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 1)) (i32.const ${EMPTY_OBJECT}))`;

/** How a load, then a call of `run`, ends: `ok`, or the error's code (`untyped …` for anything not a ForgeError). */
async function outcome(bytes: Uint8Array, mode: (typeof modes)[number], capabilities: Capability[] = ['LOGGING', 'EVENT_PUBLISH']): Promise<string> {
  let engine: OverlayEngine | undefined;
  const code = (error: unknown) => (isForgeError(error) ? error.code : `untyped ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
  try {
    engine = await loadWasmOverlay(bytes, { mode, cache: testCache, logger, poolSize: 1, manifest: manifestOf(bytes, { capabilities }), grant: capabilities });
  } catch (error) {
    return `load ${code(error)}`;
  }
  try {
    await engine.call('run', { probe: true }, { deadlineMs: 5_000 });
    return 'ok';
  } catch (error) {
    return `call ${code(error)}`;
  } finally {
    await engine.close();
  }
}

const CASES: [string, Uint8Array, RegExp][] = [
  ['forge.log imported with an i64 parameter', hostileModule('(func (export "x") (param i32) (result i32) (call $log (i64.const 1) (i32.const 16)) (i32.const 16))', { imports: '(import "forge" "log" (func $log (param i64 i32)))' }), /load INVALID_MODULE/],
  ['env.abort imported with an i64 parameter', hostileModule('', { imports: '(import "env" "abort" (func $abort (param i64 i32 i32 i32)))' }), /load INVALID_MODULE/],
  ['run exported with an i64 parameter', wat(`(module (memory (export "memory") 1) (func (export "__new") (param i32 i32) (result i32) (i32.const 16)) (func (export "run") (param i64) (result i32) (i32.const 16)))`), /load INVALID_MODULE/],
  ['__new exported with the wrong result', wat(`(module (memory (export "memory") 1) (func (export "__new") (param i32 i32) (result i64) (i64.const 16)) (func (export "run") (param i32) (result i32) (i32.const 16)))`), /load INVALID_MODULE/],
  [
    '__new returning a pointer outside memory',
    wat(`(module (memory (export "memory") 1) (func (export "__new") (param i32 i32) (result i32) (i32.const 2147483632)) (func (export "run") (param i32) (result i32) (i32.const 16)))`),
    /call INVALID_ALLOCATION/,
  ],
  ['3,000 nested ifs', nested(3_000, 'if'), /^load MODULE_LIMIT$/],
  // binaryen merges blocks nested in nothing but each other as it reads them: nothing to refuse, nothing to overflow.
  ['3,000 nested blocks', nested(3_000, 'block'), /^(ok|load MODULE_LIMIT)$/],
  ['two memories', wat(`(module (memory (export "memory") 1) (memory $second 1) (func (export "__new") (param i32 i32) (result i32) (i32.const 16)) (func (export "run") (param i32) (result i32) (i32.const 16)))`), /load INVALID_MODULE/],
  ['a data segment outside its memory', hostileModule('(data (i32.const 70000) "x")'), /load INSTANTIATION_FAILED/],
  ['an export named like the meter’s own', hostileModule('(global $g (mut i64) (i64.const 0)) (export "__forge_fuel" (global $g))'), /load INVALID_MODULE/],
  ['an export named like the meter’s start', hostileModule('(func (export "__forge_start"))'), /load INVALID_MODULE/],
  ['an imported memory', wat(`(module (import "env" "memory" (memory 1)) (export "memory" (memory 0)) (func (export "__new") (param i32 i32) (result i32) (i32.const 16)) (func (export "run") (param i32) (result i32) (i32.const 16)))`), /load (INVALID_MODULE|CAPABILITY_DENIED)/],
  ['a start function that traps', hostileModule('(start $boom) (func $boom unreachable)'), /load OVERLAY_TRAP/],
  ['a memory starting above the cap', hostileModule('', { pages: 300 }), /load MEMORY_LIMIT/],
  ['a table starting above the cap', hostileModule('(table 9000000 funcref)'), /load MEMORY_LIMIT/],
  // Results that differ between machines would break "the same fuel and output everywhere" (V8 accepts them).
  ['relaxed SIMD', hostileModule(`(func (export "x") (param i32) (result i32) (drop (f32x4.relaxed_madd ${V128} ${V128} ${V128})) (i32.const 16))`, { features: binaryen.Features.RelaxedSIMD }), /^load INVALID_MODULE$/],
  ['relaxed SIMD in the start function', hostileModule(`(start $s) (func $s (drop (i32x4.relaxed_trunc_f32x4_s ${V128})))`, { features: binaryen.Features.RelaxedSIMD }), /^load INVALID_MODULE$/],
  ['a passive element segment used by table.init', hostileModule(PASSIVE_ELEMENTS), /^load INVALID_MODULE$/],
];

describe.each(modes)('refusals in words, %s mode', (mode) => {
  it('names a passive element segment and table.init, never "[object Object]"', async () => {
    const error = await loadWasmOverlay(hostileModule(PASSIVE_ELEMENTS), { mode, cache: testCache, logger, poolSize: 1, manifest: manifestOf(hostileModule(PASSIVE_ELEMENTS)) }).catch((caught: unknown) => caught);
    expect(isForgeError(error, 'INVALID_MODULE')).toBe(true);
    expect((error as Error).message).toMatch(/passive element segment.*table\.init/);
  });
});

describe.each(modes)('refusals, %s mode', (mode) => {
  it.each(CASES)('refuses %s with a typed error', async (_name, bytes, expected) => {
    expect(await outcome(bytes, mode)).toMatch(expected);
  });
});

describe('a fuzz loop over malformed modules', () => {
  const good: Partial<Record<(typeof modes)[number], OverlayEngine>> = {};
  let seeds: Uint8Array[];

  beforeAll(async () => {
    const basics = await buildFixture('fixtures/basics.ts', { capabilities: ['LOGGING', 'EVENT_PUBLISH'] });
    seeds = [basics.bytes, CASES[0]![1], hostileModule(`(table 2 funcref) (elem (i32.const 0) $f) (func $f (result i32) (i32.const ${EMPTY_OBJECT})) (func (export "t") (param i32) (result i32) (call_indirect (result i32) (i32.const 0)))`)];
    for (const mode of modes) good[mode] = await loadWasmOverlay(basics.bytes, { mode, cache: testCache, logger, poolSize: 1, manifest: basics.manifest, grant: ['LOGGING', 'EVENT_PUBLISH'] });
  }, budget(120_000));
  afterAll(async () => {
    await Promise.all(Object.values(good).map((engine) => engine.close()));
  });

  it('ends every load and call with a ForgeError code, in both engines, and the kernel serves the next call', async () => {
    // Bounded in time, not in count: a slower machine runs fewer mutants, never a longer test.
    const deadline = Date.now() + 25_000;
    const outcomes = new Map<string, number>();
    const mutants = fc.sample(
      fc.record({ seed: fc.nat(), flips: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }), cut: fc.option(fc.nat(), { nil: undefined }) }),
      { numRuns: 400, seed: 20_261_202 },
    );
    for (const { seed, flips, cut } of mutants) {
      if (Date.now() > deadline) break;
      const base = seeds[seed % seeds.length]!;
      let bytes = base.slice();
      for (const { at, value } of flips) bytes[8 + (at % (bytes.length - 8))] = value;
      if (cut !== undefined) bytes = bytes.subarray(0, 8 + (cut % (bytes.length - 8)));
      for (const mode of modes) {
        const result = await outcome(bytes, mode);
        outcomes.set(result, (outcomes.get(result) ?? 0) + 1);
        expect(result, `mutant of seed ${seed % seeds.length} in ${mode} mode`).not.toMatch(/untyped|UNEXPECTED/);
        expect((await good[mode]!.call('run', { after: result })).output).toEqual({ after: result });
      }
    }
    expect([...outcomes.values()].reduce((a, b) => a + b, 0)).toBeGreaterThan(20);
  }, budget(120_000));
});
