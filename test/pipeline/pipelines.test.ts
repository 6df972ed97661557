import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedClock } from 'xstate';
import type { BusEvent } from '../../src/bus/event.ts';
import { createKernel, type Kernel, type KernelOptions } from '../../src/kernel.ts';
import { PHASES, type Phase } from '../../src/manifest.ts';
import type { PipelineOptions } from '../../src/pipeline/pipelines.ts';
import { MemoryStore } from '../../src/store/memory-store.ts';
import type { NativeContext, NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { codeOf } from '../support/errors.ts';
import { until as waitUntil, budget } from '../support/wait.ts';

type Run = (input: Record<string, unknown>, context: NativeContext) => unknown;

/** A native overlay taking part in one phase. */
const overlay = (name: string, phase: Phase, run: Run, manifest: Record<string, unknown> = {}): NativeOverlay => ({
  manifest: { name, version: '1.0.0', phases: [phase], ...manifest },
  exports: { run: (input, context) => run(input as Record<string, unknown>, context) },
});

/** One overlay per phase, each recording its phase under its own name. */
const echo = (phase: Phase): NativeOverlay => overlay(`${phase}-echo`, phase, () => ({ ok: true, data: { [`${phase}Seen`]: true } }));

/** Lets promises and the kernel's immediate work run (no timers: the pipeline's timers are on the SimulatedClock). */
const flush = async (rounds = 20): Promise<void> => {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
};
const until = (condition: () => boolean): Promise<void> => waitUntil(condition, 'the runs to get there', { everyMs: 0 });

describe('kernel.pipelines', () => {
  let kernel: Kernel | undefined;
  let events: BusEvent[];
  afterEach(async () => {
    await kernel?.stop();
    kernel = undefined;
  });

  async function start(overlays: NativeOverlay[], pipelines: PipelineOptions = {}, options: Partial<KernelOptions> = {}): Promise<Kernel> {
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines, ...options });
    events = [];
    kernel.bus.subscribe({ patterns: ['pipeline.*'] }, (event) => void events.push(event));
    for (const o of overlays) await kernel.overlays.load(o, { internal: true, trusted: true });
    return kernel;
  }

  it('walks the seven phases in order, each overlay output merged under its phase, and reports fuel and durations', async () => {
    const k = await start(PHASES.map(echo));
    const states: string[] = [];
    const run = k.pipelines.start({ capsule: { id: 'c1' } }, { correlationId: 'corr-1' });
    run.actor.subscribe((s) => states.push(typeof s.value === 'string' ? s.value : JSON.stringify(s.value)));
    const result = await run.done;
    expect(result.status).toBe('completed');
    expect(result.phases.map((p) => [p.phase, p.status])).toEqual(PHASES.map((p) => [p, 'completed']));
    for (const phase of PHASES) expect(result.data[phase]).toEqual({ [`${phase}Seen`]: true });
    expect(result.data.capsule).toEqual({ id: 'c1' });
    expect(states).toEqual([...PHASES.slice(1), 'completed']);
    expect(Object.keys(result.fuel).sort()).toEqual(PHASES.map((p) => `${p}-echo`).sort());
    await flush();
    expect(events.map((e) => e.type)).toEqual(['pipeline.started', ...PHASES.map(() => 'pipeline.phase_completed'), 'pipeline.completed']);
    expect(new Set(events.map((e) => e.correlationId))).toEqual(new Set(['corr-1']));
    expect(k.pipelines.history().map((r) => r.id)).toEqual([run.id]);
    expect(k.pipelines.get(run.id)?.status).toBe('completed');
  });

  it('merges a parallel phase in overlay order, whatever order the overlays finish in, and hides partial results from each other', async () => {
    const seen: unknown[] = [];
    const slow = overlay('a-slow', 'analysis', async (input) => {
      seen.push(input.analysis);
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      return { ok: true, data: { winner: 'a-slow', a: 1 } };
    });
    const fast = overlay('b-fast', 'analysis', (input) => {
      seen.push(input.analysis);
      return { ok: true, data: { winner: 'b-fast', b: 2 } };
    });
    const k = await start([slow, fast]);
    const result = await k.pipelines.start({ capsule: { id: 'c' } }).done;
    expect(result.data.analysis).toEqual({ winner: 'b-fast', a: 1, b: 2 });
    expect(seen).toEqual([undefined, undefined]);
  });

  it('lets later overlays of a sequential phase see the earlier ones, and a phase may hand on a new capsule', async () => {
    const first = overlay('first', 'ingestion', (input) => ({ ok: true, data: { capsule: { ...(input.capsule as object), normalized: true }, step: 1 } }));
    const second = overlay('second', 'ingestion', (input) => ({ ok: true, data: { step: ((input.ingestion as { step: number }).step ?? 0) + 1 } }));
    const k = await start([first, second]);
    const result = await k.pipelines.start({ capsule: { id: 'c' } }).done;
    expect(result.data.ingestion).toMatchObject({ step: 2 });
    expect(result.data.capsule).toEqual({ id: 'c', normalized: true });
  });

  it('gives handlers a frozen view of the data, validates their results, and isolates hooks that throw', async () => {
    const log = captureLogger();
    const calls: string[] = [];
    kernel = await createKernel({
      logger: log.logger,
      cacheDir: false,
      pipelines: {
        phases: {
          analysis: {
            handler: (data) => {
              (data as Record<string, unknown>).capsule = 'overwritten';
              return { never: true };
            },
          },
          validation: { handler: () => [1, 2, 3], required: false },
          execution: { handler: (data) => Promise.resolve({ sawCapsule: (data.capsule as { id: string }).id }) },
        },
        hooks: {
          prePhase: (phase) => {
            calls.push(`pre:${phase}`);
            throw new Error('pre hook broke');
          },
          postPhase: () => Promise.reject(new Error('post hook broke')),
          completion: () => {
            throw new Error('completion hook broke');
          },
        },
      },
    });
    const result = await kernel.pipelines.start({ capsule: { id: 'c' } }, { skip: [] }).done;
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ code: 'PHASE_FAILED', phase: 'analysis' });
    expect(result.phases.find((p) => p.phase === 'analysis')?.overlays[0]).toMatchObject({ name: 'handler:analysis', status: 'failed' });
    expect(result.data.capsule).toEqual({ id: 'c' });
    expect(calls).toEqual(['pre:analysis']);
    await flush();
    expect(log.lines().filter((l) => l.msg === 'a pipeline hook failed').map((l) => l.hook)).toEqual(expect.arrayContaining(['prePhase', 'postPhase', 'completion']));

    const k2 = await createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: { phases: { validation: { handler: () => [1, 2, 3], required: false }, execution: { handler: (data) => Promise.resolve({ sawCapsule: (data.capsule as { id: string }).id }) } } } });
    try {
      const second = await k2.pipelines.start({ capsule: { id: 'c2' } }).done;
      expect(second.status).toBe('completed');
      expect(second.warnings).toEqual([expect.stringContaining('handler:validation (INVALID_HANDLER_RESULT: a phase handler must return a JSON object or nothing)')]);
      expect(second.data.execution).toEqual({ sawCapsule: 'c2' });
    } finally {
      await k2.stop();
    }
  });

  it('stops a required sequential phase at its first failing overlay: the rest do not run, and say so', async () => {
    let secondRan = false;
    const first = overlay('strict-check', 'validation', () => ({ ok: false, error: { message: 'capsule.trust must be 0 to 1' } }));
    const second = overlay('late-check', 'validation', () => ((secondRan = true), { ok: true }));
    const k = await start([echo('ingestion'), first, second]);
    const result = await k.pipelines.start({ capsule: { id: 'c' } }, { phases: { validation: { required: true, parallel: false } } }).done;
    expect(result.status).toBe('failed');
    expect(secondRan).toBe(false);
    expect(result.phases.find((p) => p.phase === 'validation')?.overlays.map((o) => [o.name, o.status, o.code])).toEqual([
      ['strict-check', 'failed', 'OVERLAY_ERROR'],
      ['late-check', 'not-run', 'NOT_RUN'],
    ]);
    // The overlay's own reason reaches the run's error, not only its code.
    expect(result.error?.message).toBe('Required phase validation failed: strict-check (OVERLAY_ERROR: capsule.trust must be 0 to 1).');
  });

  it('lets the phase timer alone decide a phase timeout: an overlay cut by it is a timeout, never its own fault', async () => {
    // Real time: two overlays of 45 ms in a phase of 60 ms put the second call's end at the phase deadline.
    const slow = (name: string) => overlay(name, 'analysis', () => new Promise((resolve) => setTimeout(() => resolve({ ok: true }), 45)));
    const k = await start([slow('slow-a'), slow('slow-b')], { phases: { analysis: { timeoutMs: 60, parallel: false, required: false } } });
    for (let i = 0; i < 20; i++) {
      const result = await k.pipelines.start({ capsule: { id: `c${i}` } }).done;
      for (const outcome of result.phases.find((p) => p.phase === 'analysis')?.overlays ?? []) {
        expect([outcome.name, outcome.status, outcome.code ?? null]).not.toEqual([outcome.name, 'failed', 'DEADLINE_EXCEEDED']);
        if (outcome.status !== 'ok') expect([outcome.status, outcome.code]).toEqual(['timeout', 'PHASE_TIMEOUT']);
      }
    }
    for (const name of ['slow-a', 'slow-b']) expect(k.overlays.history.list(name).filter((h) => h.outcome === 'fault')).toEqual([]);
  }, budget(60_000));

  it('lets the phase timer decide when the overlay’s own deadline equals the phase’s (the defaults: 5 s and 5 s)', async () => {
    // The manifest's timeoutMs is the phase's timeoutMs, and the overlay outlasts both: two clocks for one instant.
    const hung = overlay('hung', 'analysis', () => new Promise((resolve) => setTimeout(() => resolve({ ok: true }), 200)), { timeoutMs: 60 });
    const k = await start([hung], { phases: { analysis: { timeoutMs: 60, required: false } } });
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => k.pipelines.start({ capsule: { id: `c${i}` } }).done));
    const outcomes = results.map((r) => r.phases.find((p) => p.phase === 'analysis')?.overlays[0]).map((o) => `${o?.status}/${o?.code}`);
    expect(new Set(outcomes)).toEqual(new Set(['timeout/PHASE_TIMEOUT']));
    expect(k.overlays.history.list('hung').filter((h) => h.outcome === 'fault')).toEqual([]);
    expect(k.overlays.get('hung')?.breaker).toBe('closed');
  }, budget(60_000));

  it('keeps an overlay’s own, clearly shorter deadline: that timeout is the overlay’s fault (DEADLINE_EXCEEDED)', async () => {
    const hung = overlay('short-fuse', 'analysis', () => new Promise((resolve) => setTimeout(() => resolve({ ok: true }), 2_000)), { timeoutMs: 50 });
    const k = await start([hung], { phases: { analysis: { timeoutMs: 1_500, required: false } } });
    const result = await k.pipelines.start({ capsule: { id: 'c' } }).done;
    expect(result.phases.find((p) => p.phase === 'analysis')?.overlays[0]).toMatchObject({ status: 'failed', code: 'DEADLINE_EXCEEDED' });
  }, budget(60_000));

  it('fails the run when a required phase fails, naming the overlay; an optional phase only warns', async () => {
    const broken = overlay('broken-voter', 'consensus', () => ({ ok: false, error: { message: 'no quorum' } }));
    const k = await start([echo('ingestion'), broken, echo('settlement')]);
    const optional = await k.pipelines.start({ capsule: { id: 'c' } }).done;
    expect(optional.status).toBe('completed');
    expect(optional.warnings).toEqual(['Optional phase consensus failed: broken-voter (OVERLAY_ERROR: no quorum).']);
    expect(optional.phases.find((p) => p.phase === 'consensus')?.overlays[0]).toMatchObject({ name: 'broken-voter', status: 'failed', code: 'OVERLAY_ERROR', message: 'no quorum' });

    const required = await k.pipelines.start({ capsule: { id: 'c' } }, { phases: { consensus: { required: true } } }).done;
    expect(required.status).toBe('failed');
    expect(required.error).toEqual({ code: 'PHASE_FAILED', message: 'Required phase consensus failed: broken-voter (OVERLAY_ERROR: no quorum).', phase: 'consensus' });
    expect(required.phases.map((p) => p.phase)).toEqual(['ingestion', 'analysis', 'validation', 'consensus']);
    await flush();
    expect(events.filter((e) => e.type === 'pipeline.failed').map((e) => (e.payload as { runId: string }).runId)).toEqual([required.id]);
  });

  it('records a timed-out overlay by name when its phase deadline passes (SimulatedClock)', async () => {
    const clock = new SimulatedClock();
    let aborted = false;
    const hung = overlay('hung', 'analysis', (_input, context) => new Promise((resolve) => context.signal.addEventListener('abort', () => ((aborted = true), resolve({ ok: true }))))); // never finishes on its own
    const k = await start([hung, overlay('quick', 'analysis', () => ({ ok: true, data: { quick: true } }))], { clock });
    const run = k.pipelines.start({ capsule: { id: 'c' } });
    await until(() => run.status === 'analysis');
    await flush();
    clock.increment(10_000);
    const result = await run.done;
    expect(aborted).toBe(true);
    expect(result.status).toBe('failed');
    const analysis = result.phases.find((p) => p.phase === 'analysis')!;
    expect(analysis.overlays.map((o) => [o.name, o.status, o.code ?? null])).toEqual([
      ['hung', 'timeout', 'PHASE_TIMEOUT'],
      ['quick', 'ok', null],
    ]);
    expect(result.error?.message).toContain('hung (PHASE_TIMEOUT: Phase analysis did not finish within');
  });

  it('retries a failing overlay with backoff: execution once by default', async () => {
    const clock = new SimulatedClock();
    let attempts = 0;
    const flaky = overlay('flaky', 'execution', (input) => (++attempts === 1 || input.broken === true ? { ok: false, error: { message: 'transient' } } : { ok: true, data: { done: true } }));
    const k = await start([flaky], { clock, random: () => 0.5 });
    const run = k.pipelines.start({ capsule: { id: 'c' } });
    await until(() => attempts === 1);
    await flush();
    expect(run.status).toBe('execution');
    clock.increment(99);
    await flush();
    expect(attempts).toBe(1);
    clock.increment(1);
    const result = await run.done;
    expect(result.status).toBe('completed');
    expect(result.phases.find((p) => p.phase === 'execution')?.overlays[0]).toMatchObject({ name: 'flaky', status: 'ok', attempts: 2 });

    const spent = await k.pipelines.start({ capsule: { id: 'c' }, broken: true }, { phases: { execution: { retries: 0 } } }).done;
    expect(spent.status).toBe('failed');
    expect(spent.phases.find((p) => p.phase === 'execution')?.overlays[0]).toMatchObject({ attempts: 1, code: 'OVERLAY_ERROR' });
  });

  it('skips phases per run, disabled phases, and conditional phases whose predicate is false', async () => {
    const k = await start(PHASES.map(echo), { phases: { propagation: { when: (data) => (data.capsule as { spread?: boolean }).spread === true }, settlement: { enabled: false } } });
    const result = await k.pipelines.start({ capsule: { id: 'c' } }, { skip: ['analysis'] }).done;
    expect(result.status).toBe('completed');
    expect(result.phases.filter((p) => p.status === 'skipped').map((p) => [p.phase, p.reason])).toEqual([
      ['analysis', 'skipped by the run'],
      ['propagation', 'condition not met'],
      ['settlement', 'disabled'],
    ]);
    const spread = await k.pipelines.start({ capsule: { id: 'c', spread: true } }).done;
    expect(spread.data.propagation).toEqual({ propagationSeen: true });
  });

  it("keeps each run's configuration its own: one run's overrides never reach another", async () => {
    const seenTimeouts: number[] = [];
    const k = await start([echo('ingestion')], { hooks: { prePhase: () => undefined } });
    const a = k.pipelines.start({ capsule: { id: 'a' } }, { phases: { ingestion: { timeoutMs: 1 , retries: 3 } } });
    const b = k.pipelines.start({ capsule: { id: 'b' } });
    const configOf = (run: typeof a) => run.actor.getSnapshot().context.config;
    seenTimeouts.push(configOf(a).phases.ingestion.timeoutMs, configOf(b).phases.ingestion.timeoutMs);
    expect(seenTimeouts).toEqual([1, 3_000]);
    expect(Object.isFrozen(configOf(a).phases.ingestion)).toBe(true);
    expect(() => {
      (configOf(b).phases.ingestion as { timeoutMs: number }).timeoutMs = 5;
    }).toThrow(TypeError);
    await Promise.all([a.done, b.done]);
    const c = k.pipelines.start({ capsule: { id: 'c' } });
    expect(configOf(c).phases.ingestion).toMatchObject({ timeoutMs: 3_000, retries: 0, overlays: ['ingestion-echo'] });
    await c.done;
  });

  it('sends a run to the overlays loaded when it starts: one loaded later joins later runs, one unloaded leaves them', async () => {
    const k = await start([echo('analysis')]);
    expect((await k.pipelines.start({ capsule: { id: 'a' } }).done).data.validation).toBeUndefined();
    await k.overlays.load(echo('validation'), { internal: true, trusted: true });
    expect((await k.pipelines.start({ capsule: { id: 'b' } }).done).data.validation).toEqual({ validationSeen: true });
    await k.overlays.unload('analysis-echo');
    const after = await k.pipelines.start({ capsule: { id: 'c' } }).done;
    expect(after.phases.find((p) => p.phase === 'analysis')).toMatchObject({ status: 'skipped', reason: 'nothing to run' });
  });

  describe('consensus pause and resume', () => {
    const voter = (needsDecision: boolean) => overlay('voter', 'consensus', () => ({ ok: true, data: { decision: needsDecision ? 'escalate' : 'approve', needsDecision } }));
    const processor = overlay('processor', 'execution', (input) => ({ ok: true, data: { approved: (input.decision as { approve?: boolean } | undefined)?.approve ?? null } }));

    it('waits for a decision with its snapshot saved before the pause is announced, then continues with it', async () => {
      const store = new MemoryStore();
      const k = await start([voter(true), processor], {}, { store });
      const savedWhenAnnounced: (string | undefined)[] = [];
      k.bus.subscribe({ types: ['pipeline.paused'] }, async (event) => {
        savedWhenAnnounced.push((await store.loadRunSnapshot((event.payload as { runId: string }).runId))?.status);
      });
      const run = k.pipelines.start({ capsule: { id: 'c' } });
      await until(() => events.some((e) => e.type === 'pipeline.paused'));
      await flush();
      expect(run.status).toBe('awaitingDecision');
      expect(savedWhenAnnounced).toEqual(['awaitingDecision']);
      expect(k.pipelines.stats()).toMatchObject({ active: 0, waiting: 1 });

      await expect(run.resume()).rejects.toMatchObject({ code: 'INVALID_DECISION' });
      await expect(run.resume({ decision: 'maybe', by: 'grace' })).rejects.toMatchObject({ code: 'INVALID_DECISION' });
      await expect(run.resume({ decision: 'approve', by: '' })).rejects.toMatchObject({ code: 'INVALID_DECISION' });
      expect(run.status).toBe('awaitingDecision');

      await run.resume({ decision: 'approve', by: 'grace', reason: 'reviewed' });
      const result = await run.done;
      expect(result.status).toBe('completed');
      expect(result.decision).toMatchObject({ approve: true, by: 'grace', reason: 'reviewed' });
      expect(result.data.execution).toEqual({ approved: true });
      expect(await store.loadRunSnapshot(run.id)).toBeUndefined();
      expect(await store.listAudit({ runId: run.id })).toMatchObject([{ capsuleId: 'c', decision: 'approve' }]);
      await flush();
      expect(events.map((e) => e.type)).toContain('pipeline.resumed');
      await expect(run.resume({ decision: 'approve', by: 'grace' })).rejects.toMatchObject({ code: 'RUN_FINISHED' });
    });

    it('does not pause when consensus needs no decision', async () => {
      const k = await start([voter(false), processor]);
      const result = await k.pipelines.start({ capsule: { id: 'c' } }).done;
      expect(result).toMatchObject({ status: 'completed', decision: null });
    });

    it('fails the run at its decision deadline, re-armed from the stored deadline after a restore', async () => {
      const clock = new SimulatedClock();
      clock.set(1_000);
      const store = new MemoryStore();
      const k = await start([voter(true), processor], { clock, decisionTimeoutMs: 60_000 }, { store });
      const run = k.pipelines.start({ capsule: { id: 'c' } });
      await until(() => run.status === 'awaitingDecision');
      await flush();
      await k.stop();
      kernel = undefined;
      expect((await store.loadRunSnapshot(run.id))?.status).toBe('awaitingDecision');

      clock.set(41_000);
      const k2 = await start([voter(true), processor], { clock, decisionTimeoutMs: 60_000 }, { store });
      const [restored] = await k2.pipelines.restore();
      expect(restored?.id).toBe(run.id);
      expect(restored?.status).toBe('awaitingDecision');
      clock.increment(19_999);
      await flush();
      expect(restored?.status).toBe('awaitingDecision');
      clock.increment(1);
      const result = await restored!.done;
      expect(result).toMatchObject({ status: 'failed', error: { code: 'DECISION_TIMEOUT' } });
    });

    it('resumes by id a run that lives only in the store', async () => {
      const store = new MemoryStore();
      const k = await start([voter(true), processor], {}, { store });
      const run = k.pipelines.start({ capsule: { id: 'c' } });
      await until(() => run.status === 'awaitingDecision');
      await flush();
      await k.stop();
      const k2 = await start([voter(true), processor], {}, { store });
      await expect(k2.pipelines.resume('run_missing', { decision: 'approve', by: 'x' })).rejects.toMatchObject({ code: 'RUN_NOT_FOUND' });
      const resumed = await k2.pipelines.resume(run.id, { decision: 'reject', by: 'grace' });
      const result = await resumed.done;
      expect(result).toMatchObject({ status: 'completed', data: { execution: { approved: false } } });
    });
  });

  it('pauses between phases on request and resumes where it stopped', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const k = await start([overlay('gated', 'analysis', async () => (await gate, { ok: true })), echo('validation')]);
    const run = k.pipelines.start({ capsule: { id: 'c' } });
    await until(() => run.status === 'analysis');
    const paused = run.pause();
    release();
    await paused;
    expect(run.status).toBe('paused');
    expect(run.view().phases.map((p) => p.phase)).toEqual(['ingestion', 'analysis']);
    await expect(run.resume({ decision: 'approve', by: 'x' })).rejects.toMatchObject({ code: 'INVALID_DECISION' });
    await run.resume();
    const result = await run.done;
    expect(result.status).toBe('completed');
    expect(result.phases.map((p) => p.phase)).toEqual([...PHASES]);
  });

  it('cancels through an AbortSignal that reaches the overlay call in flight', async () => {
    let signalled = false;
    const k = await start([overlay('waiter', 'validation', (_input, context) => new Promise((resolve) => context.signal.addEventListener('abort', () => ((signalled = true), resolve({ ok: true })))))]);
    const run = k.pipelines.start({ capsule: { id: 'c' } });
    await until(() => run.status === 'validation');
    await flush();
    const result = await run.cancel('operator said stop');
    expect(signalled).toBe(true);
    expect(result.status).toBe('cancelled');
    expect(result.error).toEqual({ code: 'CANCELLED', message: 'operator said stop' });
    expect(result.phases.map((p) => p.phase)).toEqual(['ingestion', 'analysis']);
    await flush();
    expect(events.at(-1)?.type).toBe('pipeline.cancelled');
    await expect(run.cancel()).rejects.toMatchObject({ code: 'RUN_FINISHED' });
    expect(k.pipelines.stats()).toMatchObject({ cancelled: 1, active: 0 });
  });

  it('caps active runs with a bounded queue, and refuses past it with PIPELINE_BUSY', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const k = await start([overlay('gated', 'ingestion', async () => (await gate, { ok: true }))], { maxActiveRuns: 1, maxQueuedRuns: 1 });
    const first = k.pipelines.start({ capsule: { id: '1' } });
    const second = k.pipelines.start({ capsule: { id: '2' } });
    expect(second.status).toBe('queued');
    expect(() => k.pipelines.start({ capsule: { id: '3' } })).toThrow(expect.objectContaining({ code: 'PIPELINE_BUSY' }) as Error);
    expect(k.pipelines.stats()).toMatchObject({ active: 1, queued: 1 });
    release();
    expect((await first.done).status).toBe('completed');
    expect((await second.done).status).toBe('completed');
    expect(k.pipelines.active()).toEqual([]);
  });

  it('keeps a bounded history and per-phase statistics', async () => {
    const k = await start([echo('ingestion'), overlay('sometimes', 'analysis', (input) => (input.fail === true ? { ok: false } : { ok: true }))], { historyLimit: 2 });
    for (const fail of [false, true, false]) await k.pipelines.start({ capsule: { id: 'c' }, fail }).done;
    expect(k.pipelines.history().map((r) => r.status)).toEqual(['failed', 'completed']);
    const stats = k.pipelines.stats();
    expect(stats).toMatchObject({ started: 3, completed: 2, failed: 1 });
    expect(stats.phases.analysis).toMatchObject({ runs: 3, completed: 2, failed: 1 });
    expect(stats.phases.analysis.successRate).toBeCloseTo(2 / 3);
    expect(stats.phases.ingestion.p95Ms).toBeGreaterThanOrEqual(stats.phases.ingestion.p50Ms);
    expect(stats.phases.consensus).toMatchObject({ runs: 2, skipped: 2, successRate: 1 });
  });

  it('continues a checkpointed run from the phase after its last checkpoint when a new kernel restores it', async () => {
    const store = new MemoryStore();
    const ran: string[] = [];
    const tracked = (phase: Phase) => overlay(`${phase}-t`, phase, () => (ran.push(phase), { ok: true, data: { [phase]: true } }));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const k = await start([...PHASES.filter((p) => p !== 'consensus').map(tracked), overlay('slow-vote', 'consensus', async () => (await gate, ran.push('consensus'), { ok: true }))], { checkpoints: true }, { store });
    const run = k.pipelines.start({ capsule: { id: 'c' } });
    await until(() => run.status === 'consensus');
    const stopping = k.stop();
    release();
    await stopping;
    kernel = undefined;
    expect((await run.done).status).toBe('interrupted');
    expect(ran).toEqual(['ingestion', 'analysis', 'validation', 'consensus']);

    ran.length = 0;
    const k2 = await start([...PHASES.filter((p) => p !== 'consensus').map(tracked), overlay('slow-vote', 'consensus', () => (ran.push('consensus'), { ok: true }))], { checkpoints: true }, { store });
    const [restored] = await k2.pipelines.restore();
    const result = await restored!.done;
    expect(result.status).toBe('completed');
    expect(ran).toEqual(['execution', 'propagation', 'settlement']);
    expect(result.phases.map((p) => p.phase)).toEqual([...PHASES]);
    expect(await store.listRunSnapshots()).toEqual([]);
  });

  describe('malformed input', () => {
    it.each([
      ['null', null],
      ['an array', [1]],
      ['a string', 'capsule'],
      ['a cycle', (() => {
        const a: Record<string, unknown> = {};
        a.self = a;
        return a;
      })()],
      ['a BigInt', { n: 1n }],
    ])('refuses %s as input with INVALID_PIPELINE_INPUT, starting nothing', async (_name, input) => {
      const k = await start([]);
      expect(await codeOf(() => k.pipelines.start(input))).toBe('INVALID_PIPELINE_INPUT');
      expect(k.pipelines.stats().started).toBe(0);
    });

    it.each([
      ['a non-object', 'fast'],
      ['an unknown option', { speed: 'max' }],
      ['an unknown phase to skip', { skip: ['dreaming'] }],
      ['an unknown phase', { phases: { dreaming: {} } }],
      ['a negative timeout', { phases: { analysis: { timeoutMs: -1 } } }],
      ['fractional retries', { phases: { analysis: { retries: 1.5 } } }],
      ['a non-boolean flag', { phases: { analysis: { parallel: 'yes' } } }],
      ['code in a run', { phases: { analysis: { handler: () => ({}) } } }],
      ['overlays that are not names', { phases: { analysis: { overlays: [1] } } }],
      ['trust out of range', { trust: 101 }],
      ['a bad decision deadline', { decisionTimeoutMs: 0 }],
    ])('refuses %s in run options with INVALID_PIPELINE_CONFIG', async (_name, options) => {
      const k = await start([]);
      expect(await codeOf(() => k.pipelines.start({ capsule: {} }, options as never))).toBe('INVALID_PIPELINE_CONFIG');
    });

    it.each([
      ['an unknown phase', { phases: { dreaming: {} } }],
      ['a handler that is not a function', { phases: { analysis: { handler: 'run' } } }],
      ['an unknown hook', { hooks: { onBoot: () => undefined } }],
      ['a zero active limit', { maxActiveRuns: 0 }],
      ['trust out of range', { trust: -1 }],
    ])('refuses a kernel with %s in its pipeline options', async (_name, pipelines) => {
      await expect(createKernel({ logger: captureLogger().logger, cacheDir: false, pipelines: pipelines as never })).rejects.toMatchObject({ code: 'INVALID_PIPELINE_CONFIG' });
    });

    it('records an overlay that returns malformed output as a failure by name', async () => {
      const k = await start([overlay('garbled', 'ingestion', () => ({ ok: true, data: [1, 2] })), overlay('mute', 'ingestion', () => 42)]);
      const result = await k.pipelines.start({ capsule: {} }, { phases: { ingestion: { required: false } } }).done;
      expect(result.phases[0]?.overlays.map((o) => [o.name, o.code])).toEqual([
        ['garbled', 'INVALID_OUTPUT'],
        ['mute', 'INVALID_OUTPUT'],
      ]);
    });

    it('refuses to start after the kernel stopped', async () => {
      const k = await start([]);
      await k.stop();
      kernel = undefined;
      expect(await codeOf(() => k.pipelines.start({ capsule: {} }))).toBe('PIPELINES_STOPPED');
    });
  });
});
