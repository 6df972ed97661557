import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CAPABILITIES } from '../../src/wasm/abi.ts';
import { loadWasmOverlay, type OverlayEngine } from '../../src/wasm/engine.ts';
import type { HostFunction } from '../../src/wasm/host-functions.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { buildExamples, EXAMPLE_NAMES, GOOD_CAPSULE, LEAKY_CAPSULE, type ExampleName } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

const BIN = new URL('../../bin/forge-kernel.js', import.meta.url).pathname;
const writes: unknown[][] = [];
const dbWrite: HostFunction = {
  name: 'db_write',
  capability: 'DATABASE_WRITE',
  async: true,
  params: ['string'],
  result: 'string',
  invoke: (_context, args) => {
    writes.push(JSON.parse(String(args[0])) as unknown[]);
    return Promise.resolve('{"nodesCreated":1,"nodesDeleted":0,"relationshipsCreated":0,"relationshipsDeleted":0,"propertiesSet":4}');
  },
};

describe('example overlays', () => {
  const overlays = {} as Record<ExampleName, OverlayEngine>;
  let built: Awaited<ReturnType<typeof buildExamples>>;

  beforeAll(async () => {
    built = await buildExamples();
    for (const name of EXAMPLE_NAMES) {
      overlays[name] = await loadWasmOverlay(built[name].bytes, {
        manifest: built[name].manifest,
        grant: [...CAPABILITIES],
        mode: 'relaxed',
        cache: testCache,
        logger: captureLogger().logger,
        hostFunctions: [dbWrite],
      });
    }
  }, budget(120_000));
  afterAll(async () => {
    await Promise.all(Object.values(overlays).map((o) => o.close()));
  });

  const run = async (name: ExampleName, input: unknown) => overlays[name].call('run', input);

  describe('ingestion-normalizer', () => {
    it('normalizes a good capsule: whitespace, kind, tags and parents', async () => {
      const { output } = await run('ingestion-normalizer', { capsule: GOOD_CAPSULE });
      expect(output).toEqual({
        ok: true,
        data: {
          capsule: { ...GOOD_CAPSULE, kind: 'insight', content: 'Root cause of the latency bug: the database release pipeline.', tags: ['engineering', 'urgent'], parents: ['cap-40', 'cap-41'] },
          changes: 3,
        },
      });
    });

    it.each([
      [{}, 'capsule: missing'],
      [{ capsule: { ...GOOD_CAPSULE, id: '' } }, 'capsule.id'],
      [{ capsule: { ...GOOD_CAPSULE, kind: 'rumor' } }, 'capsule.kind'],
      [{ capsule: { ...GOOD_CAPSULE, content: '   ' } }, 'capsule.content'],
      [{ capsule: { ...GOOD_CAPSULE, content: 42 } }, 'capsule.content'],
      [{ capsule: { ...GOOD_CAPSULE, author: '' } }, 'capsule.author'],
      [{ capsule: { ...GOOD_CAPSULE, trust: 7 } }, 'capsule.trust'],
      [{ capsule: { ...GOOD_CAPSULE, tags: 'x' } }, 'capsule.tags'],
      [{ capsule: { ...GOOD_CAPSULE, parents: ['cap-42'] } }, 'capsule.parents'],
    ])('rejects a malformed capsule %j naming the field', async (input, field) => {
      const { output } = await run('ingestion-normalizer', input);
      expect(output).toMatchObject({ ok: false, error: { message: expect.stringContaining(field) as unknown } });
    });
  });

  describe('analysis-classifier', () => {
    it('scores words and word pairs into categories with a risk score', async () => {
      const { output } = await run('analysis-classifier', { capsule: GOOD_CAPSULE });
      expect(output).toEqual({ ok: true, data: { categories: [{ name: 'engineering', score: 8 }], top: 'engineering', risk: 0.08, words: 13 } });
    });
    it('rates a leaky capsule from an untrusted author as high risk', async () => {
      const { output } = (await run('analysis-classifier', { capsule: LEAKY_CAPSULE })) as { output: { data: { top: string; risk: number } } };
      expect(output.data.top).toBe('security');
      expect(output.data.risk).toBeGreaterThanOrEqual(0.6);
    });
  });

  describe('security-validator', () => {
    it('passes a clean capsule from a trusted author', async () => {
      const { output } = await run('security-validator', { capsule: GOOD_CAPSULE });
      expect(output).toEqual({ ok: true, data: { passed: true, secrets: 0, personalData: 0, trustOk: true, findings: [] } });
    });
    it('finds each secret and each kind of personal data, and the untrusted author', async () => {
      const { output } = (await run('security-validator', { capsule: LEAKY_CAPSULE })) as { output: { data: { passed: boolean; findings: { type: string }[] } } };
      expect(output.data.passed).toBe(false);
      expect(output.data.findings.map((f) => f.type).sort()).toEqual(['aws-access-key', 'card-number', 'email', 'low-trust-author', 'password', 'ssn']);
    });
    it('finds an e-mail address at the end of a sentence, and not a bare "@" or a dotless host', async () => {
      const types = async (content: string): Promise<string[]> => {
        const { output } = (await run('security-validator', { capsule: { ...GOOD_CAPSULE, content } })) as { output: { data: { findings: { type: string }[] } } };
        return output.data.findings.map((f) => f.type);
      };
      expect(await types('Write to ada@example.com.')).toEqual(['email']);
      expect(await types('Write to ada@example.com... or not.')).toEqual(['email']);
      expect(await types('Meet @ noon, or at ada@localhost.')).toEqual([]);
      expect(await types('A trailing at@.')).toEqual([]);
    });
    it('does not flag a 16-digit number that fails the Luhn check as a card', async () => {
      const { output } = (await run('security-validator', { capsule: { ...GOOD_CAPSULE, content: 'order 4111 1111 1111 1112' } })) as { output: { data: { findings: { type: string }[] } } };
      expect(output.data.findings.map((f) => f.type)).not.toContain('card-number');
    });
  });

  describe('governance-voter', () => {
    const clean = { passed: true, secrets: 0, personalData: 0 };
    it.each([
      [{ analysis: { risk: 0.1 }, validation: clean }, 'approve'],
      [{ analysis: { risk: 0.7 }, validation: clean }, 'escalate'],
      [{ analysis: { risk: 0.1 }, validation: { ...clean, personalData: 2 } }, 'escalate'],
      [{ analysis: { risk: 0.1 }, validation: { passed: false, secrets: 1 } }, 'reject'],
      [{ analysis: { risk: 0.5 }, validation: clean, policy: { escalateAbove: 0.6 } }, 'approve'],
    ])('votes on %j: %s', async (input, decision) => {
      const { output } = await run('governance-voter', input);
      expect(output).toMatchObject({ ok: true, data: { decision, needsDecision: decision === 'escalate' } });
    });
    it('refuses to vote without the analysis and validation results', async () => {
      expect((await run('governance-voter', { analysis: { risk: 0 } })).output).toMatchObject({ ok: false });
    });
  });

  describe('capsule-processor', () => {
    it('derives a store change and writes it when the run has a graph', async () => {
      writes.length = 0;
      const input = { capsule: GOOD_CAPSULE, consensus: { decision: 'approve' }, analysis: { top: 'engineering' }, context: { graph: true } };
      expect((await run('capsule-processor', input)).output).toEqual({
        ok: true,
        data: { op: 'store', capsuleId: 'cap-42', status: 'stored', category: 'engineering', written: true },
      });
      expect(writes).toEqual([[{ merge: 'Capsule', key: { id: 'cap-42' }, set: { kind: 'Insight', author: 'ada', category: 'engineering', status: 'stored' } }]]);
    });
    it('quarantines on reject, follows a human decision, and writes nothing without a graph', async () => {
      writes.length = 0;
      expect((await run('capsule-processor', { capsule: GOOD_CAPSULE, consensus: { decision: 'reject' } })).output).toMatchObject({ data: { op: 'quarantine', written: false } });
      const human = { capsule: GOOD_CAPSULE, consensus: { decision: 'escalate' }, decision: { approve: true, by: 'grace' } };
      expect((await run('capsule-processor', human)).output).toMatchObject({ data: { op: 'store' } });
      expect(writes).toEqual([]);
    });
    it('fails when consensus escalated and nobody decided', async () => {
      expect((await run('capsule-processor', { capsule: GOOD_CAPSULE, consensus: { decision: 'escalate' } })).output).toMatchObject({ ok: false });
    });
  });

  describe('cascade-propagator', () => {
    it('publishes an insight for a strong category and for an urgent capsule', async () => {
      const analysis = { top: 'engineering', categories: [{ name: 'engineering', score: 8 }] };
      const result = await run('cascade-propagator', { capsule: GOOD_CAPSULE, analysis });
      expect(result.output).toMatchObject({ ok: true, data: { propagated: 2 } });
      expect(result.events.map((e) => e.type)).toEqual(['insight.detected', 'insight.urgent']);
      expect(result.events[0]!.payload).toEqual({ capsuleId: 'cap-42', pattern: 'strong-engineering', category: 'engineering', strength: 8 });
    });
    it('relays an insight it receives on a cascade hop while it is still strong, weaker by one', async () => {
      const hop = (strength: number) => run('cascade-propagator', { event: { id: 'evt_1', type: 'insight.detected', source: 'kernel', payload: { capsuleId: 'cap-7', strength, cascadeId: 'csc_1' } } });
      const strong = await hop(4);
      expect(strong.output).toEqual({ ok: true, data: { propagated: 1, relayed: true } });
      expect(strong.events).toMatchObject([{ type: 'insight.detected', payload: { capsuleId: 'cap-7', pattern: 'relayed', strength: 3 } }]);
      const faint = await hop(2);
      expect(faint.output).toEqual({ ok: true, data: { propagated: 0, relayed: false } });
      expect(faint.events).toEqual([]);
    });
    it('publishes nothing for a weak, non-urgent capsule', async () => {
      const result = await run('cascade-propagator', { capsule: { ...GOOD_CAPSULE, tags: [] }, analysis: { top: 'finance', categories: [{ name: 'finance', score: 1 }] } });
      expect(result.events).toEqual([]);
    });
  });

  describe('lineage-tracker', () => {
    it('links the capsule to its parents and records an audit entry with a content digest', async () => {
      const result = await run('lineage-tracker', { capsule: GOOD_CAPSULE, analysis: {}, execution: { status: 'stored' } });
      expect(result.output).toMatchObject({
        ok: true,
        data: {
          lineage: [
            { from: 'cap-41', to: 'cap-42', relation: 'derived-from' },
            { from: 'cap-40', to: 'cap-42', relation: 'derived-from' },
          ],
          audit: { capsuleId: 'cap-42', status: 'stored', phases: ['analysis', 'execution'], contentDigest: expect.stringMatching(/^fnv1a:[0-9a-f]{8}$/) as unknown },
        },
      });
      expect(result.events.map((e) => e.type)).toEqual(['audit.recorded']);
    });
  });

  const reference = { capsule: GOOD_CAPSULE, analysis: { risk: 0.08, top: 'engineering', categories: [{ name: 'engineering', score: 8 }] }, validation: { passed: true, secrets: 0, personalData: 0 }, consensus: { decision: 'approve' } };

  it('burns the fuel pinned here for the reference capsule (deterministic)', async () => {
    const fuel: Record<string, number> = {};
    for (const name of EXAMPLE_NAMES) fuel[name] = (await run(name, reference)).fuelUsed;
    expect(fuel).toEqual(PINNED_FUEL);
  });

  it('burns the same pinned fuel in strict mode, in a worker', async () => {
    const fuel: Record<string, number> = {};
    for (const name of EXAMPLE_NAMES) {
      const strict = await loadWasmOverlay(built[name].bytes, { manifest: built[name].manifest, grant: [...CAPABILITIES], mode: 'strict', cache: testCache, logger: captureLogger().logger, hostFunctions: [dbWrite], poolSize: 1 });
      try {
        fuel[name] = (await strict.call('run', reference)).fuelUsed;
      } finally {
        await strict.close();
      }
    }
    expect(fuel).toEqual(PINNED_FUEL);
  });

  it('runs every example through forge-kernel call', async () => {
    const runs = await Promise.all(
      EXAMPLE_NAMES.map((name) =>
        promisify(execFile)(process.execPath, [BIN, 'call', built[name].wasm, 'run', '--input', JSON.stringify({ capsule: GOOD_CAPSULE, consensus: { decision: 'approve' }, analysis: { risk: 0.1 }, validation: { passed: true } }), '--json', '--mode', 'relaxed']),
      ),
    );
    for (const { stdout } of runs) expect(JSON.parse(stdout)).toMatchObject({ ok: true, output: { ok: true } });
  }, budget(120_000));
});

/** Fuel of each example's `run` on the reference input; a change here means the overlay or the meter changed. */
const PINNED_FUEL: Record<string, number> = {
  'ingestion-normalizer': 652_168,
  'analysis-classifier': 725_087,
  'security-validator': 469_345,
  'governance-voter': 382_254,
  'capsule-processor': 389_917,
  'cascade-propagator': 553_460,
  'lineage-tracker': 627_556,
};
