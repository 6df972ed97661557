import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const BIN = new URL('../../bin/forge-kernel.js', import.meta.url).pathname;
const run = (args: string[], cwd: string) =>
  promisify(execFile)(process.execPath, args, { cwd, timeout: 120_000 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );

describe('forge-kernel init', () => {
  it('scaffolds an overlay whose own test builds it and passes out of the box', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-init-'));
    const init = await run([BIN, 'init', 'demo-overlay'], dir);
    expect(init.code).toBe(0);
    for (const file of ['demo-overlay.ts', 'demo-overlay.test.mjs', 'README.md']) expect(existsSync(join(dir, 'demo-overlay', file))).toBe(true);
    const test = await run(['--test', 'demo-overlay.test.mjs'], join(dir, 'demo-overlay'));
    expect(test.stdout).toMatch(/pass 4/);
    expect(test.stdout).toMatch(/fail 0/);
    expect(test.code).toBe(0);
  }, 60_000);

  it('refuses a bad name (exit 2) and an existing folder (exit 1), changing nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-init-'));
    expect((await run([BIN, 'init', 'Bad Name'], dir)).code).toBe(2);
    expect((await run([BIN, 'init'], dir)).code).toBe(2);
    expect((await run([BIN, 'init', 'twice-overlay'], dir)).code).toBe(0);
    const again = await run([BIN, 'init', 'twice-overlay'], dir);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('already exists');
  });
});
