import { nanoid } from 'nanoid';
import { createActor, type Snapshot } from 'xstate';
import { pipelineMachine, type PipelineContext, type PipelineStatus, type RunConfig } from '../../actors/pipeline.ts';
import { LatencyWindow } from '../bus/latency.ts';
import { ForgeError } from '../errors.ts';
import type { RunLeases } from '../cluster/run-leases.ts';
import type { ActorCatalog } from '../inspect/catalog.ts';
import type { Logger } from '../logger.ts';
import { PHASES, type Phase } from '../manifest.ts';
import type { Journal, RecordedOverlay } from '../journal/journal.ts';
import { VERSION } from '../package-root.ts';
import type { RunSnapshot, Store } from '../store/store.ts';
import {
  checkDecisionTimeout,
  checkPhaseRecord,
  checkRunOptions,
  checkTrust,
  DEFAULT_RUN_TRUST,
  PipelineConfigError,
  resolveRunConfig,
  runData,
  type PhaseFunctions,
  type PhaseOverrides,
  type PipelineHooks,
  type RunOptions,
  type RunResult,
} from './config.ts';
import { DeadlineScheduler } from './deadlines.ts';
import { PhaseCache } from './phase-cache.ts';
import { auditEntry } from './audit.ts';
import { ENDED_STATUSES, JournalRunRecords, sameVersion, StoreRunRecords, type RunRecords } from './run-records.ts';
import { PipelineRun, RUN_SNAPSHOT_VERSION, RunStateError, SYSTEM_CLOCK, type CallOverlay, type PipelineClock, type RunEnvironment, type StoredVersion } from './run.ts';

/** Runs driving phases at once, unless the kernel sets another limit. */
export const DEFAULT_MAX_ACTIVE_RUNS = 32;
/** Runs waiting for a slot at most; past it `start` fails with PIPELINE_BUSY. */
export const DEFAULT_MAX_QUEUED_RUNS = 1_000;
/** Finished runs kept for `history()` and `get()`. */
export const DEFAULT_RUN_HISTORY = 100;
/** Phase durations kept per phase for `stats()` percentiles. */
const STATS_WINDOW = 1_000;

/** Kernel-wide pipeline settings (`createKernel({ pipelines })`). */
export interface PipelineOptions {
  /** Per-phase settings and code (a `when` condition, a custom `handler`) for every run. */
  phases?: Partial<Record<Phase, PhaseOverrides & PhaseFunctions>>;
  hooks?: PipelineHooks;
  maxActiveRuns?: number;
  maxQueuedRuns?: number;
  historyLimit?: number;
  /** Save a snapshot after each phase (default: when the store outlives the process, i.e. not the memory store). */
  checkpoints?: boolean;
  /** Trust of the runs' overlay calls (0–100, default 100: the embedding service is trusted). */
  trust?: number;
  /** Default decision deadline at consensus (ms), or null for none. */
  decisionTimeoutMs?: number | null;
  /**
   * In a cluster (NATS bus and a durable store): whether this process takes runs from the work queue (default
   * true). A kernel with `worker: false` only starts runs for the others to drive.
   */
  worker?: boolean;
  /** Timers of runs (timeouts, backoff, decision deadlines): XState's SimulatedClock in tests. */
  clock?: PipelineClock;
  random?: () => number;
}

/** Too many runs are active and queued: `start` refuses more until some finish. */
export class PipelineBusyError extends ForgeError {
  constructor(active: number, queued: number) {
    super('PIPELINE_BUSY', `${active} pipeline runs are active and ${queued} are queued, the limits: wait for runs to finish, or raise maxActiveRuns / maxQueuedRuns.`, { details: { active, queued } });
  }
}

/** No live or persisted run has that id. */
export class RunNotFoundError extends ForgeError {
  constructor(runId: string) {
    super('RUN_NOT_FOUND', `No pipeline run "${runId}" is live or persisted: kernel.pipelines.active() lists the live ones.`, { details: { runId } });
  }
}

/** The kernel is stopping: no new runs. */
export class PipelinesStoppedError extends ForgeError {
  constructor() {
    super('PIPELINES_STOPPED', 'The kernel is stopping: it starts no more pipeline runs.');
  }
}

export interface PhaseStats {
  runs: number;
  completed: number;
  failed: number;
  skipped: number;
  /** Completed share of the runs that ran the phase (skips excluded), 0–1. */
  successRate: number;
  p50Ms: number;
  p95Ms: number;
}

export interface PipelineStats {
  started: number;
  completed: number;
  failed: number;
  cancelled: number;
  active: number;
  queued: number;
  waiting: number;
  phases: Record<Phase, PhaseStats>;
}

export interface PipelinesDependencies {
  store: Store;
  logger: Logger;
  callOverlay: CallOverlay;
  overlaysOf: (phase: Phase) => string[];
  /** Calls `changed` whenever an overlay is loaded or unloaded (a phase's default overlays may then differ). */
  watchOverlays: (changed: () => void) => void;
  publish: (type: string, payload: Record<string, unknown>, correlationId: string) => void;
  /** Where run actors are listed for the inspector. */
  catalog?: ActorCatalog;
  /** True when a projector writes completed runs' audit entries from the journal (the run then writes none). */
  auditBehind?: boolean;
  /** Run leases in a cluster: with them, runs whose process died are taken over by this one. */
  leases?: RunLeases;
  /**
   * A cluster's work queue: `enqueue` hands a new run (already in the store) to the processes that run pipelines,
   * `settled` tells every process a run's result (the one that started it resolves its `done`).
   */
  queue?: { enqueue(runId: string): Promise<void>; settled(result: RunResult): Promise<void> };
  /** This process's id in the cluster (recorded as `drivenBy` in results). */
  processId?: string;
  /** The cluster this process belongs to: it drives only that cluster's runs. */
  clusterName?: string;
  /** Runs are journaled here (the source of truth for them) instead of kept as snapshots in the store. */
  journal?: Journal;
  /** An overlay's version and sha256 by name (recorded when a run starts). */
  describeOverlay?: (name: string) => RecordedOverlay | undefined;
  /** Whether a call of that overlay with that trust would be admitted now (a phase-cache hit must pass it too). */
  admits?: (name: string, trust: number) => boolean;
}

/** How often a clustered kernel looks for runs whose process died (ms). */
const TAKEOVER_INTERVAL_MS = 2_000;
/** Runs from the cluster's queue claimed at once by one process. */
const CLAIMS_AT_ONCE = 16;

/**
 * The kernel's pipeline runs (`kernel.pipelines`): starts each run as an actor, caps the runs driving phases at once
 * (a bounded queue behind), saves snapshots, restores runs from the store after a restart, and keeps a bounded
 * history and per-phase statistics.
 */
export class Pipelines {
  readonly #deps: PipelinesDependencies;
  readonly #functions: Partial<Record<Phase, PhaseFunctions>>;
  readonly #kernelPhases: Partial<Record<Phase, PhaseOverrides & PhaseFunctions>>;
  readonly #hooks: PipelineHooks;
  readonly #limits: { active: number; queued: number; history: number };
  readonly #trust: number;
  readonly #decisionTimeoutMs: number | null;
  readonly #clock: PipelineClock;
  /** Where runs are kept: the journal, or the store's snapshots. */
  readonly #records: RunRecords;
  /** Claims of queued runs under way (see `offered`). */
  readonly #claims = new Set<Promise<void>>();
  /** The takeover pass under way, if any (one at a time). */
  #takingOver: Promise<unknown> | undefined;
  /** Runs that ended here whose snapshot could not be removed yet (the store was down): never restored. */
  readonly #ended = new Set<string>();
  readonly #env: RunEnvironment;
  readonly #live = new Map<string, PipelineRun>();
  readonly #driving = new Set<PipelineRun>();
  /** Runs waiting for a slot, oldest first (a Set: taking the first and dropping any one are both O(1)). */
  readonly #queue = new Set<PipelineRun>();
  /** Whether a queued run's start is already scheduled for the next turn of the event loop. */
  #admitting = false;
  readonly #history: PipelineRun[] = [];
  readonly #results = new Map<PipelineRun, RunResult>();
  readonly #phaseStats = new Map<Phase, { window: LatencyWindow; completed: number; failed: number; skipped: number }>();
  readonly #counts = { started: 0, completed: 0, failed: 0, cancelled: 0 };
  #stopping = false;
  readonly #deadlines: DeadlineScheduler;
  /** Runs this process started and put on the cluster's queue, until their result arrives. */
  readonly #remote = new Map<string, PipelineRun>();
  readonly #worker: boolean;
  #takeover: NodeJS.Timeout | undefined;
  /** The configuration of a run with no per-phase options, until the overlays change (resolving it costs ≈15 µs). */
  #baseConfig: RunConfig | undefined;

  constructor(deps: PipelinesDependencies, options: PipelineOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new PipelineConfigError('pipelines', 'must be an object.');
    this.#deps = deps;
    this.#kernelPhases = checkPhaseRecord(options.phases, 'pipelines.phases', true);
    this.#functions = {};
    for (const phase of PHASES) {
      const { when, handler } = this.#kernelPhases[phase] ?? {};
      if (when !== undefined || handler !== undefined) this.#functions[phase] = { ...(when === undefined ? {} : { when }), ...(handler === undefined ? {} : { handler }) };
    }
    this.#hooks = options.hooks ?? {};
    for (const [name, hook] of Object.entries(this.#hooks)) {
      if (!['prePhase', 'postPhase', 'completion'].includes(name)) throw new PipelineConfigError(`pipelines.hooks.${name}`, 'is not a hook (prePhase, postPhase, completion).');
      if (typeof hook !== 'function') throw new PipelineConfigError(`pipelines.hooks.${name}`, 'must be a function.');
    }
    const positive = (value: unknown, field: string, fallback: number): number => {
      if (value === undefined) return fallback;
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new PipelineConfigError(field, 'must be a positive integer.');
      return value;
    };
    this.#limits = {
      active: positive(options.maxActiveRuns, 'pipelines.maxActiveRuns', DEFAULT_MAX_ACTIVE_RUNS),
      queued: options.maxQueuedRuns === 0 ? 0 : positive(options.maxQueuedRuns, 'pipelines.maxQueuedRuns', DEFAULT_MAX_QUEUED_RUNS),
      history: positive(options.historyLimit, 'pipelines.historyLimit', DEFAULT_RUN_HISTORY),
    };
    this.#trust = options.trust === undefined ? DEFAULT_RUN_TRUST : checkTrust(options.trust, 'pipelines.trust');
    this.#decisionTimeoutMs = checkDecisionTimeout(options.decisionTimeoutMs, 'pipelines.decisionTimeoutMs');
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#deadlines = new DeadlineScheduler(this.#clock);
    this.#worker = options.worker ?? true;
    const { store, journal } = deps;
    this.#records = journal === undefined ? new StoreRunRecords(store) : new JournalRunRecords(journal, deps.logger);
    if (deps.leases !== undefined && this.#records.shared) {
      this.#takeover = setInterval(() => {
        this.#takingOver ??= this.takeOver()
          .catch((err: unknown) => (this.#stopping ? undefined : deps.logger.warn({ err }, 'pipeline takeover failed')))
          .finally(() => (this.#takingOver = undefined));
      }, TAKEOVER_INTERVAL_MS);
      this.#takeover.unref();
    }
    deps.watchOverlays(() => (this.#baseConfig = undefined));
    for (const phase of PHASES) this.#phaseStats.set(phase, { window: new LatencyWindow(STATS_WINDOW), completed: 0, failed: 0, skipped: 0 });
    const records = this.#records;
    this.#env = {
      logger: deps.logger,
      clock: this.#clock,
      deadlines: this.#deadlines,
      callOverlay: deps.callOverlay,
      functions: this.#functions,
      hooks: this.#hooks,
      // A run is saved after each phase when what keeps it outlives the process.
      checkpoints: options.checkpoints ?? (journal === undefined ? store.kind !== 'memory' : journal.kind !== 'memory'),
      journaled: records.kind === 'journal',
      stopping: () => this.#stopping,
      ...(deps.describeOverlay === undefined ? {} : { phaseCache: new PhaseCache(deps.describeOverlay, deps.admits ?? (() => false)) }),
      graph: store.kind === 'neo4j',
      random: options.random ?? Math.random,
      save: (runId, status, snapshot, entries, token) => records.save(runId, status, snapshot, entries, token),
      replace: (runId, expected, status, snapshot, entries, token) => records.replace(runId, expected, status, snapshot, entries, token),
      // A journal on disk takes phase checkpoints lazily (group commit); the memory journal and the store do not.
      ...(records.checkpoint === undefined || journal?.kind === 'memory' ? {} : { checkpoint: records.checkpoint }),
      // A journaled run keeps its journal (its history, for replay) once it ends; a stored snapshot goes.
      forget: (runId, expected) => (records.kind === 'journal' ? Promise.resolve() : this.#forget(runId, expected)),
      publish: (type, run, payload) => deps.publish(type, { runId: run.id, ...payload }, run.correlationId),
      released: async (run) => {
        this.#release(run);
        // A run that stops driving (paused, waiting, ended) gives up its lease: any process may resume it.
        await deps.leases?.release(run.id);
      },
      resumed: (run) => this.#driving.add(run),
      claim: (run) => deps.leases?.claim(run.id) ?? Promise.resolve(true),
      ...(deps.processId === undefined ? {} : { processId: deps.processId }),
      finished: (run, result) => this.#finished(run, result),
    };
  }

  /**
   * Starts a run of the seven phases on `input` (a JSON object: the capsule and whatever the overlays read) and
   * returns it at once: `run.done` resolves with its result. Past the active limit the run waits in a queue; past
   * the queue's limit this throws PIPELINE_BUSY.
   */
  start(input: unknown, options?: RunOptions): PipelineRun {
    if (this.#stopping) throw new PipelinesStoppedError();
    const checked = checkRunOptions(options);
    const data = runData(input);
    if (this.#driving.size >= this.#limits.active && this.#queue.size >= this.#limits.queued) throw new PipelineBusyError(this.#driving.size, this.#queue.size);
    const config = this.#configFor(checked);
    const runId = `run_${nanoid(12)}`;
    const actor = createActor(pipelineMachine, { input: { runId, correlationId: checked.correlationId ?? runId, cluster: this.#deps.clusterName ?? null, config, startedAt: this.#clock.now(), data }, clock: this.#clock });
    const run = new PipelineRun(this.#env, actor);
    if (this.#env.journaled) run.recordStart({ overlays: this.#describe(config), kernel: VERSION });
    this.#live.set(run.id, run);
    this.#list(run);
    this.#counts.started++;
    this.#deps.publish('pipeline.started', { runId }, run.correlationId);
    if (this.#clustered) {
      this.#remote.set(run.id, run);
      void this.#enqueue(run);
    } else {
      // With checkpoints the run is in the store before its first phase (run.durable): a crash cannot lose it.
      if (this.#env.checkpoints) void run.checkpointQueued();
      this.#admit(run);
    }
    return run;
  }

  /** A cluster's queue needs the run where every process reads it (Neo4j, or a JetStream journal) before any can take it. */
  get #clustered(): boolean {
    return this.#deps.queue !== undefined && this.#deps.leases !== undefined && this.#records.shared;
  }

  async #enqueue(run: PipelineRun): Promise<void> {
    try {
      await run.checkpointQueued();
      await this.#deps.queue!.enqueue(run.id);
    } catch (error) {
      // The queue is unreachable: this process runs it, rather than lose it.
      this.#deps.logger.warn({ err: error, runId: run.id }, 'could not enqueue a pipeline run: running it here');
      if (this.#remote.delete(run.id)) this.#admit(run);
    }
  }

  /**
   * A run the cluster's queue offers: claimed side by side with others (a claim reads the run and takes its lease,
   * round trips each), up to CLAIMS_AT_ONCE; the queue's next run waits beyond that. A claim that fails is left to
   * the takeover loop (the run is in the journal or the store, and no process holds its lease).
   */
  async offered(runId: string): Promise<void> {
    const claim = this.claimQueued(runId).catch((err: unknown) => this.#deps.logger.warn({ err, runId }, 'a queued run could not be claimed here: the takeover loop will find it'));
    this.#claims.add(claim);
    void claim.finally(() => this.#claims.delete(claim));
    while (this.#claims.size >= CLAIMS_AT_ONCE) await Promise.race(this.#claims);
  }

  /**
   * A run on the cluster's queue: claim it (its lease) and drive it here. Runs this process started are driven from
   * their own handle; others are loaded from the store. A run needing an overlay this process lacks is left to the
   * others (the takeover loop of a process that has it picks it up).
   */
  async claimQueued(runId: string): Promise<void> {
    if (this.#stopping || !this.#worker || this.#deps.leases === undefined) return;
    const own = this.#live.get(runId);
    if (own !== undefined && this.#remote.get(runId) !== own) return;
    const record = own === undefined ? await this.#records.load(runId) : undefined;
    if (own === undefined && record === undefined) return;
    const context = own !== undefined ? own.actor.getSnapshot().context : (record!.snapshot as { context?: PipelineContext }).context;
    if (context === undefined || !this.#ours(context) || !this.#canRun(context.config)) return;
    if (!(await this.#deps.leases.claim(runId))) return;
    if (own !== undefined && this.#remote.get(runId) !== own) return;
    if (own !== undefined) {
      const stored = await this.#records.load(runId);
      const current = stored === undefined || own.storedVersion === undefined || sameVersion(stored, own.storedVersion);
      if (!current || stored === undefined || ENDED_STATUSES.has(stored.status)) {
        // Another process drove or ended the run since this handle was saved: leave it to the store's state.
        await this.#deps.leases.release(runId);
        return;
      }
      this.#remote.delete(runId);
      this.#admit(own);
    } else if (this.#live.has(runId)) {
      // The takeover loop revived it while this claim was on its way: the lease is re-entrant within a process,
      // so one copy here must be the only one.
    } else if (record !== undefined && this.#revive(record) === undefined) await this.#deps.leases.release(runId);
  }

  /** True when the run belongs to this process's cluster (runs of another cluster sharing the store are not ours). */
  #ours(context: PipelineContext): boolean {
    return (context.cluster ?? null) === (this.#deps.clusterName ?? null);
  }

  /** True when every overlay the run's phases name is loaded here. */
  #canRun(config: RunConfig): boolean {
    const here = new Set(PHASES.flatMap((phase) => this.#deps.overlaysOf(phase)));
    return PHASES.every((phase) => config.phases[phase].overlays.every((name) => here.has(name)));
  }

  /**
   * Another process finished a run: a handle of it here resolves with that result. That is a run this process
   * started for the cluster, or a copy this process left waiting (it paused the run, and another process resumed
   * it): the copy is stale and goes, so `active()` no longer lists it and it can never be driven again.
   */
  settledElsewhere(result: RunResult): void {
    const local = this.#live.get(result.id);
    const run = this.#remote.get(result.id) ?? (local !== undefined && !local.driving ? local : undefined);
    if (run === undefined) return;
    this.#remote.delete(result.id);
    // A copy waiting here for a slot, or holding a lease, gives both up: it will never drive.
    this.#queue.delete(run);
    if (this.#deps.leases?.holds(run.id) === true) void this.#deps.leases.release(run.id);
    if (this.#live.get(run.id) === run) this.#live.delete(run.id);
    this.#deps.catalog?.remove(run.id);
    this.#history.push(run);
    this.#results.set(run, result);
    if (this.#history.length > this.#limits.history) this.#results.delete(this.#history.shift()!);
    run.settleWith(result);
  }

  #configFor(options: RunOptions): RunConfig {
    const kernel = { phases: this.#kernelPhases, trust: this.#trust, decisionTimeoutMs: this.#decisionTimeoutMs };
    if (options.phases !== undefined || options.skip !== undefined) return resolveRunConfig(kernel, options, this.#deps.overlaysOf);
    this.#baseConfig ??= resolveRunConfig(kernel, {}, this.#deps.overlaysOf);
    if (options.trust === undefined && options.decisionTimeoutMs === undefined) return this.#baseConfig;
    return Object.freeze({
      ...this.#baseConfig,
      trust: options.trust ?? this.#trust,
      decisionTimeoutMs: options.decisionTimeoutMs === undefined ? this.#decisionTimeoutMs : options.decisionTimeoutMs,
    });
  }

  /** A live run, or a finished one still in the history. */
  get(runId: string): PipelineRun | undefined {
    return this.#live.get(runId) ?? this.#history.find((run) => run.id === runId);
  }

  /** Runs not yet finished: queued, driving phases, paused, or waiting for a decision. */
  active(): PipelineRun[] {
    return [...this.#live.values()];
  }

  /** Results of the last finished runs (bounded), oldest first. */
  history(): RunResult[] {
    return this.#history.map((run) => this.#results.get(run)!);
  }

  /** Runs by outcome, and per phase: p50 / p95 duration and success rate over the recent runs. */
  stats(): PipelineStats {
    const phases = {} as Record<Phase, PhaseStats>;
    for (const [phase, s] of this.#phaseStats) {
      const ran = s.completed + s.failed;
      const { p50, p95 } = s.window.percentiles();
      phases[phase] = { runs: ran + s.skipped, completed: s.completed, failed: s.failed, skipped: s.skipped, successRate: ran === 0 ? 1 : s.completed / ran, p50Ms: p50, p95Ms: p95 };
    }
    const live = [...this.#live.values()];
    return {
      ...this.#counts,
      active: this.#driving.size,
      queued: this.#queue.size,
      waiting: live.filter((r) => r.status === 'paused' || r.status === 'awaitingDecision').length,
      phases,
    };
  }

  /**
   * Resumes a paused run, or decides on one waiting at consensus, whether it lives in this process or only in the
   * store (paused by a process that has since exited).
   */
  async resume(runId: string, decision?: unknown): Promise<PipelineRun> {
    const local = this.#live.get(runId);
    // A run this process started for the cluster is driven elsewhere: resume it from the store (its handle here
    // still resolves when the run ends).
    if (local !== undefined && this.#remote.get(runId) !== local) {
      const run = local.status === 'paused' || local.status === 'awaitingDecision' ? await this.#current(local) : local;
      await run.resume(decision);
      return run;
    }
    // Not here: only a run the store holds as paused or waiting is brought back, and only to be resumed. A run the
    // store says is running (another process drives it, or will restore it) is refused without being revived.
    const record = await this.#records.load(runId);
    if (record === undefined) throw new RunNotFoundError(runId);
    if (record.status !== 'paused' && record.status !== 'awaitingDecision') {
      throw new RunStateError('RUN_NOT_PAUSED', runId, record.status, `Run ${runId} is ${record.status} in the store: only a paused run, or one waiting for a decision, can be resumed.`);
    }
    const run = this.#revive(record);
    if (run === undefined) throw new RunNotFoundError(runId);
    try {
      await run.resume(decision);
    } catch (error) {
      // Refused (a bad decision, or another process resumed it first): this copy was only for the resume.
      if (this.#live.get(runId) === run && (run.status === 'paused' || run.status === 'awaitingDecision')) this.#drop(run);
      throw error;
    }
    return run;
  }

  /**
   * Removes an ended run's snapshot (only the one its driver last wrote). When the store is down, it keeps trying in
   * the background (backoff to 30 s) until it succeeds or the kernel stops, and meanwhile this process never
   * restores that run: an ended run must not be driven again.
   */
  async #forget(runId: string, expected: StoredVersion | undefined, attempt = 1): Promise<void> {
    try {
      await this.#records.remove(runId, expected);
      this.#ended.delete(runId);
    } catch (error) {
      this.#ended.add(runId);
      if (this.#stopping) {
        this.#deps.logger.warn({ err: error, runId }, 'an ended run could not be removed from the store before the kernel stopped: a restore will skip it only if its audit entry shows it completed');
        return;
      }
      if (attempt === 1) this.#deps.logger.warn({ err: error, runId }, 'an ended run could not be removed from the store yet: retrying');
      const timer = setTimeout(() => void this.#forget(runId, expected, attempt + 1), Math.min(30_000, 250 * 2 ** attempt));
      timer.unref();
    }
  }

  /** Removes a revived copy that was refused, as if it had never been brought back. */
  #drop(run: PipelineRun): void {
    run.discard();
    this.#live.delete(run.id);
    this.#deps.catalog?.remove(run.id);
    this.#release(run);
  }

  /** The overlays a run's phases name: name, version and sha256, as its journal records them. */
  #describe(config: RunConfig): RecordedOverlay[] {
    const names = new Set(PHASES.flatMap((phase) => config.phases[phase].overlays));
    return [...names].map((name) => this.#deps.describeOverlay?.(name) ?? { name, version: 'unknown', sha256: 'unknown' });
  }

  /**
   * Brings back the runs a previous process left in the store: paused ones wait again (decision deadlines re-armed);
   * interrupted ones continue from the phase after their last checkpoint. Load the overlays first.
   */
  async restore(): Promise<PipelineRun[]> {
    const restored: PipelineRun[] = [];
    for (const record of await this.#records.list()) {
      if (this.#live.has(record.runId) || this.#ended.has(record.runId)) continue;
      // A run marked ended whose snapshot was not removed yet (the store failed then): remove it, never drive it.
      if (ENDED_STATUSES.has(record.status)) {
        await this.#records.remove(record.runId, record).catch(() => undefined);
        continue;
      }
      // A run that completed leaves an audit entry before its snapshot goes: if the snapshot outlived it (the store
      // was down when it should have gone), the run is over and must not be driven a second time.
      if (this.#records.kind === 'store' && (record.status === 'running' || record.status === 'queued') && (await this.#deps.store.listAudit({ runId: record.runId })).length > 0) {
        await this.#records.remove(record.runId, record);
        this.#deps.logger.info({ runId: record.runId }, 'a completed run\'s leftover snapshot was removed instead of restored');
        continue;
      }
      // A cluster's runs are its processes' to continue; in a cluster, a run another process drives is left to it.
      const context = (record.snapshot as { context?: PipelineContext } | undefined)?.context;
      if (context !== undefined && !this.#ours(context)) continue;
      const driving = record.status === 'running' || record.status === 'queued';
      if (driving && this.#deps.leases !== undefined && !(await this.#deps.leases.claim(record.runId))) continue;
      if (this.#live.has(record.runId)) continue;
      const run = this.#revive(record);
      if (run !== undefined) restored.push(run);
    }
    return restored;
  }

  /**
   * In a cluster: claims the checkpointed runs no live process holds (their process died, or stopped) and continues
   * them here. Runs on a timer while the kernel runs; `pipelines.restore()` does the same once.
   */
  async takeOver(): Promise<PipelineRun[]> {
    const leases = this.#deps.leases;
    if (leases === undefined || this.#stopping || !this.#worker) return [];
    const taken: PipelineRun[] = [];
    // Runs this process drives (or waits on) are not read again.
    const skip = (runId: string, status: string): boolean => (status !== 'running' && status !== 'queued') || (this.#live.has(runId) && this.#remote.get(runId) !== this.#live.get(runId));
    for (const record of await this.#records.list(skip)) {
      // A stop waits for this pass: it ends at the next run instead of claiming more.
      if (this.#stopping) break;
      if (record.status !== 'running' && record.status !== 'queued') continue;
      if (this.#live.has(record.runId) && this.#remote.get(record.runId) !== this.#live.get(record.runId)) continue;
      const context = (record.snapshot as { context?: PipelineContext } | undefined)?.context;
      if (context === undefined || !this.#ours(context) || !this.#canRun(context.config)) continue;
      const own = this.#live.get(record.runId);
      if (own !== undefined && this.#remote.get(record.runId) !== own) continue;
      if (!(await leases.claim(record.runId))) continue;
      // Claimed from the queue meanwhile (the lease is re-entrant within a process): it is driven here already.
      if (own === undefined && this.#live.has(record.runId)) continue;
      const stored = own?.storedVersion;
      if (own !== undefined && stored !== undefined && sameVersion(stored, record)) {
        this.#remote.delete(record.runId);
        this.#admit(own);
        taken.push(own);
        continue;
      }
      if (own !== undefined) {
        // This process's handle is behind the store (another process drove the run since): the run goes on from the
        // store's checkpoint, and the handle resolves with its result.
        this.#remote.delete(record.runId);
        this.#live.delete(record.runId);
        this.#deps.catalog?.remove(record.runId);
        const fresh = this.#revive(record);
        if (fresh === undefined) await leases.release(record.runId);
        else {
          void fresh.done.then((result) => own.settleWith(result));
          taken.push(fresh);
        }
        continue;
      }
      const run = this.#revive(record);
      if (run === undefined) await leases.release(record.runId);
      else {
        this.#deps.logger.info({ runId: run.id }, 'took over a pipeline run from a process that is gone');
        taken.push(run);
      }
    }
    return taken;
  }

  /** Stops taking runs, halts the active ones at their next phase boundary (checkpointed), and waits for them. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#takeover);
    // Claims under way finish first (a claimed run is then halted with the others), and so does a takeover pass.
    await Promise.allSettled([...this.#claims, this.#takingOver]);
    await Promise.all([...this.#live.values()].map((run) => (this.#remote.get(run.id) === run ? run.abandon() : run.interrupt())));
    this.#deadlines.stop();
  }

  /**
   * In a cluster, a run waiting here may have been resumed (and paused again, or finished) by another process since
   * it paused: the store holds its state. Resuming this copy then would drive phases a second time, so the run goes
   * on from the store's state instead (this copy's handle resolves with that run's result).
   */
  async #current(run: PipelineRun): Promise<PipelineRun> {
    if (this.#deps.leases === undefined || !this.#records.shared) return run;
    const record = await this.#records.load(run.id);
    if (record === undefined) throw new RunStateError('RUN_FINISHED', run.id, 'ended', `Run ${run.id} has ended in another kernel process.`);
    if (record.status !== 'paused' && record.status !== 'awaitingDecision') throw new RunStateError('RUN_CLAIMED', run.id, record.status, `Run ${run.id} was resumed by another kernel process, which drives it now.`);
    if (this.#live.get(run.id) !== run || JSON.stringify(record.snapshot) === JSON.stringify(run.actor.getPersistedSnapshot())) return this.#live.get(run.id) ?? run;
    this.#live.delete(run.id);
    this.#deps.catalog?.remove(run.id);
    const fresh = this.#revive(record);
    if (fresh === undefined) throw new RunNotFoundError(run.id);
    void fresh.done.then((result) => run.settleWith(result));
    return fresh;
  }

  #revive(record: RunSnapshot): PipelineRun | undefined {
    if (record.version !== RUN_SNAPSHOT_VERSION || !isRunSnapshot(record.snapshot, record.runId)) {
      this.#deps.logger.warn({ runId: record.runId, version: record.version }, 'a persisted run is not a pipeline snapshot of this version: left in the store');
      return undefined;
    }
    const snapshot = record.snapshot;
    // The input is not used when a snapshot is given; XState's types still ask for one.
    const actor = createActor(pipelineMachine, { snapshot, input: snapshot.context, clock: this.#clock });
    const run = new PipelineRun(this.#env, actor, { status: record.status, updatedAt: record.updatedAt, ...(record.token === undefined ? {} : { token: record.token }) });
    this.#live.set(run.id, run);
    this.#list(run);
    const { value } = actor.getSnapshot();
    this.#deps.logger.info({ runId: run.id, state: value }, 'pipeline run restored');
    // A run waiting for someone holds no slot; an interrupted one queues for a slot like a new run.
    if (value === 'paused' || (typeof value === 'object' && 'awaitingDecision' in value)) run.begin();
    else this.#admit(run);
    return run;
  }

  #admit(run: PipelineRun): void {
    if (this.#driving.size < this.#limits.active && this.#queue.size === 0) {
      this.#driving.add(run);
      run.begin();
    } else {
      this.#queue.add(run);
      this.#admitQueued();
    }
  }

  #release(run: PipelineRun): void {
    if (this.#driving.delete(run)) this.#admitQueued();
  }

  /**
   * Starts queued runs into free slots on the next turn of the event loop, not in the finishing run's continuation:
   * a backlog of runs that finish without waiting on I/O would otherwise chain microtasks for as long as it lasts,
   * and no timer (phase timeouts, bus deadlines, lease renewals) could fire meanwhile.
   */
  #admitQueued(): void {
    if (this.#admitting || this.#queue.size === 0 || this.#driving.size >= this.#limits.active) return;
    this.#admitting = true;
    setImmediate(() => {
      this.#admitting = false;
      for (const next of this.#queue) {
        if (this.#driving.size >= this.#limits.active) break;
        this.#queue.delete(next);
        this.#driving.add(next);
        next.begin();
      }
    });
  }

  /** Lists the run's actor for the inspector. */
  #list(run: PipelineRun): void {
    const capsule = run.actor.getSnapshot().context.data.capsule as { id?: unknown } | undefined;
    this.#deps.catalog?.add({
      id: run.id,
      kind: 'pipeline',
      label: typeof capsule?.id === 'string' ? capsule.id : run.id,
      actor: run.actor,
      correlationId: run.correlationId,
      details: () => {
        const view = run.view();
        return { status: view.status, phases: view.phases.map((p) => ({ phase: p.phase, status: p.status, durationMs: p.durationMs })), warnings: view.warnings, decision: view.decision, consensus: view.data.consensus ?? null };
      },
    });
  }

  async #finished(run: PipelineRun, result: RunResult): Promise<void> {
    this.#live.delete(run.id);
    this.#deps.catalog?.remove(run.id);
    this.#queue.delete(run);
    this.#history.push(run);
    this.#results.set(run, result);
    if (this.#history.length > this.#limits.history) this.#results.delete(this.#history.shift()!);
    if (result.status === 'interrupted') return;
    this.#counts[result.status]++;
    for (const outcome of result.phases) {
      const s = this.#phaseStats.get(outcome.phase)!;
      if (outcome.status === 'skipped') s.skipped++;
      else {
        s[outcome.status]++;
        s.window.add(outcome.durationMs);
      }
    }
    // With a projector the audit trail is written behind from the journal (the run does not wait for the store);
    // without one, a settled run is acknowledged with its audit entry durable.
    if (result.status === 'completed' && this.#deps.auditBehind !== true) {
      this.#deps.store.appendAudit(auditEntry(run.id, result, Date.now()));
      await this.#deps.store.flush();
    }
    if (this.#deps.queue !== undefined) await this.#deps.queue.settled(result).catch((err: unknown) => this.#deps.logger.warn({ err, runId: run.id }, 'could not tell the cluster a run settled'));
    const type = result.status === 'completed' ? 'pipeline.completed' : result.status === 'failed' ? 'pipeline.failed' : 'pipeline.cancelled';
    this.#deps.publish(type, { runId: run.id, status: result.status, durationMs: result.durationMs, ...(result.error === null ? {} : { error: result.error }) }, run.correlationId);
  }
}


/** The shape a persisted pipeline actor must have before it is revived. */
function isRunSnapshot(snapshot: unknown, runId: string): snapshot is Snapshot<unknown> & { context: PipelineContext } {
  if (typeof snapshot !== 'object' || snapshot === null) return false;
  const { context, value, status } = snapshot as { context?: Partial<PipelineContext>; value?: unknown; status?: unknown };
  return status === 'active' && value !== undefined && typeof context === 'object' && context !== null && context.runId === runId && typeof context.config === 'object' && typeof context.data === 'object';
}

export type { PipelineRun, PipelineStatus, RunOptions, RunResult };
