import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildFixture } from '../support/overlays.ts';

const BIN = new URL('../../bin/forge-kernel.js', import.meta.url).pathname;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe('forge-kernel call', () => {
  let wasm: string;
  let manifestFile: string;

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-call-'));
    const { bytes, manifest } = await buildFixture('fixtures/basics.ts', { name: 'basics', capabilities: ['LOGGING', 'EVENT_PUBLISH'] });
    wasm = join(dir, 'basics.wasm');
    manifestFile = join(dir, 'basics.manifest.json');
    writeFileSync(wasm, bytes);
    writeFileSync(manifestFile, JSON.stringify(manifest));
  });

  it('runs an export and prints { ok, output, fuelUsed, durationMs } with --json (manifest found beside the .wasm)', async () => {
    const run = await cli(['call', wasm, 'run', '--input', '{"id":"c1"}', '--json']);
    expect(run.code).toBe(0);
    const result = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(result).toMatchObject({ ok: true, output: { id: 'c1' } });
    expect(result.fuelUsed).toBeGreaterThan(0);
    expect(typeof result.durationMs).toBe('number');
  });

  it('prints the same fuel in both modes', async () => {
    const [strict, relaxed] = await Promise.all(['strict', 'relaxed'].map((mode) => cli(['call', wasm, 'count', '--input', '700', '--mode', mode, '--json'])));
    expect(JSON.parse(strict!.stdout)).toMatchObject({ ok: true, output: 1050 });
    expect((JSON.parse(strict!.stdout) as { fuelUsed: number }).fuelUsed).toBe((JSON.parse(relaxed!.stdout) as { fuelUsed: number }).fuelUsed);
  });

  it('reports a failing call as { ok: false, error: { code, message } } with exit 1', async () => {
    const run = await cli(['call', wasm, 'spin', '--manifest', manifestFile, '--fuel', '5000', '--json']);
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, error: { code: 'OUT_OF_FUEL' } });
    const human = await cli(['call', wasm, 'nope']);
    expect(human.code).toBe(1);
    expect(human.stderr).toContain('EXPORT_NOT_FOUND');
  });

  it.each([
    [['call'], 'needs a .wasm file'],
    [['call', 'x.wasm'], 'needs a .wasm file'],
    [['call', 'WASM', 'run', '--input', '{nope'], '--input is not JSON'],
    [['call', 'WASM', 'run', '--fuel', 'lots'], '--fuel must be a positive whole number'],
    [['call', 'WASM', 'run', '--mode', 'turbo'], '--mode must be strict or relaxed'],
    [['call', 'WASM', 'run', '--grant', 'ROOT'], 'unknown capability'],
    [['call', '/nonexistent.wasm', 'run'], 'cannot read'],
    [['call', 'WASM', 'run', '--bogus'], "Unknown option '--bogus'"],
  ])('refuses %j with exit 2 and a message', async (args, message) => {
    const run = await cli(args.map((a) => (a === 'WASM' ? wasm : a)));
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(message);
  });

  it('refuses tampered bytes with HASH_MISMATCH', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'forge-call-tampered-'));
    const tampered = join(dir, 'basics.wasm');
    const { bytes, manifest } = await buildFixture('fixtures/basics.ts', { name: 'basics' });
    const copy = bytes.slice();
    copy[copy.length - 2] = (copy[copy.length - 2] ?? 0) ^ 0xff;
    writeFileSync(tampered, copy);
    writeFileSync(join(dir, 'basics.manifest.json'), JSON.stringify(manifest));
    const run = await cli(['call', tampered, 'run', '--json']);
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, error: { code: 'HASH_MISMATCH' } });
  });
});
