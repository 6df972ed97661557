import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import binaryen from 'binaryen';
import { describe, expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import { loadBinaryen } from '../../src/wasm/binaryen.ts';
import { meterModule } from '../../src/wasm/fuel-meter.ts';
import { meterOffThread } from '../../src/wasm/meter-thread.ts';
import { buildFixture } from '../support/overlays.ts';
import { budget } from '../support/wait.ts';

/** Bytes of a module in the text format (binaryen's text parser recurses: keep nesting shallow here). */
function wat(text: string): Uint8Array {
  const module = binaryen.parseText(text);
  const bytes = module.emitBinary();
  module.dispose();
  return bytes;
}

/** A module of `count` small exported functions, each with its own constant. */
function manyFunctions(count: number): Uint8Array {
  const functions: string[] = [];
  for (let i = 0; i < count; i++) functions.push(`(func (export "f${i}") (param i32) (result i32) (i32.add (local.get 0) (i32.const ${i})))`);
  return wat(`(module (memory 1) ${functions.join('\n')})`);
}

function leb128(value: number): number[] {
  const out: number[] = [];
  do {
    const low = value & 0x7f;
    value >>>= 7;
    out.push(value === 0 ? low : low | 0x80);
  } while (value !== 0);
  return out;
}

/** One exported function `run` whose body is `depth` empty blocks nested in each other, written as binary by hand. */
function nestedBlocks(depth: number): Uint8Array {
  const section = (id: number, body: number[]): number[] => [id, ...leb128(body.length), ...body];
  const body = [0, ...Array<number[]>(depth).fill([0x02, 0x40]).flat(), ...Array<number>(depth).fill(0x0b), 0x0b];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [1, 0x60, 0, 0]), // type: () -> ()
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(5, [1, 0, 1]), // memory of 1 page
    ...section(7, [1, 3, ...Buffer.from('run'), 0, 0]), // export "run" = function 0
    ...section(10, [1, ...leb128(body.length), ...body]),
  ]);
}

const metersInThread = async (bytes: Uint8Array): Promise<Uint8Array> => meterModule(await loadBinaryen(), bytes, {}).bytes;

describe('meterOffThread', () => {
  it('gives exactly the bytes the meter gives on the calling thread', async () => {
    const { bytes } = await buildFixture('fixtures/basics.ts');
    expect(await meterOffThread(bytes, {})).toEqual(await metersInThread(bytes));
  }, budget(120_000));

  it("keeps the calling thread's event loop turning while a large module is metered", async () => {
    const bytes = manyFunctions(20_000);
    await meterOffThread(wat('(module (memory 1))'), {}); // the worker and binaryen are up: what follows is metering
    let last = performance.now();
    let maxGap = 0;
    const ticker = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 10);
    const started = performance.now();
    try {
      await meterOffThread(bytes, {});
    } finally {
      clearInterval(ticker);
    }
    const metering = performance.now() - started;
    // The stretch since the last tick counts too: a meter that blocked this thread would leave no tick behind it.
    maxGap = Math.max(maxGap, performance.now() - last);
    expect(metering).toBeGreaterThan(300);
    expect(maxGap).toBeLessThan(Math.min(200, metering / 2));
  }, budget(120_000));

  it('refuses a module nested too deeply for the meter with a ForgeError, and meters the next module', async () => {
    // Far past what the meter's 16 MB stack follows (about 20,000 empty blocks pass, 30,000 overflow).
    const error = await meterOffThread(nestedBlocks(100_000), {}).catch((caught: unknown) => caught);
    expect(isForgeError(error)).toBe(true);
    expect(['MODULE_LIMIT', 'INVALID_MODULE']).toContain((error as { code: string }).code);

    const next = wat('(module (memory 1) (func (export "run") (result i32) (i32.const 7)))');
    expect(await meterOffThread(next, {})).toEqual(await metersInThread(next));
  }, budget(120_000));

  it('refuses bytes that are not a module with INVALID_MODULE', async () => {
    for (const garbage of [new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03]), new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])]) {
      const error = await meterOffThread(garbage, {}).catch((caught: unknown) => caught);
      expect(isForgeError(error, 'INVALID_MODULE')).toBe(true);
    }
  }, budget(120_000));

  it('settles concurrent requests each with its own result, a failing one included', async () => {
    const modules = [1, 2, 3, 4, 5].map((n) => wat(`(module (memory 1) (func (export "run") (result i32) (i32.const ${n})))`));
    const requests = [...modules, new Uint8Array([9, 9, 9])].map((bytes) => meterOffThread(bytes, {}));
    const settled = await Promise.allSettled(requests);
    for (const [i, bytes] of modules.entries()) expect(settled[i]).toEqual({ status: 'fulfilled', value: await metersInThread(bytes) });
    const failed = settled[modules.length];
    expect(failed?.status === 'rejected' && isForgeError(failed.reason, 'INVALID_MODULE')).toBe(true);
  }, budget(120_000));

  it('never keeps a process alive once its modules are metered', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-meter-thread-'));
    try {
      const script = join(dir, 'meter-once.mjs');
      const bytes = wat('(module (memory 1) (func (export "run") (result i32) (i32.const 7)))');
      writeFileSync(
        script,
        `import { meterOffThread } from ${JSON.stringify(new URL('../../src/wasm/meter-thread.ts', import.meta.url).href)};
        const metered = await meterOffThread(new Uint8Array(${JSON.stringify([...bytes])}), {});
        console.log(metered.length > 0 ? 'metered' : 'empty');`,
      );
      const { stdout } = await promisify(execFile)(process.execPath, [script], { timeout: 60_000 });
      expect(stdout.trim()).toBe('metered');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, budget(120_000));
});
