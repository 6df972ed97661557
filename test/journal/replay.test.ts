// Replay: every recorded overlay call re-executed with its recorded input and host answers gives the recorded output
// and fuel; a changed overlay shows where it differs; a replay runs nothing on the host and publishes nothing.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOverlays } from '../../src/build/build.ts';
import { SDK_IMPORT } from '../../src/build/asc.ts';
import { fromJsonLines, toJsonLines, type JournalEntry } from '../../src/journal/journal.ts';
import { firstDifference } from '../../src/journal/replay.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { HostFunction } from '../../src/wasm/host-functions.ts';
import { captureLogger } from '../support/engine.ts';
import { buildExamples, EXAMPLE_NAMES, GOOD_CAPSULE, LEAKY_CAPSULE, PERSONAL_CAPSULE } from '../support/examples.ts';
import { budget, until } from '../support/wait.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const COMPILE_BUDGET_MS = budget(240_000);

let examples: Awaited<ReturnType<typeof buildExamples>>;
let dir: string;
beforeAll(async () => {
  examples = await buildExamples();
  dir = mkdtempSync(join(tmpdir(), 'forge-replay-'));
}, COMPILE_BUDGET_MS);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function examplesKernel(mode: 'relaxed' | 'strict' = 'relaxed'): Promise<Kernel> {
  const kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { decisionTimeoutMs: null } });
  for (const name of EXAMPLE_NAMES) {
    const { bytes, manifest } = examples[name];
    await kernel.overlays.load(bytes, { manifest, grant: (manifest.capabilities as never[] | undefined) ?? [], mode });
  }
  return kernel;
}

describe('replay of recorded runs', () => {
  it('replays every example run identically, fuel included, in both engines', async () => {
    for (const mode of ['relaxed', 'strict'] as const) {
      const kernel = await examplesKernel(mode);
      try {
        for (const capsule of [GOOD_CAPSULE, LEAKY_CAPSULE, PERSONAL_CAPSULE]) {
          const run = kernel.pipelines.start({ capsule });
          let settled = false;
          void run.done.then(() => (settled = true));
          await expect.poll(() => settled || run.status === 'awaitingDecision').toBe(true);
          if (run.status === 'awaitingDecision') await kernel.pipelines.resume(run.id, { decision: 'approve', by: 'ops' });
          const result = await run.done;
          const report = await kernel.replay(run.id);
          expect(report, `${mode} ${capsule.id}`).toMatchObject({ id: run.id, identical: true, firstDivergence: null, differences: [] });
          expect(report.calls).toBeGreaterThanOrEqual(result.phases.flatMap((p) => p.overlays).filter((o) => o.status !== 'not-run').length);
          expect(report.fuel.replayed).toBe(report.fuel.recorded);
          expect(report.fuel.recorded).toBe(Object.values(result.fuel).reduce((a, b) => a + b, 0));
          expect(report.overlays.every((o) => o.recorded?.sha256 === o.replayed.sha256 && !o.candidate)).toBe(true);
        }
      } finally {
        await kernel.stop();
      }
    }
  }, COMPILE_BUDGET_MS);

  it('diffs a changed overlay against the recorded traffic (a shadow run), publishing nothing', async () => {
    const source = readFileSync(join(ROOT, 'overlays-as', 'examples', 'analysis-classifier.ts'), 'utf8')
      .replace('"version": "1.0.0"', '"version": "1.1.0"')
      .replace('const TRUST_FLOOR: f64 = 0.5;', 'const TRUST_FLOOR: f64 = 0.95;')
      .replace('forge-kernel/overlays-as/sdk', SDK_IMPORT);
    const file = join(dir, 'analysis-classifier.ts');
    writeFileSync(file, source);
    const [built] = await buildOverlays([file], { outDir: join(dir, 'out') });
    expect(built?.status).toBe('built');
    const kernel = await examplesKernel();
    try {
      const good = kernel.pipelines.start({ capsule: GOOD_CAPSULE });
      const leaky = kernel.pipelines.start({ capsule: LEAKY_CAPSULE });
      await Promise.all([good.done, leaky.done]);
      // The runs' own events (and the cascades they start) settle first: then nothing more may be published.
      let last = -1;
      await until(() => {
        const { published, queueDepth } = kernel.bus.metrics();
        const settled = published === last && queueDepth === 0;
        last = published;
        return settled;
      }, 'the bus to settle', { everyMs: 200 });
      // The good capsule's author has trust 0.9: under the new floor (0.95) the risk rises; the leaky one was below both.
      const changed = await kernel.replay(good.id, { overlays: { 'analysis-classifier': built!.wasm! } });
      expect(changed.identical).toBe(false);
      expect(changed.overlays.find((o) => o.name === 'analysis-classifier')).toMatchObject({ candidate: true, recorded: { version: '1.0.0' }, replayed: { version: '1.1.0' } });
      expect(changed.firstDivergence).toMatchObject({ phase: 'analysis', overlay: 'analysis-classifier', what: 'output' });
      expect(changed.firstDivergence?.path).toMatch(/^\$\.data\./);
      expect(changed.differences.every((d) => d.overlay === 'analysis-classifier')).toBe(true);
      const same = await kernel.replay(leaky.id, { overlays: { 'analysis-classifier': built!.wasm! } });
      expect(same.differences.filter((d) => d.what === 'output')).toEqual([]);
      expect(kernel.bus.metrics().published).toBe(last);
    } finally {
      await kernel.stop();
    }
  }, COMPILE_BUDGET_MS);

  it('replays a cascade chain: the overlay calls its events caused, identical, and a changed overlay diffed', async () => {
    const source = readFileSync(join(ROOT, 'overlays-as', 'examples', 'cascade-propagator.ts'), 'utf8')
      .replace('"version": "1.0.0"', '"version": "1.1.0"')
      .replace('const STRONG_SCORE: f64 = 2;', 'const STRONG_SCORE: f64 = 9;')
      .replace('forge-kernel/overlays-as/sdk', SDK_IMPORT);
    const file = join(dir, 'cascade-propagator.ts');
    writeFileSync(file, source);
    const [built] = await buildOverlays([file], { outDir: join(dir, 'out-chain') });
    expect(built?.status).toBe('built');
    const kernel = await examplesKernel();
    try {
      const chain = await kernel.cascades.start('kernel', 'insight.detected', { capsuleId: 'cap-chain', strength: 5 });
      await until(async () => (await kernel.journal!.read(chain.id)).some((e) => e.kind === 'chain.call'), 'the propagator\'s call to be journaled');
      const call = (await kernel.journal!.read(chain.id)).find((e) => e.kind === 'chain.call');
      expect(call).toMatchObject({ body: { overlay: 'cascade-propagator', version: '1.0.0', event: 'insight.detected', attempt: 1, output: { ok: true, data: { relayed: true } } } });
      const report = await kernel.replay(chain.id);
      expect(report).toMatchObject({ identical: true, differences: [] });
      expect(report.calls).toBeGreaterThanOrEqual(1);
      expect(report.fuel.replayed).toBe(report.fuel.recorded);
      // With a higher bar the candidate would not have relayed the insight.
      const changed = await kernel.replay(chain.id, { overlays: { 'cascade-propagator': built!.wasm! } });
      expect(changed.identical).toBe(false);
      expect(changed.firstDivergence).toMatchObject({ phase: 'event insight.detected', overlay: 'cascade-propagator', what: 'output' });
    } finally {
      await kernel.stop();
    }
  }, COMPILE_BUDGET_MS);

  it('answers host calls from the recording: the host function does not run, and a different query is reported', async () => {
    const overlay = (version: string, query: string): string =>
      `/* forge:manifest\n${JSON.stringify({ name: 'reader', version, phases: ['analysis'], capabilities: ['DATABASE_READ'] })}\n*/\n` +
      `import { input, ok, Value } from "${SDK_IMPORT}";\nimport { dbRead } from "${SDK_IMPORT}/graph";\n` +
      `export function run(text: string): string { const rows = dbRead(${JSON.stringify(query)}, Value.object()); return ok(Value.object().set("rows", rows)); }\n`;
    const sources = [overlay('1.0.0', 'MATCH (n) RETURN n.id AS id'), overlay('2.0.0', 'MATCH (m) RETURN m.id AS id')];
    const built = [];
    for (const [i, text] of sources.entries()) {
      const sub = join(dir, `reader-${i}`);
      const file = join(sub, 'reader.ts');
      rmSync(sub, { recursive: true, force: true });
      (await import('node:fs')).mkdirSync(sub, { recursive: true });
      writeFileSync(file, text);
      const [result] = await buildOverlays([file], { outDir: join(sub, 'out') });
      expect(result?.status, JSON.stringify(result?.error)).toBe('built');
      built.push(result!);
    }
    let served = 0;
    const dbRead: HostFunction = {
      name: 'db_read',
      capability: 'DATABASE_READ',
      async: true,
      params: ['string', 'string'],
      result: 'string',
      invoke: () => {
        served++;
        return Promise.resolve(JSON.stringify([{ id: `row-${served}` }]));
      },
    };
    // The phase may be cached, but a phase that asked the host something never is: its answer can change.
    const kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, hostFunctions: [dbRead], pipelines: { phases: { analysis: { cache: true } } } });
    try {
      await kernel.overlays.load(built[0]!.wasm!, { grant: ['DATABASE_READ'], mode: 'relaxed' });
      const run = kernel.pipelines.start({ capsule: GOOD_CAPSULE });
      expect(await run.done).toMatchObject({ status: 'completed', data: { analysis: { rows: [{ id: 'row-1' }] } } });
      expect(await kernel.pipelines.start({ capsule: GOOD_CAPSULE }).done).toMatchObject({ data: { analysis: { rows: [{ id: 'row-2' }] } } });
      served = 1;
      const [call] = (await kernel.journal!.read(run.id)).filter((e) => e.kind === 'run.call');
      expect(call).toMatchObject({ body: { host: [{ fn: 'db_read', args: ['MATCH (n) RETURN n.id AS id', '{}'], result: '[{"id":"row-1"}]' }] } });
      const report = await kernel.replay(run.id);
      expect(report.identical).toBe(true);
      expect(served).toBe(1);
      const shadow = await kernel.replay(run.id, { overlays: { reader: built[1]!.wasm! } });
      expect(shadow.firstDivergence).toMatchObject({ overlay: 'reader', what: 'host' });
      expect(String(shadow.firstDivergence?.replayed)).toContain('MATCH (m)');
      expect(served).toBe(1);
    } finally {
      await kernel.stop();
    }
  }, COMPILE_BUDGET_MS);

  it('replays an exported run on another kernel from its JSON Lines', async () => {
    const kernel = await examplesKernel();
    let lines: string;
    let id: string;
    try {
      const run = kernel.pipelines.start({ capsule: GOOD_CAPSULE });
      await run.done;
      id = run.id;
      lines = toJsonLines(await kernel.journal!.read(run.id));
    } finally {
      await kernel.stop();
    }
    const other = await examplesKernel();
    try {
      const { stream, entries } = fromJsonLines(lines);
      expect(stream).toBe(id);
      expect(await other.replay(stream, { entries })).toMatchObject({ identical: true });
      // A damaged export is refused with the entry named.
      const damaged = lines.split('\n');
      damaged[2] = '{"v":1,';
      expect(() => fromJsonLines(damaged.join('\n'))).toThrow(expect.objectContaining({ code: 'JOURNAL_CORRUPT', details: { stream: id, seq: 3 } }) as Error);
    } finally {
      await other.stop();
    }
  }, COMPILE_BUDGET_MS);

  it('does not re-run native overlays or calls that never ran in the sandbox, and says so', async () => {
    let nativeRuns = 0;
    const kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { trust: 10 } });
    try {
      await kernel.overlays.load({ manifest: { name: 'native', version: '1.0.0', phases: ['analysis'] }, exports: { run: () => (nativeRuns++, { ok: true, data: {} }) } }, { internal: true, trusted: true });
      const { bytes, manifest } = examples['security-validator'];
      await kernel.overlays.load(bytes, { manifest, grant: (manifest.capabilities as never[] | undefined) ?? [], mode: 'relaxed' });
      await kernel.overlays.load({ manifest: { name: 'picky', version: '1.0.0', phases: ['consensus'], trustRequired: 90 }, exports: { run: () => ({ ok: true, data: {} }) } }, { internal: true, trusted: true });
      const run = kernel.pipelines.start({ capsule: GOOD_CAPSULE });
      await run.done;
      expect(nativeRuns).toBe(1);
      const report = await kernel.replay(run.id);
      expect(nativeRuns).toBe(1);
      expect(report.skipped.map((s) => [s.overlay, s.reason])).toEqual(expect.arrayContaining([['native', expect.stringContaining('native') as string], ['picky', 'TRUST_INSUFFICIENT']]));
      expect(report.calls).toBe(1);
      expect(report.identical).toBe(true);
    } finally {
      await kernel.stop();
    }
  });

  it('refuses malformed replay requests with typed errors', async () => {
    const kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    try {
      await expect(kernel.replay('')).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      await expect(kernel.replay('run_missing')).rejects.toMatchObject({ code: 'RUN_NOT_FOUND' });
      await expect(kernel.replay('run_x', { overlays: [] as never })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      await expect(kernel.replay('run_x', { entries: 'x' as never })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      const notARun: JournalEntry[] = [{ v: 1, stream: 'run_x', seq: 1, kind: 'run.settled', at: 1, body: { status: 'completed', error: null } }];
      await expect(kernel.replay('run_x', { entries: notARun })).rejects.toMatchObject({ code: 'INVALID_JOURNAL_INPUT' });
      const noOverlays = [{ v: 1, stream: 'run_x', seq: 1, kind: 'run.started', at: 1, body: { input: {} } }] as unknown as JournalEntry[];
      await expect(kernel.replay('run_x', { entries: noOverlays })).rejects.toMatchObject({ code: 'JOURNAL_CORRUPT' });
    } finally {
      await kernel.stop();
    }
    const none = await createKernel({ logger: captureLogger().logger, cacheDir: false, journal: false });
    await expect(none.replay('run_x')).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
    await none.stop();
  });

  it('names the first differing JSON path', () => {
    expect(firstDifference({ a: 1, b: [1, 2] }, { a: 1, b: [1, 2] })).toBeUndefined();
    expect(firstDifference({ a: 1, b: [1, 2] }, { a: 1, b: [1, 3] })).toBe('$.b[1]');
    expect(firstDifference({ a: 1 }, { a: 1, 'x y': 2 })).toBe('$["x y"]');
    expect(firstDifference([1], [1, 2])).toBe('$[1]');
    expect(firstDifference({ a: null }, { a: {} })).toBe('$.a');
    expect(firstDifference(1, '1')).toBe('$');
  });
});
