import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../support/cli.ts';
import { buildExamples, EXAMPLES_OUT, GOOD_CAPSULE, LEAKY_CAPSULE, PERSONAL_CAPSULE } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

const BIN = new URL('../../bin/forge-kernel.js', import.meta.url).pathname;


describe('forge-kernel run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'forge-run-'));
  const file = (name: string, content: unknown): string => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
    return path;
  };
  beforeAll(async () => {
    await buildExamples();
  }, budget(120_000));

  it('runs a capsule through the seven phases and prints status, phases, fuel per overlay and duration as JSON', async () => {
    const run = await cli(['run', file('good.json', { capsule: GOOD_CAPSULE }), '--overlays', EXAMPLES_OUT, '--json']);
    expect(run.code).toBe(0);
    const result = JSON.parse(run.stdout) as { ok: boolean; status: string; phases: { phase: string; status: string }[]; fuel: Record<string, number>; durationMs: number; data: { execution: { op: string } } };
    expect(result).toMatchObject({ ok: true, status: 'completed', data: { execution: { op: 'store' } } });
    expect(result.phases.map((p) => p.status)).toEqual(Array(7).fill('completed'));
    expect(Object.keys(result.fuel)).toHaveLength(7);
    expect(Object.values(result.fuel).every((f) => f > 0)).toBe(true);
  });

  it('takes the capsule itself as input, and prints a table without --json', async () => {
    const run = await cli(['run', file('bare.json', LEAKY_CAPSULE), '--overlays', EXAMPLES_OUT]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^run run_\S+: completed in \d+ ms\n/);
    expect(run.stdout).toMatch(/execution\s+completed\s+[\d.]+ ms\s+capsule-processor ok \(fuel \d+\)/);
  });

  it("shows why a phase failed in the overlay's own words, in the table and as JSON", async () => {
    const input = file('trust80.json', { capsule: { ...GOOD_CAPSULE, trust: 80 } });
    const table = await cli(['run', input, '--overlays', EXAMPLES_OUT]);
    expect(table.code).toBe(1);
    expect(table.stdout).toMatch(/ingestion\s+failed\s+[\d.]+ ms\s+ingestion-normalizer failed OVERLAY_ERROR: .*trust/);
    expect(table.stdout).toMatch(/error: PHASE_FAILED: .*ingestion-normalizer \(OVERLAY_ERROR: .*trust.*\)/);
    const json = JSON.parse((await cli(['run', input, '--overlays', EXAMPLES_OUT, '--json'])).stdout) as { error: { message: string } };
    expect(json.error.message).toMatch(/ingestion-normalizer \(OVERLAY_ERROR: .*trust/);
  });

  it('stops at consensus when a human must decide, or decides at once with --decide', async () => {
    const input = file('personal.json', { capsule: PERSONAL_CAPSULE });
    const waiting = await cli(['run', input, '--overlays', EXAMPLES_OUT, '--json']);
    expect(waiting.code).toBe(0);
    expect(JSON.parse(waiting.stdout)).toMatchObject({ ok: true, status: 'awaitingDecision', data: { consensus: { decision: 'escalate', needsDecision: true } } });
    const decided = await cli(['run', input, '--overlays', EXAMPLES_OUT, '--decide', 'reject', '--by', 'grace', '--json']);
    expect(JSON.parse(decided.stdout)).toMatchObject({ status: 'completed', decision: { approve: false, by: 'grace' }, data: { execution: { op: 'quarantine' } } });
  });

  it('fails with exit 1 when a required phase fails', async () => {
    const run = await cli(['run', file('bad-capsule.json', { capsule: { id: '', content: 'x' } }), '--overlays', EXAMPLES_OUT, '--json']);
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, status: 'failed', error: { code: 'PHASE_FAILED', phase: 'ingestion' } });
  });

  it.each([
    [['run'], 'USAGE'],
    [['run', '/no/such/input.json'], 'USAGE'],
    [['run', 'NOT_JSON'], 'USAGE'],
    [['run', 'ARRAY'], 'USAGE'],
    [['run', 'GOOD', '--store', 'postgres'], 'USAGE'],
    [['run', 'GOOD', '--mode', 'turbo'], 'USAGE'],
    [['run', 'GOOD', '--decide', 'maybe'], 'USAGE'],
    [['run', '--resume', 'run_x'], 'USAGE'],
    [['run', 'GOOD', '--resume', 'run_x', '--decide', 'approve'], 'USAGE'],
    [['run', 'GOOD', '--overlays', 'EMPTY'], 'OVERLAY_DIR_EMPTY'],
    [['run', 'GOOD', '--overlays', '/no/such/dir'], 'OVERLAY_DIR_UNREADABLE'],
    [['run', '--resume', 'run_missing', '--decide', 'approve', '--overlays', 'EXAMPLES'], 'RUN_NOT_FOUND'],
  ])('refuses %j with %s', async (args, code) => {
    const empty = join(dir, 'empty');
    mkdirSync(empty, { recursive: true });
    const files: Record<string, string> = { NOT_JSON: file('not.json', '{oops'), ARRAY: file('array.json', [1]), GOOD: file('good.json', { capsule: GOOD_CAPSULE }), EMPTY: empty, EXAMPLES: EXAMPLES_OUT };
    const run = await cli([...args.map((a) => files[a] ?? a), '--json']);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, error: { code } });
    expect(run.code).toBe(code === 'USAGE' ? 2 : 1);
  });

  it('builds the example overlays when no folder is given (a real process, its own cache)', async () => {
    const cache = resolve(import.meta.dirname, '..', '..', '.forge', 'cache', 'cli-run');
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'run', file('good2.json', { capsule: GOOD_CAPSULE }), '--json'], { env: { ...process.env, FORGE_CACHE_DIR: cache }, timeout: 120_000 });
    expect(JSON.parse(stdout)).toMatchObject({ ok: true, status: 'completed' });
  }, budget(150_000));
});
