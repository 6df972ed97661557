import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { budget } from '../support/wait.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'forge-kernel.js');
/** Installing and compiling take seconds, more on a busy machine: a generous ceiling, not a measurement. */
const BUDGET_MS = budget(240_000);
/** npm runs the scaffold's test with the first `node` on PATH: the Node this suite runs on (≥ 22). */
const env = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}` };
const run = (file: string, args: string[], cwd: string) =>
  promisify(execFile)(file, args, { cwd, env, timeout: BUDGET_MS }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );

describe('forge-kernel init', () => {
  it('scaffolds an overlay whose own npm test builds it and passes as generated, from a checkout', async () => {
    expect(existsSync(join(ROOT, 'dist', 'src', 'index.js')), 'dist/ is built by npm install (prepare): run npm install').toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'forge-init-'));
    const init = await run(process.execPath, [BIN, 'init', 'demo-overlay'], dir);
    expect(init.code).toBe(0);
    expect(init.stdout).toContain('npm install && npm test');
    const scaffold = join(dir, 'demo-overlay');
    for (const file of ['demo-overlay.ts', 'demo-overlay.test.mjs', 'package.json', 'README.md']) expect(existsSync(join(scaffold, file))).toBe(true);
    const pkg = JSON.parse(readFileSync(join(scaffold, 'package.json'), 'utf8')) as { scripts: Record<string, string>; devDependencies: Record<string, string>; engines: { node: string } };
    expect(pkg.engines.node).toBe('>=22');
    expect(pkg.devDependencies['forge-kernel']).toMatch(/^file:/);
    for (const file of ['demo-overlay.ts', 'demo-overlay.test.mjs', 'package.json']) expect(readFileSync(join(scaffold, file), 'utf8')).not.toMatch(/dist\//);

    expect((await run('npm', ['install', '--offline', '--no-audit', '--no-fund'], scaffold)).code).toBe(0);
    const test = await run('npm', ['test'], scaffold);
    expect(test.stdout).toMatch(/pass 3/);
    expect(test.stdout).toMatch(/fail 0/);
    expect(test.code).toBe(0);
  }, BUDGET_MS);

  it('refuses a bad name (exit 2) and an existing folder (exit 1), changing nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-init-'));
    expect((await run(process.execPath, [BIN, 'init', 'Bad Name'], dir)).code).toBe(2);
    expect((await run(process.execPath, [BIN, 'init'], dir)).code).toBe(2);
    expect((await run(process.execPath, [BIN, 'init', 'twice-overlay'], dir)).code).toBe(0);
    const again = await run(process.execPath, [BIN, 'init', 'twice-overlay'], dir);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('already exists');
  });
});
