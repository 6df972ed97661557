import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { buildOverlays, findSourceManifest } from '../../src/build/build.ts';
import { SDK_IMPORT } from '../../src/build/asc.ts';
import { loadWasmOverlay } from '../../src/wasm/engine.ts';
import { textViews } from '../support/package.ts';
import { budget } from '../support/wait.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'forge-kernel.js');
/** Compiling AssemblyScript takes seconds, more on a busy machine: a generous ceiling, not a measurement. */
const COMPILE_BUDGET_MS = budget(180_000);

/** An overlay source importing the SDK the way users do. */
function source(manifest: Record<string, unknown> | string, body = 'export function run(text: string): string { return ok(input(text)); }'): string {
  const json = typeof manifest === 'string' ? manifest : JSON.stringify(manifest, null, 2);
  return `/* forge:manifest\n${json}\n*/\nimport { input, ok } from "${SDK_IMPORT}";\n${body}\n`;
}

function workspace(): string {
  return mkdtempSync(join(tmpdir(), 'forge-build-'));
}

async function buildOne(text: string, name = 'overlay.ts'): Promise<{ dir: string; result: Awaited<ReturnType<typeof buildOverlays>>[number] }> {
  const dir = workspace();
  writeFileSync(join(dir, name), text);
  const [result] = await buildOverlays([join(dir, name)], { outDir: join(dir, 'out') });
  return { dir, result: result! };
}

describe('forge-kernel build', () => {
  it('writes <name>.wasm and <name>.manifest.json with the sha256 of the .wasm, then skips an unchanged rebuild', async () => {
    const dir = workspace();
    const file = join(dir, 'echo.ts');
    writeFileSync(file, source({ name: 'echo-overlay', version: '1.2.3', phases: ['analysis'], capabilities: ['LOGGING'] }));
    const [first] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(first).toMatchObject({ name: 'echo-overlay', status: 'built' });
    const wasm = readFileSync(join(dir, 'out', 'echo-overlay.wasm'));
    const manifest = JSON.parse(readFileSync(join(dir, 'out', 'echo-overlay.manifest.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest).toMatchObject({ name: 'echo-overlay', version: '1.2.3', phases: ['analysis'], capabilities: ['LOGGING'], sha256: createHash('sha256').update(wasm).digest('hex') });
    expect(Object.keys((manifest.build as { inputs: Record<string, string> }).inputs)).toEqual(
      expect.arrayContaining(['echo.ts', '~lib/forge-kernel/overlays-as/sdk/index.ts', '~lib/forge-kernel/asconfig.json']),
    );

    const [second] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(second).toMatchObject({ status: 'skipped', sha256: manifest.sha256 });

    writeFileSync(file, source({ name: 'echo-overlay', version: '1.2.4', phases: ['analysis'], capabilities: ['LOGGING'] }));
    const [third] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(third).toMatchObject({ status: 'built' });
  }, COMPILE_BUDGET_MS);

  it('builds the same source in two folders to the same bytes, sha256, manifest and fuel, with no absolute path', async () => {
    const example = join(ROOT, 'overlays-as', 'examples', 'ingestion-normalizer.ts');
    const builds = [];
    for (const nested of ['a', join('deeper', 'still', 'b')]) {
      const dir = join(workspace(), nested);
      mkdirSync(dir, { recursive: true });
      cpSync(example, join(dir, 'ingestion-normalizer.ts'));
      const [result] = await buildOverlays([join(dir, 'ingestion-normalizer.ts')], { outDir: join(dir, 'build'), force: true });
      expect(result?.status).toBe('built');
      const manifestText = readFileSync(result!.manifest!, 'utf8');
      const bytes = new Uint8Array(readFileSync(result!.wasm!));
      const overlay = await loadWasmOverlay(bytes, { manifest: JSON.parse(manifestText) as Record<string, unknown>, grant: ['LOGGING'], mode: 'relaxed' });
      const { fuelUsed } = await overlay.call('run', { capsule: { id: 'c1', kind: 'note', content: 'a  b', author: 'ada', trust: 0.5 } });
      await overlay.close();
      builds.push({ dir, sha256: result!.sha256, manifestText, fuelUsed, bytes });
    }
    const [one, two] = builds as [(typeof builds)[0], (typeof builds)[0]];
    expect(two.sha256).toBe(one.sha256);
    expect(Buffer.from(two.bytes).equals(Buffer.from(one.bytes))).toBe(true);
    expect(two.manifestText).toBe(one.manifestText);
    expect(two.fuelUsed).toBe(one.fuelUsed);
    for (const { dir, manifestText, bytes } of builds) {
      expect(manifestText).not.toContain(tmpdir());
      expect(manifestText).not.toContain(ROOT);
      // AssemblyScript keeps file names (abort messages) as UTF-16 strings in the data.
      const utf16 = textViews(bytes).join('\n');
      expect(utf16).not.toContain(dir);
      expect(utf16).not.toContain(ROOT);
    }
  }, COMPILE_BUDGET_MS);

  it.each([
    [{ name: 'x-overlay', version: '1.0' }, 'version', 4],
    [{ name: 'x-overlay', version: '1.0.0', capabilities: ['FILESYSTEM'] }, 'capabilities[0]', 6],
    [{ name: 'x-overlay', version: '1.0.0', phases: ['digestion'] }, 'phases[0]', 6],
    [{ name: 'x-overlay', version: '1.0.0', fuel: { run: -1 } }, 'fuel.run', 6],
    [{ name: 'X Overlay', version: '1.0.0' }, 'name', 3],
    [{ version: '1.0.0' }, 'name', 2],
    [{ name: 'x-overlay', version: '1.0.0', sha256: 'a'.repeat(64) }, 'sha256', 5],
  ])('rejects an invalid manifest %j naming the field %s at its line %d, without compiling', async (manifest, field, line) => {
    const { result } = await buildOne(source(manifest), 'bad.ts');
    expect(result).toMatchObject({ status: 'failed', error: { code: 'INVALID_MANIFEST' } });
    expect(result.error?.message).toContain(`"${field}"`);
    expect(result.error?.message).toMatch(new RegExp(`bad\\.ts:${line}:\\d+: `));
  });

  it.each([
    ['"timeoutMS": 1000', 'timeoutMS', 'timeoutMs'],
    ['"memorypages": 2', 'memorypages', 'memoryPages'],
    ['"capabilites": ["LOGGING"]', 'capabilites', 'capabilities'],
    ['"database": { "rowcap": 5 }', 'database.rowcap', 'rowCap'],
  ])('refuses the misspelled key %s at its line and column, suggesting the valid one', async (member, field, suggestion) => {
    const text = source(`{\n  "name": "typo-overlay",\n  "version": "1.0.0",\n    ${member}\n}`);
    const { result } = await buildOne(text, 'typo.ts');
    expect(result).toMatchObject({ status: 'failed', error: { code: 'INVALID_MANIFEST' } });
    const column = field.includes('.') ? text.split('\n')[4]!.indexOf('"rowcap"') + 1 : 5;
    expect(result.error?.message).toContain(`typo.ts:5:${column}: `);
    expect(result.error?.message).toContain(`"${field}" is not a manifest field: did you mean "${suggestion}"?`);
  });

  it('refuses a key given twice and a manifest that is not JSON, at the place', async () => {
    const twice = await buildOne(source('{\n  "name": "twice-overlay",\n  "version": "1.0.0",\n  "name": "other-overlay"\n}'), 'twice.ts');
    expect(twice.result.error?.message).toMatch(/twice\.ts:5:3: .*"name" is given twice/);
    const broken = await buildOne(source('{\n  "name": "broken-overlay",\n  "version": "1.0.0",,\n}'), 'broken.ts');
    expect(broken.result.error?.message).toMatch(/broken\.ts:4:\d+: .*is not valid JSON/);
  });

  it('rejects a source without a manifest block, or with an unclosed one', () => {
    expect(() => findSourceManifest('a.ts', 'export function run(t: string): string { return t; }')).toThrow(/no manifest/);
    expect(() => findSourceManifest('a.ts', '// x\n/* forge:manifest { "name": 1 }')).toThrow(/a\.ts:2: the manifest comment is not closed/);
  });

  it('fails the build when the module imports a host function whose capability the manifest does not declare', async () => {
    const body = 'import { publish, Value } from "forge-kernel/overlays-as/sdk";\nexport function run(text: string): string { publish("capsule.seen", Value.object()); return ok(input(text)); }';
    const { result } = await buildOne(source({ name: 'quiet-overlay', version: '1.0.0', capabilities: ['LOGGING'] }, body), 'quiet.ts');
    expect(result).toMatchObject({ status: 'failed', error: { code: 'INVALID_MANIFEST' } });
    expect(result.error?.message).toMatch(/quiet\.ts:5:\d+: .*"capabilities" must include "EVENT_PUBLISH": the module imports forge\.event_publish/);
  });

  it('builds an overlay that imports a host function of the service (the kernel that loads it checks it)', async () => {
    const body = '@external("forge", "geo_lookup") declare function geoLookup(x: i32): i32;\nexport function run(text: string): string { return geoLookup(1) > 0 ? ok(input(text)) : text; }';
    const { result } = await buildOne(source({ name: 'geo-overlay', version: '1.0.0' }, body), 'geo.ts');
    expect(result).toMatchObject({ status: 'built' });
  }, COMPILE_BUDGET_MS);

  it('rebuilds when another source of the same name is built into the folder, and refuses two of one name in one build', async () => {
    const dir = workspace();
    const out = join(dir, 'out');
    writeFileSync(join(dir, 'a.ts'), source({ name: 'same-overlay', version: '1.0.0' }, 'export function run(text: string): string { return "\\"A\\""; }'));
    writeFileSync(join(dir, 'b.ts'), source({ name: 'same-overlay', version: '1.0.0' }, 'export function run(text: string): string { return "\\"B\\""; }'));
    const [a] = await buildOverlays([join(dir, 'a.ts')], { outDir: out });
    const [b] = await buildOverlays([join(dir, 'b.ts')], { outDir: out });
    expect(a?.status).toBe('built');
    expect(b?.status).toBe('built');
    expect(b?.sha256).not.toBe(a?.sha256);
    const both = await buildOverlays([join(dir, 'a.ts'), join(dir, 'b.ts')], { outDir: out, force: true });
    expect(both[1]).toMatchObject({ status: 'failed', error: { code: 'INVALID_MANIFEST' } });
    expect(both[1]?.error?.message).toMatch(/b\.ts:3:\d+: .*"name" is also the name of .*a\.ts in this build/);
  }, COMPILE_BUDGET_MS);

  it('reads a manifest behind a byte-order mark, and calls an empty one empty', async () => {
    const bom = await buildOne(`\uFEFF${source({ name: 'bom-overlay', version: '1.0' })}`, 'bom.ts');
    expect(bom.result.error?.message).toMatch(/bom\.ts:4:3: .*"version"/);
    const empty = await buildOne('/* forge:manifest */\nexport function run(t: string): string { return t; }', 'empty.ts');
    expect(empty.result.error?.message).toMatch(/empty\.ts:1:\d+: .*is empty/);
  });

  it('fails the build when a fuel budget names an export the module does not have', async () => {
    const { result } = await buildOne(source({ name: 'budget-overlay', version: '1.0.0', fuel: { rnu: 1000 } }), 'budget.ts');
    expect(result).toMatchObject({ status: 'failed', error: { code: 'INVALID_MANIFEST' } });
    expect(result.error?.message).toMatch(/budget\.ts:\d+:\d+: .*"fuel\.rnu" names no export of the module: did you mean "run"\?/);
  });

  it('points compile errors at file:line:column and keeps the code frame', async () => {
    const text = source({ name: 'broken-overlay', version: '1.0.0' }, 'export function run(text: string): string {\n  return notDefined;\n}');
    const line = text.split('\n').findIndex((l) => l.includes('notDefined')) + 1;
    const { result } = await buildOne(text, 'broken.ts');
    expect(result).toMatchObject({ status: 'failed', error: { code: 'COMPILE_FAILED' } });
    expect(result.error?.message).toContain(`broken.ts:${line}:10: error: Cannot find name 'notDefined'`);
    expect(result.error?.message).toMatch(/return notDefined;\n\s+│\s+~~~~~~~~~~/);
  }, COMPILE_BUDGET_MS);

  it('prints a progress line per overlay, --json results, and exits 1 when one fails', async () => {
    const dir = workspace();
    writeFileSync(join(dir, 'one.ts'), source({ name: 'one-overlay', version: '1.0.0' }));
    writeFileSync(join(dir, 'two.ts'), source({ name: 'two-overlay', version: '1.0' }));
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
  }, COMPILE_BUDGET_MS);
});
