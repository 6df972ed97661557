import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BINARYEN_VERSION, importBinaryen } from '../../src/wasm/binaryen.ts';

/** A folder whose node_modules holds a binaryen of `version` (or none), and a file in it to resolve from. */
function projectWith(version: string | undefined): string {
  const dir = mkdtempSync(join(tmpdir(), 'forge-binaryen-'));
  if (version !== undefined) {
    const pkg = join(dir, 'node_modules', 'binaryen');
    mkdirSync(pkg, { recursive: true });
    writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'binaryen', version, type: 'module', main: 'index.js' }));
    writeFileSync(join(pkg, 'index.js'), 'throw new Error("this binaryen must never be imported");\n');
  }
  return join(dir, 'from.js');
}

describe('the binaryen the meter loads', () => {
  it('is the pinned version in this install', async () => {
    expect(BINARYEN_VERSION).toMatch(/^\d+\.\d+\.\d+$/);
    expect(typeof (await importBinaryen()).readBinary).toBe('function');
  });

  it('refuses another version (e.g. the older one assemblyscript pulls in) with METER_UNAVAILABLE, before importing it', async () => {
    await expect(importBinaryen(projectWith('131.0.0-nightly.20260721'))).rejects.toMatchObject({
      code: 'METER_UNAVAILABLE',
      message: expect.stringContaining(`needs binaryen ${BINARYEN_VERSION}`) as string,
      details: { expected: BINARYEN_VERSION, found: '131.0.0-nightly.20260721' },
    });
  });

  it('names the fix when binaryen is missing', async () => {
    await expect(importBinaryen(projectWith(undefined))).rejects.toMatchObject({ code: 'METER_UNAVAILABLE', message: expect.stringContaining('reinstall forge-kernel') as string });
  });
});
