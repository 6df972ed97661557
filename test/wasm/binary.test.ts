import binaryen from 'binaryen';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import {
  capResources,
  DEFAULT_MODULE_LIMITS,
  formatFunctionType,
  type ModuleLimits,
  scanModule,
  stripCustomSections,
  TABLE_ELEMENT_BYTES,
} from '../../src/wasm/binary.ts';
import { budget } from '../support/wait.ts';

const F = binaryen.Features;
/** What V8 in Node 24 runs; `All` would also switch on encodings it refuses (compact imports, GC). */
const FEATURES = F.MVP | F.MutableGlobals | F.SIMD128 | F.Multivalue | F.ReferenceTypes | F.BulkMemory | F.SignExt | F.ExceptionHandling;

function wat(text: string, features: number = FEATURES): Uint8Array {
  const module = binaryen.parseText(text);
  module.setFeatures(features);
  const bytes = module.emitBinary();
  module.dispose();
  return bytes;
}

/** Hand-made modules, for what binaryen will not write. */
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
function leb(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  do {
    let b = rest & 0x7f;
    rest = Math.floor(rest / 128);
    if (rest !== 0) b |= 0x80;
    out.push(b);
  } while (rest !== 0);
  return out;
}
const name = (text: string | number[]): number[] => {
  const bytes = typeof text === 'string' ? [...new TextEncoder().encode(text)] : text;
  return [...leb(bytes.length), ...bytes];
};
const vec = (...entries: number[][]): number[] => [...leb(entries.length), ...entries.flat()];
const section = (id: number, content: number[]): number[] => [id, ...leb(content.length), ...content];
const bytesOf = (...sections: number[][]): Uint8Array => Uint8Array.from([...HEADER, ...sections.flat()]);
const I32 = 0x7f;
const VOID_TYPE = section(1, vec([0x60, 0, 0]));
/** A module with one `() -> nil` function whose body declares `locals` as (count, type) pairs. */
const withLocals = (...locals: [number, number][]): Uint8Array => {
  const body = [...vec(...locals.map(([count, type]) => [...leb(count), type])), 0x0b];
  return bytesOf(VOID_TYPE, section(3, vec([0])), section(10, vec([...leb(body.length), ...body])));
};
/** A module exporting its one function as `exportName` (raw bytes, to allow invalid UTF-8). */
const exporting = (exportName: number[] | string): Uint8Array =>
  bytesOf(VOID_TYPE, section(3, vec([0])), section(7, vec([...name(exportName), 0, 0])), section(10, vec([2, 0, 0x0b])));

const catchError = (run: () => unknown): unknown => {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
};

describe('scanModule', () => {
  it('reads the signatures of imported and exported functions, own or re-exported', () => {
    const bytes = wat(`(module
      (import "env" "mix" (func $mix (param i64 f64) (result f32)))
      (import "env" "limit" (global i32))
      (import "env" "memory" (memory 1 2))
      (func $pair (export "pair") (param i32 v128) (result i32 i64) (i32.const 0) (i64.const 0))
      (func (export "none"))
      (export "mix" (func $mix))
      (global (export "g") (mut i32) (i32.const 0))
      (export "memory" (memory 0)))`);
    const shape = scanModule(bytes);
    // binaryen chooses the order of imports and exports; V8 says which it wrote (checked below).
    const byName = <T extends { name: string }>(entries: T[]) => Object.fromEntries(entries.map((e) => [e.name, e]));
    expect(byName(shape.imports)).toEqual({
      mix: { module: 'env', name: 'mix', kind: 'function', type: { params: ['i64', 'f64'], results: ['f32'] } },
      limit: { module: 'env', name: 'limit', kind: 'global' },
      memory: { module: 'env', name: 'memory', kind: 'memory' },
    });
    expect(byName(shape.exports)).toEqual({
      pair: { name: 'pair', kind: 'function', type: { params: ['i32', 'v128'], results: ['i32', 'i64'] } },
      none: { name: 'none', kind: 'function', type: { params: [], results: [] } },
      mix: { name: 'mix', kind: 'function', type: { params: ['i64', 'f64'], results: ['f32'] } },
      g: { name: 'g', kind: 'global' },
      memory: { name: 'memory', kind: 'memory' },
    });
    expect(shape).toMatchObject({ functions: 2, memories: 1, tables: [], maxLocals: 2, hasStart: false });
    const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
    expect(shape.exports.map(({ name, kind }) => ({ name, kind }))).toEqual(WebAssembly.Module.exports(module));
    expect(shape.imports.map(({ module, name, kind }) => ({ module, name, kind }))).toEqual(WebAssembly.Module.imports(module));
  });

  it('lists imported and own tables in index order, and reports tags and a start function', () => {
    const shape = scanModule(wat(`(module
      (import "env" "table" (table 3 funcref))
      (table 2 10 externref)
      (tag $oops (export "oops") (param i32))
      (func $init)
      (start $init))`));
    expect(shape.tables).toEqual([{ initial: 3, maximum: undefined }, { initial: 2, maximum: 10 }]);
    expect(shape.exports).toEqual([{ name: 'oops', kind: 'tag' }]);
    expect(shape).toMatchObject({ functions: 1, memories: 0, hasStart: true });
  });

  it('counts parameters and declared locals of the function with the most', () => {
    const shape = scanModule(wat(`(module
      (func (param i32 i64) (local f32 f64 i32))
      (func (param i32) (local i32)))`));
    expect(shape.maxLocals).toBe(5);
  });

  it('refuses a function declaring 2^32-1 locals in one declaration, however many such declarations follow', () => {
    for (const module of [withLocals([2 ** 32 - 1, I32]), withLocals(...Array.from({ length: 5_000 }, (): [number, number] => [2 ** 32 - 1, I32]))]) {
      const error = catchError(() => scanModule(module));
      expect(error).toMatchObject({ code: 'MODULE_LIMIT', details: { limit: 'maxLocals', max: DEFAULT_MODULE_LIMITS.maxLocals } });
      expect((error as { details: { value: number } }).details.value).toBeGreaterThan(DEFAULT_MODULE_LIMITS.maxLocals);
      expect(Number.isSafeInteger((error as { details: { value: number } }).details.value)).toBe(true);
    }
    expect(scanModule(withLocals([2_000, I32], [3_000, 0x7e])).maxLocals).toBe(5_000);
  });

  const tight: ModuleLimits = { maxBytes: 10_000, maxFunctions: 2, maxLocals: 3, maxImports: 1, maxExports: 1 };
  it.each([
    ['maxBytes', () => new Uint8Array(10_001), 10_001],
    ['maxFunctions', () => wat('(module (func) (func) (func))'), 3],
    ['maxLocals', () => wat('(module (func (param i32 i32) (local i32 i32)))'), 4],
    ['maxImports', () => wat('(module (import "env" "a" (func)) (import "env" "b" (func)))'), 2],
    ['maxExports', () => wat('(module (func (export "a")) (func (export "b")))'), 2],
  ] as const)('refuses a module past %s with MODULE_LIMIT saying what to do', (limit, build, value) => {
    const error = catchError(() => scanModule(build(), tight));
    expect(error).toMatchObject({ code: 'MODULE_LIMIT', details: { limit, value, max: tight[limit] } });
    expect((error as Error).message).toMatch(/\. [A-Z][^.]+\.$/);
  });

  it('checks the byte size before reading anything', () => {
    expect(() => scanModule(new Uint8Array(100), { ...tight, maxBytes: 99 })).toThrow(expect.objectContaining({ code: 'MODULE_LIMIT' }) as Error);
  });

  it('refuses a module with two memories, naming how many are imported and own', () => {
    const own = wat('(module (memory 1) (memory 1))', FEATURES | F.MultiMemory);
    expect(WebAssembly.validate(own as Uint8Array<ArrayBuffer>)).toBe(true);
    expect(() => scanModule(own)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE', message: expect.stringContaining('2 memories (0 imported, 2 own)') as string }) as Error);
    const mixed = wat('(module (import "env" "memory" (memory 1)) (memory 1))', FEATURES | F.MultiMemory);
    expect(() => scanModule(mixed)).toThrow(expect.objectContaining({ details: { imported: 1, own: 1 } }) as Error);
  });

  it.each([
    ['shared', [0x03, 1, 1]],
    ['64-bit', [0x04, 1]],
  ])('refuses a %s memory', (_what, limits) => {
    expect(() => scanModule(bytesOf(section(5, vec(limits))))).toThrow(expect.objectContaining({ code: 'INVALID_MODULE', message: expect.stringContaining('shared or 64-bit memory') as string }) as Error);
  });

  it('refuses an export name reserved for the fuel meter', () => {
    const bytes = wat('(module (global (export "__forge_fuel") (mut i64) (i64.const 0)))');
    expect(() => scanModule(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE', message: expect.stringContaining("reserved for the kernel's fuel meter") as string }) as Error);
    expect(scanModule(exporting('__forge')).exports).toHaveLength(1);
  });

  it('refuses export and import names that are not valid UTF-8, as V8 does', () => {
    const overlong = [0xc0, 0xaf];
    const surrogate = [0xed, 0xa0, 0x80];
    const badImport = bytesOf(VOID_TYPE, section(2, vec([...name([0xff]), ...name('f'), 0, 0])));
    for (const bytes of [exporting(overlong), exporting(surrogate), badImport]) {
      expect(WebAssembly.validate(bytes as Uint8Array<ArrayBuffer>)).toBe(false);
      expect(() => scanModule(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE', message: expect.stringContaining('not valid UTF-8') as string }) as Error);
    }
  });

  it('keeps a leading byte-order mark in an export name, as V8 does', () => {
    const bytes = exporting([0xef, 0xbb, 0xbf, 0x72, 0x75, 0x6e]);
    const v8 = WebAssembly.Module.exports(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>));
    expect(scanModule(bytes).exports.map((e) => e.name)).toEqual(v8.map((e) => e.name));
  });

  it('refuses an export name used twice', () => {
    const bytes = bytesOf(VOID_TYPE, section(3, vec([0])), section(7, vec([...name('a'), 0, 0], [...name('a'), 0, 0])), section(10, vec([2, 0, 0x0b])));
    expect(() => scanModule(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE' }) as Error);
  });

  it.each([
    ['a struct', [0x5f, 0]],
    ['a recursion group', [0x4e, 1, 0x60, 0, 0]],
    ['a final subtype', [0x4f, 0, 0x60, 0, 0]],
  ])('refuses GC type definitions: %s', (_what, type) => {
    expect(() => scanModule(bytesOf(section(1, vec(type))))).toThrow(expect.objectContaining({ code: 'INVALID_MODULE', message: expect.stringContaining('GC types are not supported') as string }) as Error);
  });

  it('refuses a function, import or tag whose type index is out of range', () => {
    const modules = [
      bytesOf(VOID_TYPE, section(3, vec([1])), section(10, vec([2, 0, 0x0b]))),
      bytesOf(VOID_TYPE, section(2, vec([...name('env'), ...name('f'), 0, 1]))),
      bytesOf(section(2, vec([...name('env'), ...name('e'), 4, 0, 0]))),
    ];
    for (const bytes of modules) expect(() => scanModule(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE', message: expect.stringContaining('out of range') as string }) as Error);
  });

  it('reads typed references, and refuses a type index past the types', () => {
    // (ref null func) is funcref; a non-minimal heap type encoding decodes to the same.
    const refs = bytesOf(section(1, vec([0x60, ...vec([0x63, 0x70], [0x64, 0x70], [0x63, 0xf0, 0x7f], [0x64, 0x00], [0x6e]), 0])), section(2, vec([...name('env'), ...name('f'), 0, 0])));
    expect(scanModule(refs).imports[0]?.type).toEqual({ params: ['funcref', 'ref(func)', 'funcref', 'ref(0)', 'ref(null any)'], results: [] });
    expect(() => scanModule(bytesOf(section(1, vec([0x60, ...vec([0x64, 0x01]), 0]))))).toThrow(expect.objectContaining({ code: 'INVALID_MODULE' }) as Error);
  });

  it('refuses unknown, repeated and out-of-order sections', () => {
    for (const bytes of [bytesOf(section(14, [])), bytesOf(VOID_TYPE, VOID_TYPE), bytesOf(section(3, vec()), VOID_TYPE)]) {
      expect(WebAssembly.validate(bytes as Uint8Array<ArrayBuffer>)).toBe(false);
      expect(() => scanModule(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE' }) as Error);
    }
  });

  it('reads LEB128 numbers as V8 does: padding accepted, bits past 32 refused', () => {
    const padded = bytesOf([1, 0x84, 0x80, 0x80, 0x80, 0x00, 1, 0x60, 0, 0]);
    expect(WebAssembly.validate(padded as Uint8Array<ArrayBuffer>)).toBe(true);
    expect(() => scanModule(padded)).not.toThrow();
    const extraBits = bytesOf([1, 0x84, 0x80, 0x80, 0x80, 0x10, 1, 0x60, 0, 0]);
    expect(WebAssembly.validate(extraBits as Uint8Array<ArrayBuffer>)).toBe(false);
    expect(() => scanModule(extraBits)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE' }) as Error);
  });

  it('refuses a module whose function and code counts differ, or whose data count is wrong', () => {
    for (const bytes of [bytesOf(VOID_TYPE, section(3, vec([0]))), bytesOf(section(12, [1]))]) {
      expect(WebAssembly.validate(bytes as Uint8Array<ArrayBuffer>)).toBe(false);
      expect(() => scanModule(bytes)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE' }) as Error);
    }
  });

  const sample = wat(`(module
    (import "env" "log" (func $log (param i32 i32)))
    (import "env" "seed" (global $seed i64))
    (memory (export "memory") 1 4)
    (table 2 funcref)
    (elem (i32.const 0) $run $log)
    (global $count (mut i32) (i32.const 7))
    (data (i32.const 16) "hello")
    (func $run (export "run") (param i32) (result i32) (local i64 f64)
      (call $log (local.get 0) (i32.const 5))
      (global.set $count (i32.add (global.get $count) (i32.const 1)))
      (global.get $count))
    (func (export "pair") (result i32 i64) (i32.const 1) (global.get $seed))
    (export "count" (global $count)))`);

  it('refuses every truncation of a valid module that V8 refuses, with INVALID_MODULE', () => {
    for (let length = 0; length < sample.length; length++) {
      const prefix = sample.slice(0, length);
      if (WebAssembly.validate(prefix)) continue;
      expect(() => scanModule(prefix), `prefix of ${length} bytes`).toThrow(expect.objectContaining({ code: 'INVALID_MODULE' }) as Error);
    }
  });

  it('accepts every single-byte edit of a module that V8 accepts, unless it declares what the sandbox refuses, and agrees with V8 on its imports and exports', () => {
    const refusals = /shared or 64-bit|memories|GC types|reserved|does not support|does not run/;
    for (let at = 0; at < sample.length; at++) {
      for (let value = 0; value < 256; value++) {
        const bytes = sample.slice();
        bytes[at] = value;
        if (!WebAssembly.validate(bytes)) continue;
        let shape;
        try {
          shape = scanModule(bytes);
        } catch (error) {
          expect((error as Error).message, `byte ${at} set to ${value}`).toMatch(refusals);
          continue;
        }
        const module = new WebAssembly.Module(bytes);
        expect(shape.exports.map(({ name, kind }) => ({ name, kind }))).toEqual(WebAssembly.Module.exports(module));
        expect(shape.imports.map(({ module, name, kind }) => ({ module, name, kind }))).toEqual(WebAssembly.Module.imports(module));
      }
    }
  }, budget(60_000));

  it('throws only ForgeErrors on mutated bytes, and agrees with V8 on the imports and exports it accepts', () => {
    let agreed = 0;
    fc.assert(
      fc.property(fc.array(fc.noBias(fc.tuple(fc.nat({ max: sample.length - 1 }), fc.nat({ max: 255 }))), { minLength: 1, maxLength: 2 }), fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary: fc.nat({ max: sample.length - 1 }), weight: 1 }), (edits, cut) => {
        const bytes = sample.slice();
        for (const [at, value] of edits) bytes[at] = value;
        const mutated = cut === undefined ? bytes : bytes.subarray(0, cut);
        let shape;
        try {
          shape = scanModule(mutated);
        } catch (error) {
          expect(isForgeError(error), String(error)).toBe(true);
          return;
        }
        if (!WebAssembly.validate(mutated)) return;
        const module = new WebAssembly.Module(mutated);
        expect(shape.exports.map(({ name, kind }) => ({ name, kind }))).toEqual(WebAssembly.Module.exports(module));
        expect(shape.imports.map(({ module, name, kind }) => ({ module, name, kind }))).toEqual(WebAssembly.Module.imports(module));
        agreed++;
      }),
      { numRuns: 300 },
    );
    // One random byte edit in six leaves the module valid (most in names and constants), so the comparison with V8
    // runs about 20 times; none would mean the property no longer tests it.
    expect(agreed).toBeGreaterThan(5);
  });
});

describe('stripCustomSections', () => {
  it('removes custom sections and leaves every other byte as it was', () => {
    const custom = (label: string) => section(0, [...name(label), 1, 2, 3]);
    const rest = [VOID_TYPE, section(3, vec([0])), section(7, vec([...name('f'), 0, 0])), section(10, vec([2, 0, 0x0b]))];
    const stripped = stripCustomSections(bytesOf(custom('name'), rest[0] ?? [], custom('producers'), ...rest.slice(1), custom('.debug_info')));
    expect(stripped).toEqual(bytesOf(...rest));
  });

  it('removes the name section binaryen writes, so the module keeps no function names', () => {
    const module = binaryen.parseText('(module (func $__forge_trap_fuel (export "f")))');
    module.addCustomSection('producers', Uint8Array.of(0));
    binaryen.setDebugInfo(true);
    let bytes: Uint8Array;
    try {
      bytes = module.emitBinary();
    } finally {
      binaryen.setDebugInfo(false);
      module.dispose();
    }
    const before = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
    expect(WebAssembly.Module.customSections(before, 'name')).toHaveLength(1);
    const after = new WebAssembly.Module(stripCustomSections(bytes) as Uint8Array<ArrayBuffer>);
    expect(WebAssembly.Module.customSections(after, 'name')).toHaveLength(0);
    expect(WebAssembly.Module.customSections(after, 'producers')).toHaveLength(0);
    expect(WebAssembly.Module.exports(after)).toEqual(WebAssembly.Module.exports(before));
  });

  it('returns the same array when there is no custom section', () => {
    const bytes = wat('(module (func (export "f")))');
    expect(stripCustomSections(bytes)).toBe(bytes);
  });

  it('refuses malformed framing instead of passing it on', () => {
    expect(() => stripCustomSections(bytesOf([0, 5, 9, 0x61]))).toThrow(expect.objectContaining({ code: 'INVALID_MODULE' }) as Error);
  });
});

describe('formatFunctionType', () => {
  it.each([
    [{ params: ['i32', 'i32'], results: ['i32'] }, '(i32, i32) -> i32'],
    [{ params: [], results: [] }, '() -> nil'],
    [{ params: ['i64'], results: ['i32', 'f64'] }, '(i64) -> (i32, f64)'],
  ] as const)('writes %j as %s', (type, text) => {
    expect(formatFunctionType({ params: [...type.params], results: [...type.results] })).toBe(text);
  });
});

describe('capResources', () => {
  const instantiate = (bytes: Uint8Array) => new WebAssembly.Instance(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>)).exports;
  const cap = (bytes: Uint8Array, memoryPages: number) => capResources(bytes, { memoryPages, tableElementBytes: TABLE_ELEMENT_BYTES });
  /** Table elements one page of budget pays for. */
  const perPage = 65_536 / TABLE_ELEMENT_BYTES;

  it('caps a table without a maximum at the elements the memory budget pays for', () => {
    const exports = instantiate(cap(wat('(module (table (export "t") 1 funcref))'), 1));
    const table = exports.t as WebAssembly.Table;
    expect(() => table.grow(perPage - 1)).not.toThrow();
    expect(() => table.grow(1)).toThrow(RangeError);
  });

  it('keeps a table maximum below the cap, and caps one above it', () => {
    const small = instantiate(cap(wat('(module (table (export "t") 1 5 funcref))'), 1)).t as WebAssembly.Table;
    expect(() => small.grow(5)).toThrow(RangeError);
    const large = instantiate(cap(wat('(module (table (export "t") 1 1000000 externref))'), 2)).t as WebAssembly.Table;
    expect(() => large.grow(2 * perPage)).toThrow(RangeError);
    expect(() => large.grow(2 * perPage - 1)).not.toThrow();
  });

  it('caps the memory maximum as before and leaves the code intact', () => {
    const exports = instantiate(cap(wat('(module (memory (export "memory") 2) (func (export "f") (result i32) (i32.const 42)))'), 5));
    expect((exports.f as () => number)()).toBe(42);
    const memory = exports.memory as WebAssembly.Memory;
    expect(() => memory.grow(3)).not.toThrow();
    expect(() => memory.grow(1)).toThrow(RangeError);
  });

  it('refuses a module whose initial memory and table elements together pass the budget', () => {
    expect(() => cap(wat('(module (memory 1) (table 1 funcref))'), 1)).toThrow(expect.objectContaining({ code: 'MEMORY_LIMIT', details: { export: '(instantiation)', maxPages: 1 } }) as Error);
    expect(() => cap(wat(`(module (table ${perPage + 1} funcref))`), 1)).toThrow(expect.objectContaining({ code: 'MEMORY_LIMIT' }) as Error);
    expect(() => cap(wat('(module (memory 2))'), 1)).toThrow(expect.objectContaining({ code: 'MEMORY_LIMIT' }) as Error);
    expect(() => cap(wat(`(module (memory 1) (table ${perPage} funcref) (table ${perPage} externref))`), 3)).not.toThrow();
  });

  it('refuses an imported table', () => {
    expect(() => cap(wat('(module (import "env" "t" (table 1 funcref)))'), 1)).toThrow(expect.objectContaining({ code: 'INVALID_MODULE', message: expect.stringContaining('imports a table') as string }) as Error);
  });

  it('returns the same array when there is no memory or table, or when they are already capped', () => {
    const bare = wat('(module (func (export "f")))');
    expect(cap(bare, 1)).toBe(bare);
    const capped = wat(`(module (memory 1 1) (table 1 ${perPage} funcref))`);
    expect(cap(capped, 2)).toBe(capped);
    const open = wat('(module (memory 1) (table 1 funcref))');
    const once = cap(open, 2);
    expect(once).not.toBe(open);
    expect(cap(once, 2)).toBe(once);
  });
});
