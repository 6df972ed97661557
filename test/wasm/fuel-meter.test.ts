import binaryen from 'binaryen';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import { DEFAULT_MAX_STACK_BYTES, FRAME_BASE_BYTES, FUEL_COSTS, METER_EXPORTS, meterModule, TRAP_REASON } from '../../src/wasm/fuel-meter.ts';

/** Hand-written modules whose instruction counts can be worked out on paper. */
const WAT = `(module
  (memory (export "memory") 1 8)
  (func $loop (export "loop") (param $n i32) (result i32) (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i))
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (i32.lt_u (local.get $n) (i32.const 2)) (then (return (local.get $n))))
    (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1))) (call $fib (i32.sub (local.get $n) (i32.const 2)))))
  (func $fill (export "fill") (param $bytes i32) (memory.fill (i32.const 0) (i32.const 7) (local.get $bytes)))
  (func $grow (export "grow") (param $pages i32) (result i32) (memory.grow (local.get $pages)))
  (func $size (export "size") (result i32) (memory.size))
  (func $straight (export "straight") (result i32) (i32.add (i32.const 1) (i32.mul (i32.const 2) (i32.const 3))))
)`;

type Exports = Record<string, ((...args: number[]) => number) & WebAssembly.Global>;

function metered(wat = WAT, imports: WebAssembly.Imports = {}): Exports {
  const module = binaryen.parseText(wat);
  const bytes = module.emitBinary();
  module.dispose();
  const instance = new WebAssembly.Instance(new WebAssembly.Module(meterModule(binaryen, bytes).bytes as Uint8Array<ArrayBuffer>), imports);
  const exports = instance.exports as unknown as Exports;
  exports[METER_EXPORTS.virtualPages]!.value = (instance.exports.memory as WebAssembly.Memory).buffer.byteLength / 65_536;
  return exports;
}

/** The deepest recursion `name(n)` runs to without trapping (by bisection). */
function deepestCall(exports: Exports, name: string): number {
  let low = 0;
  let high = 1_000_000;
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if ('result' in burn(exports, name, [mid])) low = mid;
    else high = mid - 1;
  }
  return low;
}

/** Runs an export under a budget; returns the fuel it burned, or the trap reason. */
function burn(exports: Exports, name: string, args: number[], budget = 1_000_000_000): { fuel: number; result: number } | { trap: number } {
  exports[METER_EXPORTS.fuel]!.value = BigInt(budget);
  exports[METER_EXPORTS.depth]!.value = 0;
  exports[METER_EXPORTS.trapReason]!.value = 0;
  try {
    const result = exports[name]!(...args);
    return { fuel: budget - Number(exports[METER_EXPORTS.fuel]!.value as bigint), result };
  } catch {
    return { trap: exports[METER_EXPORTS.trapReason]!.value as number };
  }
}

describe('FuelMeter', () => {
  const exports = metered();

  it('charges a straight-line function its instruction count once, at entry', () => {
    // i32.add, i32.const, i32.mul, i32.const, i32.const
    expect(burn(exports, 'straight', [])).toEqual({ fuel: 5, result: 7 });
  });

  it('charges a loop body on every iteration: fuel grows linearly with the trip count', () => {
    const at = (n: number): number => {
      const outcome = burn(exports, 'loop', [n]);
      if (!('fuel' in outcome)) throw new Error('trapped');
      return outcome.fuel;
    };
    const perIteration = at(11) - at(10);
    expect(perIteration).toBeGreaterThan(0);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5_000 }), (n) => {
        expect(at(n)).toBe(at(1) + (n - 1) * perIteration);
      }),
    );
  });

  it('is deterministic: the same call burns the same fuel every time', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 18 }), (n) => {
        const first = burn(exports, 'fib', [n]);
        const second = burn(exports, 'fib', [n]);
        expect(second).toEqual(first);
      }),
    );
  });

  it('never lets a call finish having burned more than it was charged: any budget below the cost traps', () => {
    const cost = burn(exports, 'fib', [12]);
    if (!('fuel' in cost)) throw new Error('trapped');
    fc.assert(
      fc.property(fc.integer({ min: 1, max: cost.fuel - 1 }), (budget) => {
        const outcome = burn(exports, 'fib', [12], budget);
        // Either the meter trapped, or the final region overdrew the budget (the host reports that as out of fuel).
        if ('trap' in outcome) expect(outcome.trap).toBe(TRAP_REASON.outOfFuel);
        else expect(outcome.fuel).toBeGreaterThan(budget);
      }),
    );
  });

  it('hands the fuel through every call: a recursive call costs its own entry plus what its callees burned', () => {
    const at = (n: number): number => {
      const outcome = burn(exports, 'fib', [n]);
      if (!('fuel' in outcome)) throw new Error('trapped');
      return outcome.fuel;
    };
    const entry = at(0);
    expect(at(1)).toBe(entry);
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 16 }), (n) => {
        expect(at(n)).toBe(entry + at(n - 1) + at(n - 2));
      }),
    );
  });

  it('charges an indirect call like a direct one (plus its table index), through the same threaded counter', () => {
    const table = metered(`(module (memory (export "memory") 1)
      (type $t (func (param i32) (result i32)))
      (table 2 funcref) (elem (i32.const 0) $double $triple)
      (func $double (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
      (func $triple (param i32) (result i32) (local $x i32) (local.set $x (i32.mul (local.get 0) (i32.const 3))) (local.get $x))
      (func (export "direct") (param i32) (result i32) (call $double (local.get 0)))
      (func (export "indirect") (param i32) (param i32) (result i32) (call_indirect (type $t) (local.get 0) (local.get 1))))`);
    const direct = burn(table, 'direct', [21]);
    expect(direct).toMatchObject({ result: 42 });
    if (!('fuel' in direct)) throw new Error('trapped');
    expect(burn(table, 'indirect', [21, 0])).toEqual({ fuel: direct.fuel + 1, result: 42 });
    // A callee with locals of its own, reached through the table.
    expect(burn(table, 'indirect', [5, 1])).toMatchObject({ result: 15 });
  });

  it('charges what a table index burns before the call it selects', () => {
    const table = metered(`(module (memory (export "memory") 1)
      (type $t (func (param i32) (result i32)))
      (table 2 funcref) (elem (i32.const 1) $double)
      (func $double (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
      (func $pick (param i32) (result i32) (local $i i32)
        (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (local.get 0))))
        (i32.const 1))
      (func (export "picked") (param i32) (param i32) (result i32) (call_indirect (type $t) (local.get 0) (call $pick (local.get 1)))))`);
    const short = burn(table, 'picked', [21, 1]);
    const long = burn(table, 'picked', [21, 101]);
    if (!('fuel' in short) || !('fuel' in long)) throw new Error('trapped');
    expect(short.result).toBe(42);
    // The spin in the index expression is charged: a hundred more iterations, and no budget short of it suffices.
    expect(long.fuel - short.fuel).toBeGreaterThanOrEqual(100 * 5);
    expect(burn(table, 'picked', [21, 101], long.fuel - 1)).toEqual({ trap: TRAP_REASON.outOfFuel });
  });

  it('keeps the count across host functions: one placed in the table, and one that calls back into the module', () => {
    const self: { exports?: Exports } = {};
    const host = metered(
      `(module (import "env" "twice" (func $twice (param i32) (result i32))) (import "env" "back" (func $back (param i32) (result i32)))
        (memory (export "memory") 1)
        (type $t (func (param i32) (result i32)))
        (table 2 funcref) (elem (i32.const 0) $twice $back)
        (func $work (export "work") (param i32) (result i32) (local $i i32)
          (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (local.get 0))))
          (local.get $i))
        (func (export "viaTable") (param i32) (result i32) (call_indirect (type $t) (local.get 0) (i32.const 0)))
        (func (export "backViaTable") (param i32) (result i32) (call_indirect (type $t) (local.get 0) (i32.const 1)))
        (func (export "callBack") (param i32) (result i32) (call $back (call $work (local.get 0)))))`,
      { env: { twice: (x: number) => x * 2, back: (n: number) => self.exports!.work!(n) } },
    );
    self.exports = host;
    expect(burn(host, 'viaTable', [4])).toMatchObject({ result: 8 });
    const work = (n: number): number => {
      const outcome = burn(host, 'work', [n]);
      if (!('fuel' in outcome)) throw new Error('trapped');
      return outcome.fuel;
    };
    const once = burn(host, 'callBack', [10]);
    if (!('fuel' in once)) throw new Error('trapped');
    // What the module burned inside the host function's call-back counts: ten more iterations cost exactly that.
    const more = burn(host, 'callBack', [20]);
    if (!('fuel' in more)) throw new Error('trapped');
    expect(more.fuel - once.fuel).toBe(2 * (work(20) - work(10)));
    expect(once.fuel).toBeGreaterThan(2 * work(10) + FUEL_COSTS.hostCall);
    // The same through the table: the host function is reached by a thunk that hands the counter over too.
    const table = (n: number): number => {
      const outcome = burn(host, 'backViaTable', [n]);
      if (!('fuel' in outcome)) throw new Error('trapped');
      return outcome.fuel;
    };
    expect(table(20) - table(10)).toBe(work(20) - work(10));
    expect(table(10)).toBeGreaterThan(work(10) + FUEL_COSTS.hostCall);
    expect(burn(host, 'backViaTable', [1_000_000], 10_000)).toEqual({ trap: TRAP_REASON.outOfFuel });
  });

  it('counts the stack across a host function that calls back into the module', () => {
    const self: { exports?: Exports; reentries: number; depth: number } = { reentries: 0, depth: 0 };
    const host = metered(
      `(module (import "env" "h" (func $h (param i32) (result i32))) (memory (export "memory") 1)
        (func $down (export "down") (param i32) (result i32)
          (if (result i32) (i32.eqz (local.get 0)) (then (call $h (i32.const 0)))
            (else (i32.add (i32.const 1) (call $down (i32.sub (local.get 0) (i32.const 1))))))))`,
      { env: { h: () => (self.reentries-- > 0 ? self.exports!.down!(self.depth) : 0) } },
    );
    self.exports = host;
    const deepest = deepestCall(host, 'down');
    const three = Math.ceil((deepest * 3) / 4);
    self.reentries = 0;
    expect(burn(host, 'down', [three])).toMatchObject({ result: three });
    // Three quarters of the stack, then the host calls back for half of it more: past the limit on the one stack.
    self.reentries = 1;
    self.depth = Math.ceil(deepest / 2);
    expect(burn(host, 'down', [three])).toEqual({ trap: TRAP_REASON.callDepth });
  });

  it('traps an infinite loop with the out-of-fuel reason', () => {
    expect(burn(exports, 'loop', [2 ** 31 - 1], 10_000)).toEqual({ trap: TRAP_REASON.outOfFuel });
  });

  it('traps deep recursion at the stack limit, deterministically, sooner for larger frames', () => {
    const recursion = (locals: number) =>
      metered(`(module (memory (export "memory") 1)
        (func $down (export "down") (param i32) (result i32) ${'(local i64) '.repeat(locals)}
          (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
            (else (i32.add (i32.const 1) (call $down (i32.sub (local.get 0) (i32.const 1))))))))`);
    const small = recursion(0);
    const deepest = deepestCall(small, 'down');
    expect(deepest).toBeGreaterThanOrEqual(1_500);
    expect(deepestCall(recursion(0), 'down')).toBe(deepest);
    expect(burn(small, 'down', [deepest + 1])).toEqual({ trap: TRAP_REASON.callDepth });
    // 200 more i64 locals a frame (1,600 bytes more): about a tenth of the depth at most.
    const large = deepestCall(recursion(200), 'down');
    expect(large).toBeLessThan(deepest / 8);
    expect(large * (FRAME_BASE_BYTES + 200 * 8)).toBeLessThanOrEqual(DEFAULT_MAX_STACK_BYTES);
  });

  it('charges memory.fill by its size, before filling', () => {
    const small = burn(exports, 'fill', [8]);
    const large = burn(exports, 'fill', [8 + 64 * FUEL_COSTS.bytesPerUnit]);
    if (!('fuel' in small) || !('fuel' in large)) throw new Error('trapped');
    expect(large.fuel - small.fuel).toBe(64);
    expect(burn(exports, 'fill', [65_536], 100)).toEqual({ trap: TRAP_REASON.outOfFuel });
  });

  it('charges memory.grow per page, and keeps a virtual memory size the host can reset', () => {
    const grow = burn(exports, 'grow', [2]);
    if (!('fuel' in grow)) throw new Error('trapped');
    expect(grow.result).toBe(1);
    expect(grow.fuel).toBeGreaterThanOrEqual(2 * FUEL_COSTS.growPerPage);
    expect(burn(exports, 'size', [])).toMatchObject({ result: 3 });
    exports[METER_EXPORTS.virtualPages]!.value = 1;
    expect(burn(exports, 'size', [])).toMatchObject({ result: 1 });
    // Growing into pages that exist for real (from before the reset) hands them out zeroed.
    new Uint8Array((exports.memory as unknown as WebAssembly.Memory).buffer)[65_536 + 5] = 9;
    expect(burn(exports, 'grow', [1])).toMatchObject({ result: 1 });
    expect(new Uint8Array((exports.memory as unknown as WebAssembly.Memory).buffer)[65_536 + 5]).toBe(0);
  });

  it('reports a grow past the host cap through the grow-denied flag', () => {
    exports[METER_EXPORTS.maxPages]!.value = 2;
    exports[METER_EXPORTS.virtualPages]!.value = 1;
    exports[METER_EXPORTS.growDenied]!.value = 0;
    expect(burn(exports, 'grow', [5])).toMatchObject({ result: -1 });
    expect(exports[METER_EXPORTS.growDenied]!.value).toBe(1);
  });

  it('refuses modules it cannot meter, with a typed error: tail calls, function references, multi-value results, non-function table entries, too many parameters, and bytes that are not wasm', () => {
    const tail = binaryen.parseText(`(module (func $a (export "a") (result i32) (return_call $b)) (func $b (result i32) (i32.const 1)))`);
    tail.setFeatures(binaryen.Features.All);
    const bytes = tail.emitBinary();
    tail.dispose();
    const text = (wat: string): Uint8Array => {
      const module = binaryen.parseText(wat);
      module.setFeatures(binaryen.Features.All);
      const out = module.emitBinary();
      module.dispose();
      return out;
    };
    const reference = text(`(module (elem declare func $f) (func $f) (func (export "g") (result funcref) (ref.func $f)))`);
    const pair = text(`(module (func (export "pair") (result i32 i32) (tuple.make 2 (i32.const 1) (i32.const 2))))`);
    const importReference = text(`(module (import "env" "h" (func $h (result i32))) (type $t (func (result i32))) (table 1 funcref) (elem declare func $h)
      (func (export "f") (result i32) (table.set (i32.const 0) (ref.func $h)) (call_indirect (type $t) (i32.const 0))))`);
    const globalReference = text(`(module (type $t (func (result i32))) (global $g funcref (ref.func $a)) (elem declare func $a) (func $a (result i32) (i32.const 7)))`);
    const nullEntry = text(`(module (type $t (func (result i32))) (table 2 funcref) (elem (i32.const 0) funcref (ref.null func) (ref.func $a))
      (func $a (result i32) (i32.const 7)) (func (export "f") (param i32) (result i32) (call_indirect (type $t) (local.get 0))))`);
    const indirectPair = text(`(module (type $t (func (result i32 i32))) (table 1 funcref)
      (func (export "f") (result i32) (call_indirect (type $t) (i32.const 0)) (drop)))`);
    const params = Array.from({ length: 999 }, () => 'i32').join(' ');
    const wide = text(`(module (func (export "f") (param ${params}) (result i32) (local.get 0)))`);
    for (const input of [bytes, reference, pair, importReference, globalReference, nullEntry, indirectPair, wide, new TextEncoder().encode('not wasm at all')]) {
      let caught: unknown;
      try {
        meterModule(binaryen, input);
      } catch (error) {
        caught = error;
      }
      expect(isForgeError(caught, 'INVALID_MODULE')).toBe(true);
    }
  });

  it('refuses every relaxed SIMD operation, whose results differ between machines, and keeps the deterministic SIMD ones', () => {
    const v = '(v128.const i64x2 0 0)';
    const relaxed = [
      `(i8x16.relaxed_swizzle ${v} ${v})`,
      `(i32x4.relaxed_trunc_f32x4_s ${v})`,
      `(i32x4.relaxed_trunc_f32x4_u ${v})`,
      `(i32x4.relaxed_trunc_f64x2_s_zero ${v})`,
      `(i32x4.relaxed_trunc_f64x2_u_zero ${v})`,
      ...['f32x4', 'f64x2'].flatMap((shape) => [`(${shape}.relaxed_madd ${v} ${v} ${v})`, `(${shape}.relaxed_nmadd ${v} ${v} ${v})`, `(${shape}.relaxed_min ${v} ${v})`, `(${shape}.relaxed_max ${v} ${v})`]),
      ...['i8x16', 'i16x8', 'i32x4', 'i64x2'].map((shape) => `(${shape}.relaxed_laneselect ${v} ${v} ${v})`),
      `(i16x8.relaxed_q15mulr_s ${v} ${v})`,
      `(i16x8.relaxed_dot_i8x16_i7x16_s ${v} ${v})`,
      `(i32x4.relaxed_dot_i8x16_i7x16_add_s ${v} ${v} ${v})`,
    ];
    // binaryen knows 20 relaxed operations: every one is tried.
    expect(relaxed).toHaveLength(Object.keys(binaryen).filter((name) => name.startsWith('Relaxed')).length);
    const meter = (instruction: string): unknown => {
      const module = binaryen.parseText(`(module (memory 1) (func (export "f") (drop ${instruction})))`);
      module.setFeatures(binaryen.Features.SIMD128 | binaryen.Features.RelaxedSIMD);
      const bytes = module.emitBinary();
      module.dispose();
      try {
        return meterModule(binaryen, bytes).meteredFunctions;
      } catch (error) {
        return isForgeError(error) ? { code: error.code, feature: error.details.feature } : error;
      }
    };
    for (const instruction of relaxed) expect(meter(instruction), instruction).toEqual({ code: 'INVALID_MODULE', feature: 'relaxed-simd' });
    for (const instruction of [`(i16x8.q15mulr_sat_s ${v} ${v})`, `(f32x4.min ${v} ${v})`, `(i32x4.trunc_sat_f32x4_s ${v})`, `(v128.bitselect ${v} ${v} ${v})`]) expect(meter(instruction), instruction).toBe(1);
  });

  it('names what it refuses in words, never "[object Object]": passive element segments and the table instructions it cannot walk', () => {
    const refusal = (body: string): string => {
      const module = binaryen.parseText(`(module (memory 1) (table $t 2 funcref) (func $f) ${body})`);
      module.setFeatures(binaryen.Features.BulkMemory | binaryen.Features.ReferenceTypes);
      const bytes = module.emitBinary();
      module.dispose();
      try {
        meterModule(binaryen, bytes);
      } catch (error) {
        expect(isForgeError(error, 'INVALID_MODULE')).toBe(true);
        return (error as Error).message;
      }
      return 'metered';
    };
    expect(refusal('(elem $e func $f) (func (export "x") (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 1)))')).toMatch(/passive element segment.*table\.init/);
    expect(refusal('(elem $e (i32.const 0) func $f) (func (export "x") (elem.drop $e))')).toMatch(/uses elem\.drop/);
    expect(refusal('(elem $e (i32.const 0) func $f) (func (export "x") (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 0)))')).toMatch(/uses table\.init/);
    expect(refusal('(func (export "x") (table.copy (i32.const 1) (i32.const 0) (i32.const 1)))')).toMatch(/uses table\.copy/);
    expect(refusal('(func (export "x") (table.fill $t (i32.const 0) (ref.null func) (i32.const 1)))')).toMatch(/uses table\.fill/);
  });

  it('marks the instance dirty on data.drop, which has no operands, as on table.set', () => {
    const module = binaryen.parseText(`(module (memory (export "memory") 1) (data $d "abcd") (table $t 1 funcref)
      (func (export "drop") (data.drop $d)) (func (export "set") (table.set $t (i32.const 0) (ref.null func))) (func (export "none") (nop)))`);
    module.setFeatures(binaryen.Features.BulkMemory | binaryen.Features.ReferenceTypes);
    const bytes = module.emitBinary();
    module.dispose();
    const exports = new WebAssembly.Instance(new WebAssembly.Module(meterModule(binaryen, bytes).bytes as Uint8Array<ArrayBuffer>)).exports as unknown as Exports;
    for (const [name, dirty] of [['none', 0], ['drop', 1], ['set', 1]] as const) {
      exports[METER_EXPORTS.dirty]!.value = 0;
      burn(exports, name, []);
      expect(exports[METER_EXPORTS.dirty]!.value, name).toBe(dirty);
    }
  });

  it('keeps the locals it adds bounded by the nesting of calls, not their number', () => {
    // Each host call whose operands burn fuel evaluates them into locals first; 25,001 such calls with two operands
    // each would pass V8's limit of 50,000 locals if every call had its own.
    const calls = Array.from({ length: 25_001 }, () => '(call $h (call $g) (call $g))').join(' ');
    const module = binaryen.parseText(`(module (import "env" "h" (func $h (param i32 i32))) (memory (export "memory") 1) (func $g (result i32) (i32.const 1)) (func (export "f") ${calls}))`);
    const bytes = module.emitBinary();
    module.dispose();
    expect(() => new WebAssembly.Module(meterModule(binaryen, bytes).bytes as Uint8Array<ArrayBuffer>)).not.toThrow();
  });
});
