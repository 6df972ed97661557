import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { buildOverlays, readSourceManifest } from '../../src/build/build.ts';

const SDK = resolve(import.meta.dirname, '..', '..', 'overlays-as', 'sdk', 'index');
const BIN = resolve(import.meta.dirname, '..', '..', 'bin', 'forge-kernel.js');

/** An overlay source in `dir` (AssemblyScript imports are relative; an absolute path would name a library). */
function source(dir: string, manifest: Record<string, unknown>, body = 'export function run(text: string): string { return ok(input(text)); }'): string {
  return `/* forge:manifest\n${JSON.stringify(manifest, null, 2)}\n*/\nimport { input, ok } from "${relative(dir, SDK)}";\n${body}\n`;
}

function workspace(): string {
  return mkdtempSync(join(tmpdir(), 'forge-build-'));
}

describe('forge-kernel build', () => {
  it('writes <name>.wasm and <name>.manifest.json with the sha256 of the .wasm, then skips an unchanged rebuild', async () => {
    const dir = workspace();
    const file = join(dir, 'echo.ts');
    writeFileSync(file, source(dir, { name: 'echo-overlay', version: '1.2.3', phases: ['analysis'], capabilities: ['LOGGING'] }));
    const [first] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(first).toMatchObject({ name: 'echo-overlay', status: 'built' });
    const wasm = readFileSync(join(dir, 'out', 'echo-overlay.wasm'));
    const manifest = JSON.parse(readFileSync(join(dir, 'out', 'echo-overlay.manifest.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest).toMatchObject({ name: 'echo-overlay', version: '1.2.3', phases: ['analysis'], capabilities: ['LOGGING'], sha256: createHash('sha256').update(wasm).digest('hex') });
    expect(Object.keys((manifest.build as { inputs: Record<string, string> }).inputs)).toEqual(expect.arrayContaining([file, `${SDK}.ts`]));

    const [second] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(second).toMatchObject({ status: 'skipped', sha256: manifest.sha256 });

    writeFileSync(file, source(dir, { name: 'echo-overlay', version: '1.2.4', phases: ['analysis'], capabilities: ['LOGGING'] }));
    const [third] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(third).toMatchObject({ status: 'built' });
  }, 60_000);

  it.each([
    [{ name: 'x-overlay', version: '1.0' }, 'version'],
    [{ name: 'x-overlay', version: '1.0.0', capabilities: ['FILESYSTEM'] }, 'capabilities[0]'],
    [{ name: 'x-overlay', version: '1.0.0', phases: ['digestion'] }, 'phases[0]'],
    [{ name: 'x-overlay', version: '1.0.0', fuel: { run: -1 } }, 'fuel.run'],
    [{ name: 'X Overlay', version: '1.0.0' }, 'name'],
  ])('rejects an invalid manifest %j naming the field %s, without compiling', async (manifest, field) => {
    const dir = workspace();
    const file = join(dir, 'bad.ts');
    writeFileSync(file, source(dir, manifest));
    const [result] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(result).toMatchObject({ status: 'failed', error: { code: 'INVALID_MANIFEST' } });
    expect(result?.error?.message).toContain(`"${field}"`);
    expect(result?.error?.message).toMatch(/bad\.ts:1:/);
  });

  it('rejects a source without a manifest block, or with one that is not JSON', () => {
    expect(() => readSourceManifest('a.ts', 'export function run(t: string): string { return t; }')).toThrow(/no manifest/);
    expect(() => readSourceManifest('a.ts', '// x\n/* forge:manifest { name: 1 } */')).toThrow(/a\.ts:2: the manifest is not a JSON object/);
  });

  it('points compile errors at file:line:column', async () => {
    const dir = workspace();
    const file = join(dir, 'broken.ts');
    const text = source(dir, { name: 'broken-overlay', version: '1.0.0' }, 'export function run(text: string): string {\n  return notDefined;\n}');
    writeFileSync(file, text);
    const line = text.split('\n').findIndex((l) => l.includes('notDefined')) + 1;
    const [result] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(result).toMatchObject({ status: 'failed', error: { code: 'COMPILE_FAILED' } });
    expect(result?.error?.message).toContain(`broken.ts:${line}:10: error: Cannot find name 'notDefined'`);
  });

  it('prints a progress line per overlay, --json results, and exits 1 when one fails', async () => {
    const dir = workspace();
    writeFileSync(join(dir, 'one.ts'), source(dir, { name: 'one-overlay', version: '1.0.0' }));
    writeFileSync(join(dir, 'two.ts'), source(dir, { name: 'two-overlay', version: '1.0' }));
    const cli = async (...args: string[]) =>
      promisify(execFile)(process.execPath, [BIN, 'build', ...args], { cwd: dir }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const human = await cli(dir, '--out', 'out');
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/\[1\/2\] one-overlay built in/);
    expect(human.stderr).toMatch(/\[2\/2\] .*two\.ts: FAILED INVALID_MANIFEST/);
    const json = await cli(join(dir, 'one.ts'), '--out', 'out', '--json');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ name: 'one-overlay', status: 'skipped' })]);
    expect((await cli('--bogus')).code).toBe(2);
  }, 60_000);
});
