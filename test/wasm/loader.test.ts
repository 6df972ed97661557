import binaryen from 'binaryen';
import { describe, expect, it } from 'vitest';
import { capResources, TABLE_ELEMENT_BYTES } from '../../src/wasm/binary.ts';
import { compileOverlay, sha256Hex } from '../../src/wasm/loader.ts';
import { parseManifest } from '../../src/manifest.ts';
import { testCache } from '../support/engine.ts';
import { buildFixture } from '../support/overlays.ts';

function wat(text: string): Uint8Array {
  const module = binaryen.parseText(text);
  const bytes = module.emitBinary();
  module.dispose();
  return bytes;
}

const manifestFor = (bytes: Uint8Array, extra: Record<string, unknown> = {}) =>
  parseManifest({ name: 'probe', version: '1.0.0', sha256: sha256Hex(bytes), ...extra });

/** A module shaped like an overlay (run, memory, __new) with the given extra imports. */
const overlayWat = (imports: string, memory = '(memory (export "memory") 1)') => `(module ${imports} ${memory}
  (func (export "__new") (param i32 i32) (result i32) (i32.const 16))
  (func (export "run") (param i32) (result i32) (local.get 0)))`;

describe('compileOverlay', () => {
  it('fails closed when the bytes differ from the manifest hash, even by one byte', async () => {
    const { bytes, manifest } = await buildFixture('fixtures/basics.ts');
    const tampered = bytes.slice();
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 1;
    await expect(compileOverlay(tampered, { manifest: parseManifest(manifest), grant: [], cache: testCache })).rejects.toMatchObject({
      code: 'HASH_MISMATCH',
      details: { expected: manifest.sha256, actual: sha256Hex(tampered) },
    });
  });

  it('refuses bytes that are not WebAssembly, or not valid WebAssembly', async () => {
    for (const bytes of [new TextEncoder().encode('<html>not wasm</html>'), Uint8Array.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 99, 1, 0])]) {
      await expect(compileOverlay(bytes, { manifest: manifestFor(bytes), grant: [], cache: testCache })).rejects.toMatchObject({ code: 'INVALID_MODULE' });
    }
    await expect(compileOverlay('wasm' as unknown as Uint8Array, { manifest: manifestFor(new Uint8Array()), grant: [], cache: testCache })).rejects.toMatchObject({
      code: 'INVALID_MODULE',
    });
  });

  it.each([
    ['a host function of another runtime (WASI)', '(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'],
    ['an env import outside the runtime ones', '(import "env" "secret" (func (result i32)))'],
    ['an unknown forge host function', '(import "forge" "spawn_process" (func))'],
    ['a forge host function without its capability', '(import "forge" "event_publish" (func (param i32 i32) (result i32)))'],
    ['an imported memory', '(import "env" "memory" (memory 1))'],
  ])('refuses an import outside the grant: %s', async (_what, imports) => {
    const bytes = wat(overlayWat(imports, imports.includes('memory') ? '' : undefined));
    await expect(compileOverlay(bytes, { manifest: manifestFor(bytes), grant: ['LOGGING'], cache: testCache })).rejects.toMatchObject({ code: 'CAPABILITY_DENIED' });
  });

  it('accepts a granted host function and the AssemblyScript runtime imports', async () => {
    const bytes = wat(overlayWat('(import "forge" "log" (func (param i32 i32))) (import "env" "abort" (func (param i32 i32 i32 i32)))'));
    const compiled = await compileOverlay(bytes, { manifest: manifestFor(bytes, { capabilities: ['LOGGING'] }), grant: ['LOGGING', 'EVENT_PUBLISH'], cache: testCache });
    expect(compiled.granted).toEqual(['LOGGING']);
    expect(compiled.exports).toEqual(['run']);
  });

  it('refuses with MODULE_LIMIT, before metering, a function with more locals than the kernel meters', async () => {
    // 49,999 locals are within V8's limit of 50,000; the meter's two parameters would take the function past it.
    const locals = Array.from({ length: 49_999 }, () => 'i32').join(' ');
    const bytes = wat(`(module (memory (export "memory") 1)
      (func (export "__new") (param i32 i32) (result i32) (i32.const 16))
      (func (export "run") (param i32) (result i32) (local ${locals}) (local.get 0)))`);
    await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
    await expect(compileOverlay(bytes, { manifest: manifestFor(bytes), grant: [], cache: testCache })).rejects.toMatchObject({ code: 'MODULE_LIMIT', details: { limit: 'maxLocals' } });
  });

  it('refuses a module without run, or without its memory and allocator', async () => {
    const noRun = wat('(module (memory (export "memory") 1) (func (export "__new") (param i32 i32) (result i32) (i32.const 0)))');
    await expect(compileOverlay(noRun, { manifest: manifestFor(noRun), grant: [], cache: testCache })).rejects.toMatchObject({ code: 'INVALID_MODULE' });
    const noRuntime = wat('(module (func (export "run") (param i32) (result i32) (local.get 0)))');
    await expect(compileOverlay(noRuntime, { manifest: manifestFor(noRuntime), grant: [], cache: testCache })).rejects.toMatchObject({ code: 'INVALID_MODULE' });
  });

  it('caps the memory maximum at the manifest limit, whatever the module declares', async () => {
    const bytes = wat(overlayWat('', '(memory (export "memory") 1 1000)'));
    const compiled = await compileOverlay(bytes, { manifest: manifestFor(bytes, { memoryPages: 4 }), grant: [], cache: testCache });
    const instance = new WebAssembly.Instance(compiled.module);
    const memory = instance.exports.memory as WebAssembly.Memory;
    expect(() => memory.grow(3)).not.toThrow();
    expect(() => memory.grow(1)).toThrow(RangeError);
  });

  it('refuses a module whose memory starts above the cap with MEMORY_LIMIT', async () => {
    const bytes = wat(overlayWat('', '(memory (export "memory") 64)'));
    await expect(compileOverlay(bytes, { manifest: manifestFor(bytes, { memoryPages: 16 }), grant: [], cache: testCache })).rejects.toMatchObject({ code: 'MEMORY_LIMIT' });
  });
});

describe('capResources', () => {
  it('rewrites only the memory limits and leaves the rest of the module intact', () => {
    const bytes = wat('(module (memory (export "memory") 2) (func (export "f") (result i32) (i32.const 42)))');
    const capped = capResources(bytes, { memoryPages: 5, tableElementBytes: TABLE_ELEMENT_BYTES });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(capped as Uint8Array<ArrayBuffer>));
    expect((instance.exports.f as () => number)()).toBe(42);
    const memory = instance.exports.memory as WebAssembly.Memory;
    expect(memory.buffer.byteLength).toBe(2 * 65_536);
    expect(() => memory.grow(4)).toThrow(RangeError);
  });

  it('returns a module without memory unchanged', () => {
    const bytes = wat('(module (func (export "f")))');
    expect(capResources(bytes, { memoryPages: 5, tableElementBytes: TABLE_ELEMENT_BYTES })).toBe(bytes);
  });
});
