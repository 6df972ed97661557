import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { runDemo } from '../../src/demo/demo.ts';
import { demoCapsule } from '../../src/demo/workload.ts';
import { PHASES } from '../../src/manifest.ts';
import { buildExamples, EXAMPLES_OUT } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

describe('the demo (npm start)', () => {
  beforeAll(async () => {
    await buildExamples();
  }, budget(120_000));

  it('streams capsules, pauses and resolves decisions, spreads a cascade, trips and recovers a breaker, and sums it up as JSON', async () => {
    let stdout = '';
    let stderr = '';
    const code = await main(['demo', '--capsules', '60', '--json'], { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
    // With --json, stderr carries at most the build's progress (when the examples were not built yet).
    expect([code, stderr.split('\n').filter((line) => line !== '' && !/^(Building the example overlays|\s+(\[\d+\/\d+\]|\S+ built in))/.test(line))]).toEqual([0, []]);
    const s = JSON.parse(stdout) as Awaited<ReturnType<typeof runDemo>>['summary'] & { ok: boolean };
    expect(s.ok).toBe(true);
    expect(s.runs.completed + s.runs.failed + s.runs.cancelled).toBe(60);
    expect(s.runs.failed).toBe(1); // capsule 37 is blank: ingestion refuses it
    expect(s.decisions.paused).toBeGreaterThanOrEqual(1);
    expect(s.decisions.approved + s.decisions.rejected).toBe(s.decisions.paused);
    expect(s.cascades.started).toBeGreaterThanOrEqual(1);
    expect(s.cascades.hops).toBeGreaterThanOrEqual(1);
    // Every chain ends on its own, completed or stopped by its guard with the reason: none waits for its TTL.
    expect(s.cascades.completed + s.cascades.stopped).toBe(s.cascades.started);
    expect(Object.keys(s.cascades.stoppedBy).every((why) => why === 'cycle' || why === 'hop-limit')).toBe(true);
    expect(s.cascades.longest.length).toBeGreaterThanOrEqual(3);
    expect(s.breaker).toMatchObject({ overlay: 'faulty-enricher', tripped: true, recovered: true });
    expect(s.breaker.transitions.map((t) => t.type)).toEqual(['open', 'halfOpen', 'close']);
    expect(s.deadLetters).toEqual({ total: 1, retried: 1, remaining: 0 });
    for (const phase of PHASES) expect(s.phases[phase].runs).toBeGreaterThan(0);
    expect(s.phases.ingestion.successRate).toBeCloseTo(59 / 60);
    expect(Object.keys(s.fuel).sort()).toEqual(['analysis-classifier', 'capsule-processor', 'cascade-propagator', 'governance-voter', 'ingestion-normalizer', 'lineage-tracker', 'security-validator']);
  }, budget(120_000));

  it('prints a readable summary with a progress line per tenth when not on a terminal', async () => {
    let stdout = '';
    let stderr = '';
    const { summary, kernel } = await runDemo({ capsules: 30, overlaysDir: EXAMPLES_OUT });
    await kernel.stop();
    expect(summary.runs.completed + summary.runs.failed).toBe(30);
    const code = await main(['demo', '--capsules', '30'], { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
    expect(code).toBe(0);
    expect(stdout).toMatch(/^Forge Kernel demo: 30 capsules through 7 phases in [\d.]+ s/);
    expect(stdout).toContain('Breaker       faulty-enricher: closed → open');
    expect(stderr).toContain('30/30 runs settled');
  }, budget(120_000));

  it('walks every path of the workload: clean, escalated, secret, malformed', () => {
    const paths = new Set(Array.from({ length: 100 }, (_, n) => demoCapsule(n).path));
    expect(paths).toEqual(new Set(['clean', 'personal', 'secret', 'malformed']));
  });

  it.each([[['demo', '--capsules', '0']], [['demo', '--capsules', 'many']], [['demo', '--store', 'sqlite']], [['demo', '--port', '-3']], [['demo', '--turbo']]])('refuses %j with a usage error', async (args) => {
    let stdout = '';
    const code = await main([...args, '--json'], { stdout: (t) => (stdout += t), stderr: () => undefined });
    expect(code).toBe(2);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, error: { code: 'USAGE' } });
  });
});
