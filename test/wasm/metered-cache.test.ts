import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MeteredModuleCache } from '../../src/wasm/metered-cache.ts';
import { sha256Hex } from '../../src/wasm/loader.ts';
import { buildFixture } from '../support/overlays.ts';

describe('MeteredModuleCache', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('instruments a module once per content: later gets hit memory, and a new process hits the disk', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-metered-'));
    dirs.push(dir);
    const { bytes } = await buildFixture('fixtures/basics.ts');
    const hash = sha256Hex(bytes);

    const first = new MeteredModuleCache({ dir });
    const [a, b] = await Promise.all([first.get(bytes, hash), first.get(bytes, hash)]);
    expect(first.instrumented).toBe(1);
    expect(b).toBe(a);
    expect(readdirSync(dir).filter((f) => f.endsWith('.wasm'))).toHaveLength(1);

    const second = new MeteredModuleCache({ dir });
    expect(await second.get(bytes, hash)).toEqual(a);
    expect(second.instrumented).toBe(0);
  });

  it('keys by the meter settings too: another stack limit is instrumented anew', async () => {
    const { bytes } = await buildFixture('fixtures/basics.ts');
    const cache = new MeteredModuleCache({ dir: false });
    await cache.get(bytes, sha256Hex(bytes), 256 * 1024);
    await cache.get(bytes, sha256Hex(bytes), 64 * 1024);
    expect(cache.instrumented).toBe(2);
  });
});
