import { buildExampleOverlays } from '../build/examples.ts';
import { createKernel, type Kernel, type StoreOption } from '../kernel.ts';
import type { Logger } from '../logger.ts';
import { PHASES, type Phase } from '../manifest.ts';
import type { PipelineRun, RunResult } from '../pipeline/pipelines.ts';
import { demoCapsule, faultyEnricher } from './workload.ts';

/** Capsules the demo streams unless told otherwise: enough to see every path, done in seconds. */
export const DEFAULT_DEMO_CAPSULES = 300;
/** How long a paused run waits before the demo decides on it (ms), when nobody decides in the inspector. */
const AUTO_DECISION_MS = 250;
/** The faulty overlay's breaker: trips after 3 faults, probes after 300 ms (no jitter, so the demo is brisk). */
const DEMO_BREAKER = { consecutiveFailures: 3, resetTimeoutMs: 300, maxResetTimeoutMs: 1_000, jitter: 0 };
/** Longest the demo waits for one step of the breaker drill or for the bus to drain (ms). */
const STEP_TIMEOUT_MS = 10_000;

export interface DemoOptions {
  capsules?: number;
  store?: StoreOption;
  /** Serve the inspector; paused runs then wait for a person to decide on the page. */
  inspect?: { port?: number; host?: string; token?: string };
  /** Runs in flight at once. */
  concurrency?: number;
  /** Built overlays to use instead of the examples. */
  overlaysDir?: string;
  logger?: Logger;
  onProgress?: (settled: number, total: number) => void;
  onInspectorUrl?: (url: string) => void;
}

export interface DemoSummary {
  capsules: number;
  /** Time of the runs, from the first to the last (ms); building and loading the overlays is `setupMs`. */
  durationMs: number;
  setupMs: number;
  runsPerSecond: number;
  store: 'memory' | 'neo4j';
  runs: { completed: number; failed: number; cancelled: number };
  decisions: { paused: number; approved: number; rejected: number; decidedBy: 'demo' | 'inspector' };
  phases: Record<Phase, { runs: number; successRate: number; p50Ms: number; p95Ms: number }>;
  /** Fuel per overlay over every run (instructions). */
  fuel: Record<string, number>;
  /** Chains end completed, stopped (a cycle or a spent hop budget, the reason in `stoppedBy`) or expired. */
  cascades: { started: number; completed: number; stopped: number; stoppedBy: Record<string, number>; expired: number; hops: number; longest: string[] };
  deadLetters: { total: number; retried: number; remaining: number };
  breaker: { overlay: string; transitions: { type: string; atMs: number }[]; tripped: boolean; recovered: boolean };
}

const until = async (condition: () => boolean, what: string): Promise<void> => {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`demo: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

/**
 * The main job: a kernel with the example overlays streams capsules through the seven-phase pipeline, a faulty
 * overlay trips its breaker and recovers, insights spread as cascade chains, and runs that need a human wait at
 * consensus until someone (the demo after a short wait, or a person in the inspector) decides.
 */
export async function runDemo(options: DemoOptions = {}): Promise<{ summary: DemoSummary; kernel: Kernel }> {
  const total = options.capsules ?? DEFAULT_DEMO_CAPSULES;
  if (!Number.isInteger(total) || total < 1) throw new RangeError('capsules must be a positive integer');
  const setupStarted = performance.now();
  const overlaysDir = options.overlaysDir ?? (await buildExampleOverlays());
  const kernel = await createKernel({
    logger: options.logger ?? { level: 'silent' },
    ...(options.store === undefined ? {} : { store: options.store }),
    inspect: options.inspect !== undefined,
    pipelines: { maxActiveRuns: 16 },
    bus: { retryDelayMs: 50 },
  });
  await kernel.overlays.loadDirectory(overlaysDir, { grant: 'declared', mode: 'relaxed' });
  let failing = false;
  const enricher = await kernel.overlays.load(faultyEnricher(() => failing), { internal: true, trusted: true, breaker: DEMO_BREAKER });
  const transitions: { type: string; atMs: number }[] = [];
  if (options.inspect !== undefined) options.onInspectorUrl?.((await kernel.inspector.listen(options.inspect)).url);
  // The clock of the runs starts once the overlays are built and loaded: set-up is reported on its own.
  const started = performance.now();
  const setupMs = Math.round(started - setupStarted);
  kernel.overlays.on('breaker', (event: { overlayId: string; type: string }) => {
    if (event.overlayId === enricher.id && event.type !== 'reject') transitions.push({ type: event.type, atMs: Math.round(performance.now() - started) });
  });

  // Decisions: the demo decides after a short wait, alternating approve and reject, unless a person does it.
  const decisions = { paused: 0, approved: 0, rejected: 0 };
  const pausedRuns = new Map<string, () => void>();
  kernel.bus.subscribe({ name: 'demo-decisions', types: ['pipeline.paused'] }, (event) => {
    const { runId, reason } = event.payload as { runId: string; reason: string };
    if (reason !== 'decision') return;
    decisions.paused++;
    pausedRuns.get(runId)?.();
    if (options.inspect !== undefined) return;
    const decision = decisions.paused % 2 === 1 ? 'approve' : 'reject';
    setTimeout(() => {
      kernel.pipelines.resume(runId, { decision, by: 'demo', reason: 'decided automatically by the demo' }).catch((err: unknown) => kernel.logger.warn({ err, runId }, 'demo decision failed'));
    }, AUTO_DECISION_MS);
  });

  // The breaker drill: the faulty overlay fails, its breaker opens, an insight meant for it is dead-lettered; once it
  // is healthy again the breaker's probe succeeds and the dead letter is delivered on retry.
  failing = true;
  const firstChain = await kernel.cascades.start('demo', 'insight.detected', { capsuleId: 'cap-drill', pattern: 'drill', strength: 4 }, { maxHops: 5, ttlMs: 60_000 });
  const chains = [firstChain.id];
  for (let i = 0; i < DEMO_BREAKER.consecutiveFailures && kernel.overlays.get(enricher.id)?.breaker === 'closed'; i++) await kernel.overlays.call(enricher.id, 'run', {}).catch(() => undefined);
  await until(() => kernel.bus.deadLetters().length > 0, 'the insight for the failing overlay to be dead-lettered');
  failing = false;
  await until(() => kernel.overlays.get(enricher.id)?.breaker === 'halfOpen', 'the breaker to allow a probe');
  await kernel.overlays.call(enricher.id, 'run', {});
  const deadLettered = kernel.bus.deadLetters();
  for (const letter of deadLettered) await kernel.bus.retryDeadLetter(letter.id);

  // The stream: capsules through the pipeline, a few at a time; some insights start cascade chains.
  const results: RunResult[] = [];
  const pending: Promise<RunResult>[] = [];
  let next = 0;
  let settled = 0;
  const settleOrPause = (run: PipelineRun): Promise<unknown> => Promise.race([run.done, new Promise<void>((resolve) => pausedRuns.set(run.id, resolve))]);
  const worker = async (): Promise<void> => {
    while (next < total) {
      const { capsule } = demoCapsule(next++);
      const run = kernel.pipelines.start({ capsule });
      const done = run.done.then(async (result) => {
        pausedRuns.delete(run.id);
        results.push(result);
        options.onProgress?.(++settled, total);
        const propagation = result.data.propagation as { propagated?: number } | undefined;
        if (result.status === 'completed' && (propagation?.propagated ?? 0) > 0 && chains.length < 1 + Math.ceil(total / 25)) {
          const chain = await kernel.cascades.start('demo', 'insight.detected', { capsuleId: capsule.id, pattern: 'strong', strength: 4 }, { maxHops: 5, ttlMs: 60_000, correlationId: result.correlationId });
          chains.push(chain.id);
        }
        return result;
      });
      pending.push(done);
      await settleOrPause(run);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker));
  await Promise.all(pending);
  await until(() => kernel.bus.metrics().queueDepth === 0, 'the bus to drain');

  // Chains still spreading when the stream ends are completed, so the summary reads them from the store.
  for (const id of chains) if (kernel.cascades.get(id)?.status === 'active') await kernel.cascades.complete(id);
  const stored = await kernel.store.loadChains();
  const allChains = stored.filter((c) => chains.includes(c.id));
  const longest = allChains.reduce<string[]>((best, c) => (c.visited.length > best.length ? c.visited : best), []);
  const stats = kernel.pipelines.stats();
  const fuel: Record<string, number> = {};
  for (const result of results) for (const [overlay, used] of Object.entries(result.fuel)) fuel[overlay] = (fuel[overlay] ?? 0) + used;
  const durationMs = Math.round(performance.now() - started);
  const summary: DemoSummary = {
    capsules: total,
    durationMs,
    setupMs,
    runsPerSecond: Math.round((total / durationMs) * 1000),
    store: kernel.store.kind,
    runs: { completed: stats.completed, failed: stats.failed, cancelled: stats.cancelled },
    decisions: {
      ...decisions,
      approved: results.filter((r) => r.decision?.approve === true).length,
      rejected: results.filter((r) => r.decision?.approve === false).length,
      decidedBy: options.inspect === undefined ? 'demo' : 'inspector',
    },
    phases: Object.fromEntries(PHASES.map((p) => [p, { runs: stats.phases[p].runs, successRate: stats.phases[p].successRate, p50Ms: stats.phases[p].p50Ms, p95Ms: stats.phases[p].p95Ms }])) as DemoSummary['phases'],
    fuel,
    cascades: {
      started: chains.length,
      completed: allChains.filter((c) => c.status === 'completed').length,
      stopped: allChains.filter((c) => c.status === 'stopped').length,
      stoppedBy: allChains.reduce<Record<string, number>>((by, c) => (c.status === 'stopped' ? { ...by, [c.endReason ?? 'unknown']: (by[c.endReason ?? 'unknown'] ?? 0) + 1 } : by), {}),
      expired: allChains.filter((c) => c.status === 'expired').length,
      hops: allChains.reduce((sum, c) => sum + c.hops, 0),
      longest,
    },
    deadLetters: { total: deadLettered.length, retried: deadLettered.length - kernel.bus.deadLetters().length, remaining: kernel.bus.deadLetters().length },
    breaker: {
      overlay: 'faulty-enricher',
      transitions,
      tripped: transitions.some((t) => t.type === 'open'),
      recovered: transitions.findIndex((t) => t.type === 'close') > transitions.findIndex((t) => t.type === 'open') && transitions.some((t) => t.type === 'open'),
    },
  };
  return { summary, kernel };
}
