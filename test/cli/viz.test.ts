import { Graphviz } from '@hpcc-js/wasm-graphviz';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { ACTOR_KINDS } from '../../src/inspect/catalog.ts';
import { MACHINES, statechart } from '../../src/inspect/statechart.ts';

async function cli(args: string[]): Promise<{ code: number; stdout: string }> {
  let stdout = '';
  const code = await main(args, { stdout: (t) => (stdout += t), stderr: () => undefined });
  return { code, stdout };
}

describe('forge-kernel viz', () => {
  let graphviz: Graphviz;
  beforeAll(async () => {
    graphviz = await Graphviz.load();
  });

  it.each(ACTOR_KINDS)('prints the %s machine as DOT that Graphviz lays out: every state, every transition', async (kind) => {
    const { code, stdout } = await cli(['viz', kind, '--format', 'dot']);
    expect(code).toBe(0);
    const svg = graphviz.dot(stdout);
    const chart = statechart(MACHINES[kind]);
    const clusters = chart.states.filter((s) => s.type === 'compound' || s.type === 'parallel');
    const initialPoints = 1 + clusters.length;
    expect(svg.match(/class="node"/g)?.length).toBe(chart.states.length - clusters.length + initialPoints);
    expect(svg.match(/class="cluster"/g)?.length ?? 0).toBe(clusters.length);
    expect(svg.match(/class="edge"/g)?.length).toBe(chart.transitions.length + initialPoints);
    for (const state of chart.states.filter((s) => !clusters.includes(s))) expect(svg).toContain(`>${state.key}</text>`);
  });

  it('prints toJSON() as JSON, the same definition Stately Studio imports', async () => {
    const { code, stdout } = await cli(['viz', 'pipeline', '--format', 'json']);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual(JSON.parse(JSON.stringify(MACHINES.pipeline.toJSON())));
  });

  it('draws eventless, delayed, guarded and root transitions readably', () => {
    const events = statechart(MACHINES.pipeline).transitions.map((t) => `${t.source} ${t.event}${t.guard === undefined ? '' : ` [${t.guard}]`} ${t.target}`);
    expect(events).toEqual(
      expect.arrayContaining([
        'pipeline.awaitingDecision.open always [hasDeadline] pipeline.awaitingDecision.timed',
        'pipeline.awaitingDecision.timed after decisionDeadline pipeline.failed',
        'pipeline.paused RESUME [resumesAt(execution)] pipeline.execution',
        'pipeline.ingestion CANCEL pipeline.cancelled',
      ]),
    );
    expect(events.filter((e) => e.startsWith('pipeline.completed'))).toEqual([]);
  });

  it.each([[['viz']], [['viz', 'toaster']], [['viz', 'breaker', '--format', 'png']], [['viz', 'breaker', 'extra']], [['viz', 'breaker', '--colour']]])('refuses %j with a usage error (exit 2)', async (args) => {
    const { code, stdout } = await cli([...args, '--json']);
    expect(code).toBe(2);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, error: { code: 'USAGE' } });
  });
});
