import binaryen from 'binaryen';
import { sha256Hex } from '../../src/wasm/loader.ts';

/**
 * Bytes of a module written in the WebAssembly text format, with the features V8 reads (binaryen's `All` would also
 * switch on encodings V8 refuses, e.g. compact imports).
 */
export function wat(text: string, extraFeatures = 0): Uint8Array {
  const F = binaryen.Features;
  const module = binaryen.parseText(text);
  module.setFeatures(F.MutableGlobals | F.NontrappingFPToInt | F.SIMD128 | F.BulkMemory | F.BulkMemoryOpt | F.SignExt | F.ReferenceTypes | F.Multivalue | F.MultiMemory | extraFeatures);
  const bytes = module.emitBinary();
  module.dispose();
  return bytes;
}

/** Where the prelude keeps the string `{}` (its rtSize header sits 4 bytes before). */
export const EMPTY_OBJECT = 16;

/**
 * The overlay ABI by hand: a memory, a bump allocator `__new` that writes the AssemblyScript header's rtSize, and the
 * JSON string `{}` at {@link EMPTY_OBJECT}. `body` adds imports (first), functions and exports; `features` adds
 * binaryen features to the ones V8 reads by default (e.g. relaxed SIMD).
 */
export function hostileModule(body: string, options: { pages?: number; imports?: string; onAllocate?: string; features?: number } = {}): Uint8Array {
  return wat(`(module
  ${options.imports ?? ''}
  (memory (export "memory") ${options.pages ?? 1})
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 12) "\\04\\00\\00\\00{\\00}\\00")
  (func $new (export "__new") (param $size i32) (param $id i32) (result i32) (local $p i32)
    ${options.onAllocate ?? ''}
    (local.set $p (i32.add (global.get $heap) (i32.const 16)))
    (i32.store (i32.sub (local.get $p) (i32.const 4)) (local.get $size))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $size)) (i32.const 15)) (i32.const -16)))
    (local.get $p))
  (func (export "run") (param i32) (result i32) (i32.const ${EMPTY_OBJECT}))
  ${body})`, options.features);
}

/** A manifest for hand-made bytes. */
export function manifestOf(bytes: Uint8Array, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'hostile', version: '1.0.0', sha256: sha256Hex(bytes), ...extra };
}

/** A function `$number` reading the call's input as a decimal number (the input JSON is an unsigned integer). */
export const READ_NUMBER = `(func $number (param $in i32) (result i32) (local $i i32) (local $n i32) (local $end i32)
    (local.set $end (i32.add (local.get $in) (i32.load (i32.sub (local.get $in) (i32.const 4)))))
    (local.set $i (local.get $in))
    (block $done (loop $digits
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (i32.sub (i32.load16_u (local.get $i)) (i32.const 48))))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br $digits)))
    (local.get $n))`;

/**
 * The overlay prelude plus an export `nested` whose body is `depth` nested blocks or `if`s, built with binaryen's API:
 * its text parser recurses, and overflows the stack near 1,000 levels.
 */
export function nested(depth: number, kind: 'block' | 'if'): Uint8Array {
  const F = binaryen.Features;
  const module = binaryen.readBinary(hostileModule(''));
  module.setFeatures(F.MutableGlobals | F.BulkMemory | F.SignExt);
  let body = module.i32.const(EMPTY_OBJECT);
  for (let i = 0; i < depth; i++) body = kind === 'if' ? module.if(module.local.get(0, binaryen.i32), body, module.i32.const(EMPTY_OBJECT)) : module.block(null, [body], binaryen.i32);
  module.addFunction('nested', binaryen.i32, binaryen.i32, [], body);
  module.addFunctionExport('nested', 'nested');
  const bytes = module.emitBinary();
  module.dispose();
  return bytes;
}
