import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildOverlays } from '../../src/build/build.ts';
import { cli } from '../support/cli.ts';
import { buildExamples, EXAMPLES_OUT, GOOD_CAPSULE, PERSONAL_CAPSULE } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'forge-kernel.js');


describe('forge-kernel journal and replay', () => {
  const dir = mkdtempSync(join(tmpdir(), 'forge-journal-cli-'));
  const journal = join(dir, 'runs.db');
  let completedId: string;
  let waitingId: string;
  beforeAll(async () => {
    await buildExamples();
    writeFileSync(join(dir, 'good.json'), JSON.stringify({ capsule: GOOD_CAPSULE }));
    writeFileSync(join(dir, 'personal.json'), JSON.stringify({ capsule: PERSONAL_CAPSULE }));
    const good = await cli(['run', join(dir, 'good.json'), '--overlays', EXAMPLES_OUT, '--journal', journal, '--json']);
    expect(good.code, good.stderr).toBe(0);
    completedId = (JSON.parse(good.stdout) as { id: string }).id;
    const waiting = await cli(['run', join(dir, 'personal.json'), '--overlays', EXAMPLES_OUT, '--journal', journal, '--json']);
    expect(waiting.code, waiting.stderr).toBe(0);
    const parsed = JSON.parse(waiting.stdout) as { id: string; status: string; next: string };
    expect(parsed.status).toBe('awaitingDecision');
    expect(parsed.next).toContain(`--journal ${journal}`);
    waitingId = parsed.id;
  }, budget(180_000));

  it('lists the journal\'s runs and shows one run\'s entries', async () => {
    const list = await cli(['journal', 'list', '--journal', journal, '--json']);
    expect(list.code).toBe(0);
    const runs = (JSON.parse(list.stdout) as { runs: { stream: string; status: string }[] }).runs;
    expect(runs.map((r) => [r.stream, r.status]).sort()).toEqual([[completedId, 'completed'], [waitingId, 'awaitingDecision']].sort());
    const waiting = await cli(['journal', 'list', '--journal', journal, '--status', 'awaitingDecision']);
    expect(waiting.stdout).toContain(waitingId);
    expect(waiting.stdout).not.toContain(completedId);
    const show = await cli(['journal', 'show', completedId, '--journal', journal]);
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/started\s+overlays .*analysis-classifier@1\.0\.0/);
    expect(show.stdout).toMatch(/call\s+analysis analysis-classifier #1 ok fuel \d+/);
    expect(show.stdout).toMatch(/settled\s+completed/);
  });

  it('resumes a run waiting in the journal from a new process, then replays it identically', async () => {
    const resumed = await cli(['run', '--resume', waitingId, '--decide', 'approve', '--journal', journal, '--overlays', EXAMPLES_OUT, '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ status: 'completed', decision: { approve: true } });
    const replay = await cli(['replay', waitingId, '--journal', journal, '--overlays', EXAMPLES_OUT, '--json']);
    expect(replay.code, replay.stdout + replay.stderr).toBe(0);
    expect(JSON.parse(replay.stdout)).toMatchObject({ ok: true, identical: true, id: waitingId });
  });

  it('exports a run as JSON Lines that replay --from accepts, through the real bin', async () => {
    const out = join(dir, 'run.jsonl');
    const exported = await cli(['journal', 'export', completedId, '--journal', journal, '--out', out]);
    expect(exported.code).toBe(0);
    expect(readFileSync(out, 'utf8').trim().split('\n').length).toBeGreaterThan(10);
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'replay', '--from', out, '--overlays', EXAMPLES_OUT], { cwd: ROOT });
    expect(stdout).toMatch(new RegExp(`^replay ${completedId}: \\d+ calls, identical`));
  }, budget(60_000));

  it('shows a changed overlay\'s differences with --with and exits 1', async () => {
    const source = readFileSync(join(ROOT, 'overlays-as', 'examples', 'analysis-classifier.ts'), 'utf8').replace('"version": "1.0.0"', '"version": "1.2.0"').replace('const TRUST_FLOOR: f64 = 0.5;', 'const TRUST_FLOOR: f64 = 0.95;');
    const file = join(dir, 'analysis-classifier.ts');
    writeFileSync(file, source);
    const [built] = await buildOverlays([file], { outDir: join(dir, 'candidate') });
    const replay = await cli(['replay', completedId, '--journal', journal, '--overlays', EXAMPLES_OUT, '--with', `analysis-classifier=${built!.wasm!}`]);
    expect(replay.code).toBe(1);
    expect(replay.stdout).toMatch(/analysis-classifier: recorded 1\.0\.0 \(\w+\), replayed 1\.2\.0 \(\w+\) \[--with\]/);
    expect(replay.stdout).toMatch(/entry \d+ analysis analysis-classifier #1: output at \$\.data\./);
  }, budget(180_000));

  it('refuses bad command lines and missing journals with clear errors', async () => {
    expect((await cli(['journal'])).code).toBe(2);
    expect((await cli(['journal', 'show', '--journal', journal])).code).toBe(2);
    expect((await cli(['journal', 'list', '--journal', journal, '--limit', '0'])).code).toBe(2);
    const missing = await cli(['journal', 'list', '--journal', join(dir, 'nope.db')]);
    expect(missing).toMatchObject({ code: 2 });
    expect(missing.stderr).toContain('no journal at');
    expect((await cli(['journal', 'show', 'run_nope', '--journal', journal])).code).toBe(2);
    expect((await cli(['replay', completedId])).code).toBe(2);
    expect((await cli(['replay', completedId, '--journal', journal, '--with', 'broken'])).code).toBe(2);
    const garbage = join(dir, 'garbage.jsonl');
    writeFileSync(garbage, 'not json\n');
    const bad = await cli(['replay', '--from', garbage, '--json']);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ ok: false, error: { code: 'JOURNAL_CORRUPT' } });
  });
});
