import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Actor, Snapshot } from 'xstate';
import type { pipelineMachine} from '../../actors/pipeline.ts';
import { type Decision, type OverlayOutcome, type PhaseOutcome, type PipelineEvent, type PipelineStatus, type RunData } from '../../actors/pipeline.ts';
import { deepFreeze, detached } from '../bus/event.ts';
import { ForgeError, isForgeError, readableMessage } from '../errors.ts';
import type { NewEntry, RecordedOverlay } from '../journal/journal.ts';
import type { HostCallRecord, HostTape } from '../wasm/host-functions.ts';
import type { PhaseCache } from './phase-cache.ts';
import type { Logger } from '../logger.ts';
import type { Phase } from '../manifest.ts';
import type { DeadlineScheduler } from './deadlines.ts';
import { auditEntry } from './audit.ts';
import { eventsPublished, fuelByOverlay, type PhaseContext, type PhaseFunctions, type PipelineHooks, type RunResult } from './config.ts';

/** Format version of persisted run snapshots: bump it when the pipeline machine changes shape. */
export const RUN_SNAPSHOT_VERSION = 1;
/** Share of a retry's backoff that is random, so retries of many runs do not line up. */
const RETRY_JITTER = 0.2;

/** The clock a run uses for timeouts, backoff and deadlines; XState's SimulatedClock fits it. */
export interface PipelineClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

export const SYSTEM_CLOCK: PipelineClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout),
};

/** A run operation that does not fit the run's state (e.g. resume a run that is not paused). */
export class RunStateError extends ForgeError {
  constructor(code: 'RUN_FINISHED' | 'RUN_NOT_PAUSED' | 'RUN_CLAIMED', runId: string, status: string, message: string) {
    super(code, message, { details: { runId, status } });
  }
}

/** A decision given to resume a run is malformed. */
export class InvalidDecisionError extends ForgeError {
  constructor(problem: string) {
    super('INVALID_DECISION', `A decision is { decision: 'approve' | 'reject', by: '<who>', reason?: '<why>' }: ${problem}`);
  }
}

/** What a run calls an overlay with (the kernel's registry, through each overlay's actor and breaker). */
/** Calls an overlay's `run` for a run: the options say whose call it is (the overlay's context and host functions see them). */
export type CallOverlay = (
  name: string,
  input: unknown,
  /** `phaseEndsInMs`: how long until the phase's timer aborts the call (the timer, not the call, decides a timeout). */
  options: { signal: AbortSignal; correlationId: string; trust: number; runId: string; capsuleId?: string; phaseEndsInMs: number; tape?: HostTape },
) => Promise<{ output: unknown; fuelUsed: number; events?: readonly { type: string }[] }>;

/** Attempts at journaling a run's end, and the wait before the second (doubling, at most the maximum), ms. */
const SEAL_ATTEMPTS = 8;
const SEAL_RETRY_MS = 100;
const SEAL_RETRY_MAX_MS = 1_000;

/** Events listed per overlay outcome at most (their types; the events themselves are on the bus). */
const MAX_PUBLISHED_LISTED = 100;

/** What a run needs from its manager: effects, shared settings, and where to report. */
export interface RunEnvironment {
  logger: Logger;
  clock: PipelineClock;
  /** Phase deadlines (one timer for all runs). */
  deadlines: DeadlineScheduler;
  callOverlay: CallOverlay;
  functions: Partial<Record<Phase, PhaseFunctions>>;
  hooks: PipelineHooks;
  /** Whether a snapshot is saved after each phase (a pause is always saved). */
  checkpoints: boolean;
  /** True when overlays of this kernel have a graph database (passed to them as `context.graph`). */
  graph: boolean;
  /** Results of phases configured `cache: true`. */
  phaseCache?: PhaseCache;
  /** True once the kernel is stopping (a run stops retrying what it cannot write, and ends interrupted). */
  stopping?: () => boolean;
  /** Whether runs record journal entries (what happened: events, overlay calls), handed to `save` / `replace`. */
  journaled: boolean;
  /** Saves the run (its snapshot, or the entries since its last save); resolves with what is now kept for it (a version). */
  save(runId: string, status: string, snapshot: Snapshot<unknown>, entries: readonly NewEntry[], token?: string): Promise<StoredVersion>;
  /** Saves it only if what is kept is still `expected` (compare and set); undefined when another writer got there first. */
  replace(runId: string, expected: StoredVersion, status: string, snapshot: Snapshot<unknown>, entries: readonly NewEntry[], token?: string): Promise<StoredVersion | undefined>;
  /**
   * A phase's checkpoint appended without waiting for it (group commit): its version at once, and whether it landed.
   * Absent where every save is awaited (the store, the memory journal).
   */
  checkpoint?: (runId: string, expected: StoredVersion, status: string, entries: readonly NewEntry[]) => { next: StoredVersion; landed: Promise<boolean> };
  /** Removes the ended run's snapshot if it is still `expected` (this copy's last save); never throws (retries itself). */
  forget(runId: string, expected: StoredVersion | undefined): Promise<void>;
  publish(type: string, run: PipelineRun, payload: Record<string, unknown>): void;
  /** The run holds no slot any more (paused, waiting for a decision, or ended); resolves once its lease is free. */
  released(run: PipelineRun): Promise<void>;
  /** A paused run drives phases again (it was admitted before, so it takes a slot without queueing). */
  resumed(run: PipelineRun): void;
  /** This process in a cluster (recorded in results as `drivenBy`). */
  processId?: string;
  /** Makes this process the run's driver in a cluster (a lease); false when another process drives it. */
  claim(run: PipelineRun): Promise<boolean>;
  finished(run: PipelineRun, result: RunResult): Promise<void>;
  random: () => number;
}

type PipelineActor = Actor<typeof pipelineMachine>;
/** Which save of a run's snapshot the store holds: its status and the time it was written. */
export interface StoredVersion {
  status: string;
  updatedAt: number;
  /** In a journal: the key of the run's last append (what its next append names as the one it comes after). */
  token?: string;
}
/** The events that report a phase. */
type PhaseEvent = Extract<PipelineEvent, { outcome: PhaseOutcome }>;

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** Validates a decision and stamps it with the time it was taken. */
export function parseDecision(raw: unknown, now: number): Decision {
  if (!isRecord(raw)) throw new InvalidDecisionError('got no object.');
  if (raw.decision !== 'approve' && raw.decision !== 'reject') throw new InvalidDecisionError(`decision must be 'approve' or 'reject', got ${JSON.stringify(raw.decision)}.`);
  if (typeof raw.by !== 'string' || raw.by.trim() === '') throw new InvalidDecisionError('by must name who decided.');
  if (raw.reason !== undefined && typeof raw.reason !== 'string') throw new InvalidDecisionError('reason must be a string.');
  return { approve: raw.decision === 'approve', by: raw.by, ...(raw.reason === undefined ? {} : { reason: raw.reason }), at: now };
}

/**
 * One pipeline run: the driver of its actor. It runs the current phase's overlays (in parallel or in order, with
 * the phase's timeout and retries), reports the outcome to the actor, saves a checkpoint, and goes on, until the
 * actor pauses, waits for a decision, or ends. `done` resolves with the result, whatever the outcome.
 */
export class PipelineRun {
  readonly id: string;
  readonly correlationId: string;
  readonly done: Promise<RunResult>;
  /**
   * Resolves once the run is in the store (with checkpoints: its first snapshot, saved as it starts), so a crash
   * from then on loses nothing: `restore()` in the next process brings it back. Without checkpoints it is resolved
   * at once (nothing is stored). Rejects with the store's error when that first save fails (the run then fails).
   */
  durable: Promise<void> = Promise.resolve();
  /** The first save in progress: the run drives no phase before it lands. */
  #firstSave: Promise<unknown> = Promise.resolve();
  readonly #env: RunEnvironment;
  readonly #actor: PipelineActor;
  /** The run's logger, made on first use (a child logger costs more than a phase's bookkeeping). */
  #logger: Logger | undefined;
  #resolve!: (result: RunResult) => void;
  #started = false;
  #driving = false;
  /** The drive in progress (or the last one): it ends when the run stops driving, whether it ended or paused. */
  #driven: Promise<void> = Promise.resolve();
  #pauseRequested = false;
  #pauseWaiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** Aborts the calls of the phase in flight (a cancel, or the phase's timeout); replaced once aborted. */
  #controller: AbortController | null = null;
  /** A save in progress that a resume must not overtake. */
  #saving: Promise<void> = Promise.resolve();
  #interrupted = false;
  #resuming = false;
  #result: RunResult | null = null;
  /** The snapshot of this run the store holds as far as this copy knows (what a resume compares and sets). */
  #stored: StoredVersion | undefined;
  /** Journal entries not saved yet (when the environment journals runs), oldest first. */
  readonly #unsaved: NewEntry[] = [];
  /** How many of the unsaved entries are on their way in lazy checkpoints (the first ones). */
  #sent = 0;
  /** The lazy checkpoints in flight: resolves once each has landed or failed. */
  #landing: Promise<void> = Promise.resolve();
  /** The last version known to have landed (where a save starts over after a lazy checkpoint failed). */
  #landed: StoredVersion | undefined;
  /** The ending in progress, once one started. */
  #finishing: Promise<void> | undefined;
  /** Whether this copy has written the run (its first save, or any since): a copy brought back must first. */
  #claimed = false;
  /** A lazy checkpoint was refused (another writer got there first), or failed (the fault). */
  #lazyLost = false;
  #lazyFault: unknown;

  constructor(env: RunEnvironment, actor: PipelineActor, stored?: StoredVersion) {
    this.#env = env;
    this.#actor = actor;
    this.#stored = stored;
    this.#landed = stored;
    const { runId, correlationId } = actor.getSnapshot().context;
    this.id = runId;
    this.correlationId = correlationId;
    this.done = new Promise((resolve) => (this.#resolve = resolve));
    // The machine can end on its own (a decision deadline passing) while no phase is driving it.
    actor.subscribe({
      complete: () => {
        if (!this.#driving && actor.getSnapshot().status === 'done') void this.#finish();
      },
    });
  }

  /** The run's state: `queued` until it starts, then its current phase, `paused`, `awaitingDecision`, or how it ended. */
  get status(): PipelineStatus {
    if (!this.#started) return 'queued';
    const value = this.#actor.getSnapshot().value;
    return (typeof value === 'string' ? value : Object.keys(value)[0]) as PipelineStatus;
  }

  /** The run's data, outcomes and decision so far (frozen). */
  view(): { id: string; status: PipelineStatus; correlationId: string; data: RunData; phases: PhaseOutcome[]; warnings: string[]; decision: Decision | null; startedAt: number } {
    const { context } = this.#actor.getSnapshot();
    return { id: this.id, status: this.status, correlationId: this.correlationId, data: context.data, phases: context.outcomes, warnings: context.warnings, decision: context.decision, startedAt: context.startedAt };
  }

  get #log(): Logger {
    return (this.#logger ??= this.#env.logger.child({ runId: this.id, correlationId: this.correlationId }));
  }

  /** The actor, for the inspector. */
  get actor(): PipelineActor {
    return this.#actor;
  }

  /** True while the run holds an active slot (driving phases). */
  get driving(): boolean {
    return this.#driving;
  }

  /** Starts (or, after a restore, continues) the run from its current state. */
  begin(): void {
    if (!this.#started) {
      this.#started = true;
      this.#actor.start();
      // A restored run waiting for a decision: its deadline timer was not restored (xstate#5331).
      if (this.status === 'awaitingDecision') this.#actor.send({ type: 'REARM', now: this.#env.clock.now() });
    }
    const status = this.status;
    if (status === 'awaitingDecision' || status === 'paused') {
      void this.#env.released(this);
      return;
    }
    this.#drive();
  }

  /**
   * Pauses the run before its next phase starts; resolves once the paused run's snapshot is saved. A run already
   * paused or waiting for a decision resolves at once.
   */
  pause(): Promise<void> {
    this.#assertLive();
    const status = this.status;
    if (status === 'paused' || status === 'awaitingDecision') return this.#saving;
    this.#pauseRequested = true;
    return new Promise((resolve, reject) => this.#pauseWaiters.push({ resolve, reject }));
  }

  /**
   * Continues a paused run, or decides on a run waiting at consensus (`{ decision: 'approve' | 'reject', by,
   * reason? }`, required then). Resolves once the run is on its way (the decision is saved with its next checkpoint).
   */
  async resume(decision?: unknown): Promise<void> {
    this.#assertLive();
    if (this.#resuming) throw new RunStateError('RUN_CLAIMED', this.id, this.status, `Run ${this.id} is being resumed already.`);
    this.#resuming = true;
    try {
      await this.#saving;
      const status = this.status;
      // Everything the caller can get wrong is refused before the lease is taken.
      let parsed: Decision | undefined;
      if (status === 'awaitingDecision') parsed = parseDecision(decision, this.#env.clock.now());
      else if (status !== 'paused') throw new RunStateError('RUN_NOT_PAUSED', this.id, status, `Run ${this.id} is ${status}: only a paused run, or one waiting for a decision, can be resumed.`);
      else if (decision !== undefined) throw new InvalidDecisionError(`run ${this.id} is paused, not waiting for a decision: resume it without one.`);
      if (!(await this.#env.claim(this))) throw new RunStateError('RUN_CLAIMED', this.id, status, `Run ${this.id} was resumed by another kernel process, which drives it now.`);
      if (this.#result !== null) {
        // The run ended elsewhere while this resume waited (its result arrived): give back the lease just taken.
        await this.#env.released(this);
        this.#assertLive();
      }
      this.#send(parsed === undefined ? { type: 'RESUME' } : { type: 'DECIDE', decision: parsed });
      // One writer per run: the resumed snapshot (with the decision) replaces the paused one only if no other process
      // resumed it first, and it is durable before this resolves (a crash from here on continues the run decided).
      const expected = this.#stored;
      let stored: StoredVersion | undefined;
      try {
        stored = expected === undefined ? undefined : await this.#write('running');
      } catch (error) {
        // The store did not take the resume: the run still waits there, and this copy (already moved on) ends, so a
        // retry of resume() brings the run back from the store.
        await this.#env.released(this);
        this.#interrupted = true;
        void this.#finish();
        throw error;
      }
      if (stored === undefined) {
        // This copy is stale: another process resumed the run (or it ended). It stops here, changing nothing stored.
        await this.#env.released(this);
        this.#interrupted = true;
        void this.#finish();
        throw new RunStateError('RUN_CLAIMED', this.id, status, `Run ${this.id} was resumed by another kernel process, which drives it now.`);
      }
      this.#stored = stored;
      this.#env.publish('pipeline.resumed', this, parsed === undefined ? {} : { decision: parsed.approve ? 'approve' : 'reject', by: parsed.by });
      this.#env.resumed(this);
      this.#drive();
    } finally {
      this.#resuming = false;
    }
  }

  /** Cancels the run: aborts its overlay calls in flight and ends it as `cancelled`. Resolves with its result. */
  async cancel(reason = 'cancelled by the caller'): Promise<RunResult> {
    this.#assertLive();
    if (!this.#started) {
      this.#started = true;
      this.#actor.start();
    }
    this.#send({ type: 'CANCEL', reason });
    this.#controller?.abort(new ForgeError('CANCELLED', reason));
    if (!this.#driving) await this.#finish();
    return this.done;
  }

  /** Ends this handle with a result another kernel process reached (it drove the run). */
  settleWith(result: RunResult): void {
    if (this.#result !== null) return;
    this.#result = result;
    this.#actor.stop();
    this.#resolve(result);
  }

  /**
   * Ends this handle as `interrupted` without saving anything: for a run another process drives (its snapshot in
   * the store is that process's, and must not be overwritten by this handle's first state).
   */
  async abandon(): Promise<void> {
    if (this.#result !== null) return;
    this.#interrupted = true;
    await this.#finish();
  }

  /** Halts the run at its next phase boundary (the kernel is stopping); its checkpoint lets `restore()` continue it. */
  async interrupt(): Promise<void> {
    if (this.#result !== null) return;
    this.#interrupted = true;
    await this.#firstSave.catch(() => undefined);
    if (!this.#started && this.#env.checkpoints && this.#stored === undefined) {
      await this.#persist('queued').catch((error: unknown) => this.#log.warn({ err: error }, 'a queued run could not be saved as the kernel stopped'));
    }
    // A drive in progress ends at the next phase boundary, or when the pause it is saving is saved (it then holds
    // the run's checkpoint): either way the handle ends here, interrupted, with that checkpoint kept.
    if (this.#driving) await this.#driven;
    await this.#finish();
  }

  #assertLive(): void {
    if (this.#result !== null || this.#interrupted) throw new RunStateError('RUN_FINISHED', this.id, this.#result?.status ?? 'interrupted', `Run ${this.id} has ended (${this.#result?.status ?? 'interrupted'}).`);
  }

  #drive(): void {
    if (this.#driving) return;
    this.#driving = true;
    // Whoever started or resumed the run (often a bus subscriber, e.g. one answering pipeline.paused), the run is the
    // kernel's own work: its events start at hop 0 instead of inheriting that handler's hops.
    this.#driven = detached(() => this.#driveLoop());
  }

  async #driveLoop(): Promise<void> {
    try {
      await this.#firstSave;
      if (!(await this.#env.claim(this))) {
        // Another kernel process holds the run's lease: it drives the run; this copy stops where it is.
        this.#log.info('pipeline run is driven by another process');
        this.#interrupted = true;
      }
      if (this.#env.journaled && !this.#claimed && this.#stored !== undefined && !this.#interrupted) {
        // A copy brought back from the journal (restored, taken over) writes before it runs anything: of two copies
        // restored at once, only the one whose write lands drives the run; the other stops here (RUN_CLAIMED).
        this.#record({ kind: 'run.driven', at: this.#env.clock.now(), body: { by: this.#env.processId ?? `${hostname()}:${process.pid}` } });
        await this.#persist('running');
      }
      for (;;) {
        this.#raiseLazyFailure();
        const status = this.status;
        if (this.#actor.getSnapshot().status !== 'active') break;
        if (status === 'paused' || status === 'awaitingDecision') {
          await this.#env.released(this);
          return;
        }
        if (this.#interrupted) break;
        if (this.#pauseRequested) {
          this.#pauseRequested = false;
          this.#send({ type: 'PAUSE' });
          await this.#persist('paused');
          // Cancelled while the pause was being saved: the run ended; it is finished, not left waiting.
          if (this.#actor.getSnapshot().status === 'done') break;
          // Acknowledged once saved and its lease is free: any process can resume it from then on.
          await this.#env.released(this);
          this.#env.publish('pipeline.paused', this, { reason: 'requested', resumeAt: status });
          this.#settlePauseWaiters();
          return;
        }
        const phase = status as Phase;
        const event = await this.#runPhase(phase);
        if (this.status === 'cancelled') break;
        this.#send(event);
        if (event.type === 'AWAIT_DECISION') {
          await this.#persist('awaitingDecision');
          if (this.#actor.getSnapshot().status === 'done') break;
          await this.#env.released(this);
          this.#env.publish('pipeline.paused', this, { reason: 'decision', phase });
          this.#settlePauseWaiters();
          return;
        } else {
          this.#env.publish('pipeline.phase_completed', this, { phase, status: event.outcome.status, durationMs: event.outcome.durationMs });
          if (this.#env.checkpoints && this.#actor.getSnapshot().status === 'active') {
            if (this.#env.checkpoint !== undefined && this.#stored !== undefined) this.#checkpointLazily('running');
            else await this.#persist('running');
          }
        }
      }
    } catch (error) {
      if (isForgeError(error, 'RUN_CLAIMED')) {
        // Another process took the run over (its checkpoint is newer than this copy's): this copy ends here,
        // interrupted, and leaves the store to that process.
        this.#log.warn('pipeline run taken over by another process: this copy stops');
        this.#interrupted = true;
        this.#driving = false;
        await this.#finish();
        return;
      }
      // The driver's own failure (a store that cannot save a checkpoint): the run fails where it is, with that fault's
      // code (STORE_UNAVAILABLE…), not silently and not as if someone had cancelled it.
      this.#log.error({ err: error }, 'pipeline run halted');
      const code = isForgeError(error) ? error.code : 'RUN_HALTED';
      if (this.#actor.getSnapshot().status === 'active') this.#send({ type: 'HALT', code, message: `The run halted: ${(error as Error).message}` });
    } finally {
      this.#driving = false;
    }
    await this.#finish();
  }

  #settlePauseWaiters(): void {
    for (const waiter of this.#pauseWaiters.splice(0)) waiter.resolve();
  }

  async #persist(status: string): Promise<void> {
    // Every checkpoint after the first replaces only the one this copy wrote or loaded: a copy that lost the run to
    // another process (restored there, or resumed there) cannot write over that process's progress.
    const saving = this.#write(status).then((stored) => {
      if (stored === undefined) throw new RunStateError('RUN_CLAIMED', this.id, this.status, `Run ${this.id} is driven by another kernel process now: this copy stops.`);
      return stored;
    });
    this.#saving = saving.then(
      () => undefined,
      () => undefined,
    );
    this.#stored = await saving;
  }

  /**
   * Writes the run as `status`: its first save, or a compare and set on this copy's last one (undefined when another
   * writer got there first). The journal entries it carries are dropped from the unsaved ones once it lands.
   */
  async #write(status: string, token?: string): Promise<StoredVersion | undefined> {
    for (;;) {
      // Chained after the lazy checkpoints in flight (which this write hurries into the same commit): it lands only
      // if they all did.
      const expected = this.#stored;
      const snapshot = this.#actor.getPersistedSnapshot();
      const entries = this.#unsaved.slice(this.#sent);
      let stored: StoredVersion | undefined;
      try {
        stored = expected === undefined ? await this.#env.save(this.id, status, snapshot, entries, token) : await this.#env.replace(this.id, expected, status, snapshot, entries, token);
      } finally {
        await this.#landing;
        // A lazy checkpoint that failed is written again with this copy's next save, from the last landed version.
        if (this.#lazyFault !== undefined) this.#startOver();
      }
      if (stored !== undefined) {
        this.#unsaved.splice(0, entries.length);
        this.#landed = stored;
        this.#claimed = true;
        return stored;
      }
      // Refused: another writer has the run, unless a lazy checkpoint before it failed (then try again from there).
      if (this.#stored === this.#landed && this.#sent === 0 && !this.#lazyLost && expected !== this.#landed) continue;
      return undefined;
    }
  }

  /** Forgets the lazy checkpoints that did not land: the next save starts from the last version that did. */
  #startOver(): void {
    this.#stored = this.#landed;
    this.#sent = 0;
    this.#lazyLost = false;
    this.#lazyFault = undefined;
  }

  /**
   * A phase's checkpoint, not waited for: the run goes on at once and the journal commits it with others. Whether it
   * landed is known by the next phase boundary (another writer took the run: this copy stops; the journal failed:
   * the run halts) and before any save that is acknowledged to someone.
   */
  #checkpointLazily(status: string): void {
    const entries = this.#unsaved.slice(this.#sent);
    if (entries.length === 0) return;
    const { next, landed } = this.#env.checkpoint!(this.id, this.#stored!, status, entries);
    this.#sent += entries.length;
    this.#stored = next;
    const landing = landed.then(
      (ok) => {
        if (!ok) {
          this.#lazyLost = true;
          return;
        }
        // Landed (so did every append before it: they are chained): its entries are saved, whatever failed after it.
        this.#unsaved.splice(0, entries.length);
        this.#sent -= entries.length;
        this.#landed = next;
      },
      (error: unknown) => {
        this.#lazyFault ??= error;
      },
    );
    this.#landing = Promise.all([this.#landing, landing]).then(() => undefined);
  }

  /** Stops the drive when a lazy checkpoint was refused (RUN_CLAIMED) or failed (its fault halts the run). */
  #raiseLazyFailure(): void {
    if (this.#lazyFault !== undefined) throw this.#lazyFault instanceof Error ? this.#lazyFault : new ForgeError('JOURNAL_UNAVAILABLE', 'A checkpoint could not be journaled.');
    if (this.#lazyLost) throw new RunStateError('RUN_CLAIMED', this.id, this.status, `Run ${this.id} is driven by another kernel process now: this copy stops.`);
  }

  /** Records a journal entry to be saved with the run's next save (when the environment journals runs). */
  #record(entry: NewEntry): void {
    if (this.#env.journaled) this.#unsaved.push(entry);
  }

  /** Sends an event to the run's actor, and journals it: a restore replays the run's events in order. */
  #send(event: PipelineEvent): void {
    const before = this.#env.journaled && 'data' in event ? this.#actor.getSnapshot().context.data : undefined;
    this.#actor.send(event);
    if (!this.#env.journaled) return;
    // A phase's event carries the run's whole data after it: the journal keeps what the phase changed (a fold merges
    // it back), so a run's journal grows with its data once, not once per phase.
    const recorded = before === undefined || !('data' in event) ? event : { ...event, data: changed(before, event.data), dataDelta: true };
    this.#record({ kind: 'run.event', at: this.#env.clock.now(), body: { event: recorded } });
  }

  /** Journals how the run began: its actor's input and the overlays it will call (the first entry of its journal). */
  recordStart(body: { overlays: RecordedOverlay[]; kernel: string }): void {
    this.#record({ kind: 'run.started', at: this.#env.clock.now(), body: { input: this.#input, ...body } });
  }

  /** The actor's input, rebuilt from its context (what a fold starts the actor with). */
  get #input(): Record<string, unknown> {
    const { runId, correlationId, cluster, config, startedAt, data } = this.#actor.getSnapshot().context;
    return { runId, correlationId, cluster, config, startedAt, data };
  }

  /**
   * Ends the run in the store as a compare and set on this copy's last checkpoint (its snapshot, marked with how it
   * ended): `lost` when another process wrote since, and then this copy must record nothing. A store that fails here
   * does not stop the ending (its removal is retried): `sealed`. A journal that fails is tried again for a while —
   * a run is ended only once its journal says so — and, if it stays down (or the kernel stops), `unrecorded`: the run
   * did not end as far as anyone can know, so this copy ends interrupted and a restore continues it.
   */
  async #seal(): Promise<'sealed' | 'lost' | 'unrecorded'> {
    const { context } = this.#actor.getSnapshot();
    const at = this.#env.clock.now();
    // A completed run's settle carries its audit entry's content (the audit projection writes it from there).
    const audit = this.status === 'completed' ? auditEntry(this.id, { data: context.data, decision: context.decision, warnings: context.warnings, fuel: fuelByOverlay(context.outcomes) }, at) : undefined;
    this.#record({ kind: 'run.settled', at, body: { status: this.status, error: context.error, ...(audit === undefined ? {} : { audit: { capsuleId: audit.capsuleId, decision: audit.decision, detail: audit.detail } }) } });
    // One key for every try: a try that landed but whose answer was lost is recognised by the next, not refused.
    const token = randomUUID();
    for (let attempt = 1; ; attempt++) {
      try {
        const sealed = await this.#write(this.status, token);
        if (sealed === undefined) return 'lost';
        this.#stored = sealed;
        return 'sealed';
      } catch (error) {
        // The store's removal is retried later; a run the journal never took has nothing there to reopen.
        if (!this.#env.journaled || this.#landed === undefined) {
          this.#log.warn({ err: error }, 'the ended run could not be marked ended in the store');
          return 'sealed';
        }
        if (attempt >= SEAL_ATTEMPTS || this.#env.stopping?.() === true) {
          this.#log.error({ err: error, attempts: attempt }, 'the end of the run could not be journaled: it ends here as interrupted, and a restore continues it');
          return 'unrecorded';
        }
        if (attempt === 1) this.#log.warn({ err: error }, 'the end of the run could not be journaled yet: retrying');
        // Real time, not the run's clock: this waits for a disk or a server, not for the run's own timers.
        await new Promise((resolve) => setTimeout(resolve, Math.min(SEAL_RETRY_MAX_MS, SEAL_RETRY_MS * 2 ** (attempt - 1))));
      }
    }
  }

  /** Saves the run as `queued` before anything else happens to it (see `durable`); returns that save. */
  checkpointQueued(): Promise<void> {
    const saving = this.#persist('queued');
    this.#firstSave = saving;
    this.durable = saving;
    // Marked as handled here: a caller that never looks at `durable` gets no unhandled rejection (the run fails).
    saving.catch(() => undefined);
    return saving;
  }

  /** The save of this run the store holds as far as this copy knows (undefined before its first save). */
  get storedVersion(): StoredVersion | undefined {
    return this.#stored;
  }

  /** Drops this copy without a result or a trace (a copy revived only to be resumed, and refused): nothing holds it. */
  discard(): void {
    this.#interrupted = true;
    this.#actor.stop();
  }

  /** Ends the handle once: a stop arriving while the end is being journaled waits for that, not a second ending. */
  #finish(): Promise<void> {
    return (this.#finishing ??= this.#finishOnce());
  }

  async #finishOnce(): Promise<void> {
    if (this.#result !== null) return;
    // A first save still in flight lands before the end is recorded (else it would store an ended run as queued).
    await this.#firstSave.catch(() => undefined);
    if (this.#result !== null) return;
    const snapshot = this.#actor.getSnapshot();
    const { context } = snapshot;
    let ended = snapshot.status === 'done';
    const sealed = ended && (this.#stored !== undefined || this.#env.journaled) ? await this.#seal() : 'sealed';
    if (sealed !== 'sealed') {
      // Another process drove the run on since this copy's last checkpoint (it owns the ending), or the journal would
      // not take the end: either way this copy records nothing of an ending.
      if (sealed === 'lost') this.#log.warn('pipeline run ended here, but another process drives it: this copy ends interrupted and records nothing');
      ended = false;
      this.#interrupted = true;
    }
    if (this.#result !== null) return;
    const status = ended ? (this.status as 'completed' | 'failed' | 'cancelled') : 'interrupted';
    const result: RunResult = {
      id: this.id,
      status,
      correlationId: this.correlationId,
      phases: context.outcomes,
      data: context.data,
      warnings: context.warnings,
      error: context.error,
      decision: context.decision,
      fuel: fuelByOverlay(context.outcomes),
      events: eventsPublished(context.outcomes),
      startedAt: context.startedAt,
      durationMs: this.#env.clock.now() - context.startedAt,
      ...(this.#env.processId === undefined ? {} : { drivenBy: this.#env.processId }),
    };
    this.#result = result;
    for (const waiter of this.#pauseWaiters.splice(0)) waiter.reject(new RunStateError('RUN_FINISHED', this.id, status, `Run ${this.id} ended (${status}) before it could pause.`));
    this.#actor.stop();
    if (ended) await this.#env.forget(this.id, this.#stored);
    // An ended run's lease is freed in the background: nothing waits to claim it.
    void this.#env.released(this);
    await this.#env.finished(this, result);
    const { completion } = this.#env.hooks;
    if (completion !== undefined) this.#hook('completion', () => completion(result));
    this.#resolve(result);
  }

  /** Runs a hook; what it throws or rejects with is logged, never the run's problem. */
  #hook(name: string, call: () => unknown): void {
    try {
      const out = call();
      if (out instanceof Promise) out.catch((error: unknown) => this.#log.warn({ err: error, hook: name }, 'a pipeline hook failed'));
    } catch (error) {
      this.#log.warn({ err: error, hook: name }, 'a pipeline hook failed');
    }
  }

  /** Runs one phase and returns the event that reports it. */
  async #runPhase(phase: Phase): Promise<PhaseEvent> {
    const { context } = this.#actor.getSnapshot();
    const settings = context.config.phases[phase];
    const { trust } = context.config;
    const functions = this.#env.functions[phase];
    const data = context.data;
    const started = performance.now();
    const skipped = (reason: string): PhaseEvent => ({ type: 'PHASE_DONE', outcome: { phase, status: 'skipped', required: settings.required, durationMs: 0, overlays: [], reason }, data });

    if (!settings.enabled) return skipped('disabled');
    if (context.config.skip.includes(phase)) return skipped('skipped by the run');
    if (functions?.when !== undefined) {
      let run: boolean;
      try {
        run = functions.when(data) === true;
      } catch (error) {
        return this.#phaseEvent(phase, settings.required, data, [failure('condition', 'CONDITION_FAILED', error)], started);
      }
      if (!run) return skipped('condition not met');
    }
    if (settings.overlays.length === 0 && functions?.handler === undefined) return skipped('nothing to run');
    // The phase cache: a phase of overlays only (a handler is code the cache cannot see), keyed on its input, the
    // run's trust and the overlays' modules; a hit must pass what its calls would have (active, breaker, trust).
    const cache = settings.cache === true && functions?.handler === undefined && settings.overlays.length > 0 ? this.#env.phaseCache : undefined;
    const cacheKey = cache?.key(phase, settings, data, trust);
    const hit = cacheKey === undefined || !cache!.admits(settings, trust) ? undefined : cache!.get(cacheKey);

    const { prePhase, postPhase } = this.#env.hooks;
    if (prePhase !== undefined) this.#hook('prePhase', () => prePhase(phase, { id: this.id, data }));
    if (hit !== undefined) {
      const output = hit.output;
      const merged: Record<string, unknown> = { ...data, [phase]: output };
      if (isRecord(output.capsule)) merged.capsule = output.capsule;
      const overlays = hit.overlays.map((o) => ({ ...o, fuelUsed: 0, durationMs: 0, attempts: 0 }));
      const event = this.#phaseEvent(phase, settings.required, Object.freeze(merged), overlays, started);
      event.outcome.cached = true;
      if (postPhase !== undefined) this.#hook('postPhase', () => postPhase(phase, event.outcome, { id: this.id, data: event.data }));
      return event;
    }
    // One controller serves the run's phases until one aborts (an AbortController costs about a microsecond).
    const controller = (this.#controller ??= new AbortController());
    const cancelDeadline = this.#env.deadlines.add(settings.timeoutMs, () => controller.abort(new ForgeError('PHASE_TIMEOUT', `Phase ${phase} did not finish within ${settings.timeoutMs} ms.`)));
    const phaseEndsAt = this.#env.clock.now() + settings.timeoutMs;
    const phaseContext = { runId: this.id, phase, correlationId: this.correlationId, graph: this.#env.graph };
    const outcomes: OverlayOutcome[] = [];
    let output: Record<string, unknown> = {};
    let hostCalls = 0;
    try {
      if (settings.parallel) {
        const input = { ...data, context: phaseContext };
        const { overlays } = settings;
        // One overlay needs no Promise.all (its promise and array are a measurable share of a small phase).
        const results = overlays.length === 1 ? [await this.#callOverlay(overlays[0]!, input, settings, trust, controller.signal, phaseEndsAt, cacheKey !== undefined)] : await Promise.all(overlays.map((name) => this.#callOverlay(name, input, settings, trust, controller.signal, phaseEndsAt, cacheKey !== undefined)));
        for (const result of results) {
          hostCalls += result.hostCalls;
          outcomes.push(result.outcome);
          if (result.data !== undefined) output = { ...output, ...result.data };
        }
      } else {
        for (const [index, name] of settings.overlays.entries()) {
          const input = { ...data, [phase]: output, context: phaseContext };
          const result = await this.#callOverlay(name, input, settings, trust, controller.signal, phaseEndsAt, cacheKey !== undefined);
          hostCalls += result.hostCalls;
          outcomes.push(result.outcome);
          if (result.data !== undefined) output = { ...output, ...result.data };
          // A required phase fails at its first failing overlay: the ones after it do not run (they would work on
          // the output of a failed step), and say so.
          if (controller.signal.aborted || (settings.required && result.outcome.status !== 'ok')) {
            for (const rest of settings.overlays.slice(index + 1)) outcomes.push({ name: rest, status: 'not-run', code: 'NOT_RUN', message: `not run: ${name} failed before it`, fuelUsed: 0, durationMs: 0, attempts: 0 });
            break;
          }
        }
      }
      // The phase's handler runs after its overlays, unless the phase already failed (aborted, or a required one).
      const failed = settings.required && outcomes.some((o) => o.status !== 'ok');
      if (functions?.handler !== undefined && !controller.signal.aborted && !failed) {
        const result = await this.#callHandler(phase, functions.handler, deepFreeze({ ...data, [phase]: output }), controller.signal);
        outcomes.push(result.outcome);
        if (result.data !== undefined) output = { ...output, ...result.data };
      }
    } finally {
      cancelDeadline();
      if (controller.signal.aborted) this.#controller = null;
    }
    const merged: Record<string, unknown> = { ...data, [phase]: output };
    // A phase may hand on a new version of the run's subject (ingestion's normalized capsule).
    if (isRecord(output.capsule)) merged.capsule = output.capsule;
    // The data before the phase is frozen already: freezing the new output and the new top level is enough.
    deepFreeze(output);
    const event = this.#phaseEvent(phase, settings.required, Object.freeze(merged), outcomes, started);
    // Cached only when the phase's result is a function of its input: every overlay succeeded at its first attempt,
    // asked the host nothing, and published nothing (a frozen copy of the outcomes: no run can change another's).
    // The key is taken again: an overlay reloaded during the phase must not file its old version's result under the new.
    if (cacheKey !== undefined && event.type === 'PHASE_DONE' && hostCalls === 0 && outcomes.every((o) => o.status === 'ok' && o.attempts === 1 && o.published === undefined) && cache!.key(phase, settings, data, trust) === cacheKey) {
      cache!.set(cacheKey, { output, overlays: deepFreeze(outcomes.map((o) => ({ ...o }))) });
    }
    if (postPhase !== undefined) this.#hook('postPhase', () => postPhase(phase, event.outcome, { id: this.id, data: event.data }));
    return event;
  }

  #phaseEvent(phase: Phase, required: boolean, after: RunData, overlays: OverlayOutcome[], started: number): PhaseEvent {
    const failed = overlays.filter((o) => o.status !== 'ok' && o.status !== 'not-run');
    const outcome: PhaseOutcome = { phase, status: failed.length === 0 ? 'completed' : 'failed', required, durationMs: performance.now() - started, overlays };
    if (failed.length > 0) {
      // The overlay's own reason (its fail(...) message, or the error's) is what a person needs to fix the input.
      const names = failed.map((o) => `${o.name} (${o.code ?? o.status}${o.message === undefined ? '' : `: ${o.message}`})`).join(', ');
      if (required) return { type: 'PHASE_FAILED', outcome, data: after, error: { code: 'PHASE_FAILED', message: `Required phase ${phase} failed: ${names}.`, phase } };
      return { type: 'PHASE_DONE', outcome, data: after, warning: `Optional phase ${phase} failed: ${names}.` };
    }
    if (phase === 'consensus' && asksForDecision(after.consensus)) return { type: 'AWAIT_DECISION', outcome, data: after, now: this.#env.clock.now() };
    return { type: 'PHASE_DONE', outcome, data: after };
  }

  /**
   * Calls one overlay with the phase's retries; a failure is an outcome, never an exception. The phase's timer is the
   * one clock for the phase: it aborts the call (a timeout outcome, no fault of the overlay's). The call is told when
   * the phase ends (`phaseEndsInMs`), so an overlay deadline that would not clearly come first yields to the timer
   * instead of racing it to the same instant and sometimes blaming the overlay for the phase's timeout.
   */
  async #callOverlay(name: string, input: unknown, settings: { retries: number; backoffMs: number }, trust: number, signal: AbortSignal, phaseEndsAt: number, countHost = false): Promise<{ outcome: OverlayOutcome; data?: Record<string, unknown>; hostCalls: number }> {
    // Host calls of all attempts, counted when the run is journaled or the phase may be cached.
    const host = { calls: 0, count: countHost };
    const result = await this.#callOverlayAttempts(name, input, settings, trust, signal, phaseEndsAt, host);
    return { ...result, hostCalls: host.calls };
  }

  async #callOverlayAttempts(name: string, input: unknown, settings: { retries: number; backoffMs: number }, trust: number, signal: AbortSignal, phaseEndsAt: number, counted: { calls: number; count: boolean }): Promise<{ outcome: OverlayOutcome; data?: Record<string, unknown> }> {
    const started = performance.now();
    let fuelUsed = 0;
    let attempts = 0;
    // What every attempt that returned published (the engine delivers the events of any call that returns).
    const published: { type: string; attempt: number }[] = [];
    const withPublished = (outcome: OverlayOutcome): OverlayOutcome => (published.length === 0 ? outcome : { ...outcome, published });
    for (;;) {
      attempts++;
      let problem: { code: string; message: string };
      const callStarted = performance.now();
      // A journaled run keeps each call's host calls (arguments and answers): a replay plays them back.
      const host: HostCallRecord[] | undefined = this.#env.journaled || counted.count ? [] : undefined;
      const tape =
        host === undefined
          ? {}
          : {
              tape: {
                record: (call: HostCallRecord) => {
                  counted.calls++;
                  if (this.#env.journaled) host.push(call);
                },
              },
            };
      try {
        const capsule = isRecord(input) && isRecord(input.capsule) && typeof input.capsule.id === 'string' ? input.capsule.id : undefined;
        const result = await this.#env.callOverlay(name, input, { signal, correlationId: this.correlationId, trust, runId: this.id, phaseEndsInMs: phaseEndsAt - this.#env.clock.now(), ...(capsule === undefined ? {} : { capsuleId: capsule }), ...tape });
        fuelUsed += result.fuelUsed;
        this.#record({ kind: 'run.call', at: this.#env.clock.now(), body: { phase: this.status, overlay: name, attempt: attempts, input, output: result.output, fuelUsed: result.fuelUsed, durationMs: performance.now() - callStarted, ...(host?.length ? { host } : {}) } });
        for (const event of result.events ?? []) if (published.length < MAX_PUBLISHED_LISTED) published.push({ type: event.type, attempt: attempts });
        const output = result.output;
        if (isRecord(output) && output.ok === true) {
          const data = output.data === undefined ? {} : output.data;
          if (isRecord(data)) return { outcome: withPublished({ name, status: 'ok', fuelUsed, durationMs: performance.now() - started, attempts }), data };
          problem = { code: 'INVALID_OUTPUT', message: 'the overlay returned ok with data that is not an object' };
        } else if (isRecord(output) && output.ok === false) {
          const error = isRecord(output.error) ? output.error : {};
          problem = { code: 'OVERLAY_ERROR', message: typeof error.message === 'string' ? readableMessage(error.message) : 'the overlay returned ok: false' };
        } else {
          problem = { code: 'INVALID_OUTPUT', message: 'the overlay did not return { ok, data }' };
        }
      } catch (error) {
        const spent = (error as { fuelUsed?: number }).fuelUsed ?? 0;
        fuelUsed += spent;
        problem = { code: isForgeError(error) ? error.code : 'UNEXPECTED', message: readableMessage(String((error as Error).message)) };
        this.#record({ kind: 'run.call', at: this.#env.clock.now(), body: { phase: this.status, overlay: name, attempt: attempts, input, error: problem, fuelUsed: spent, durationMs: performance.now() - callStarted, ...(host?.length ? { host } : {}) } });
      }
      if (signal.aborted) return { outcome: withPublished(abortedOutcome(name, signal, fuelUsed, performance.now() - started, attempts)) };
      if (attempts > settings.retries) return { outcome: withPublished({ name, status: 'failed', ...problem, fuelUsed, durationMs: performance.now() - started, attempts }) };
      this.#log.info({ overlay: name, attempt: attempts, code: problem.code }, 'retrying an overlay');
      const delay = settings.backoffMs * 2 ** (attempts - 1) * (1 + RETRY_JITTER * (2 * this.#env.random() - 1));
      await this.#sleep(delay, signal);
      if (signal.aborted) return { outcome: withPublished(abortedOutcome(name, signal, fuelUsed, performance.now() - started, attempts)) };
    }
  }

  async #callHandler(phase: Phase, handler: NonNullable<PhaseFunctions['handler']>, data: RunData, signal: AbortSignal): Promise<{ outcome: OverlayOutcome; data?: Record<string, unknown> }> {
    const name = `handler:${phase}`;
    const started = performance.now();
    const context: PhaseContext = { runId: this.id, phase, correlationId: this.correlationId, signal };
    try {
      const result = await abortable(Promise.resolve().then(() => handler(data, context)), signal);
      if (result !== undefined && !isJsonObject(result)) {
        return { outcome: { name, status: 'failed', code: 'INVALID_HANDLER_RESULT', message: 'a phase handler must return a JSON object or nothing', fuelUsed: 0, durationMs: performance.now() - started, attempts: 1 } };
      }
      return { outcome: { name, status: 'ok', fuelUsed: 0, durationMs: performance.now() - started, attempts: 1 }, data: result === undefined ? {} : (JSON.parse(JSON.stringify(result)) as Record<string, unknown>) };
    } catch (error) {
      if (signal.aborted) return { outcome: abortedOutcome(name, signal, 0, performance.now() - started, 1) };
      return { outcome: failure(name, isForgeError(error) ? error.code : 'HANDLER_FAILED', error, performance.now() - started) };
    }
  }

  /** Waits `ms` on the run's clock, or less when the signal aborts. */
  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    const { clock } = this.#env;
    return new Promise((resolve) => {
      const aborted = (): void => {
        clock.clearTimeout(timer);
        resolve();
      };
      const timer = clock.setTimeout(() => {
        signal.removeEventListener('abort', aborted);
        resolve();
      }, ms);
      signal.addEventListener('abort', aborted, { once: true });
    });
  }
}

function failure(name: string, code: string, error: unknown, durationMs = 0): OverlayOutcome {
  return { name, status: 'failed', code, message: error instanceof Error ? error.message : String(error), fuelUsed: 0, durationMs, attempts: 1 };
}

function abortedOutcome(name: string, signal: AbortSignal, fuelUsed: number, durationMs: number, attempts: number): OverlayOutcome {
  const timedOut = isForgeError(signal.reason, 'PHASE_TIMEOUT');
  return { name, status: timedOut ? 'timeout' : 'cancelled', code: timedOut ? 'PHASE_TIMEOUT' : 'CANCELLED', message: (signal.reason as Error).message, fuelUsed, durationMs, attempts };
}

/** Settles with `work`, or rejects with the signal's reason when it aborts first. */
function abortable<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const aborted = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', aborted, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', aborted);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', aborted);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

function isJsonObject(value: unknown): value is Record<string, unknown> {
  if (!isRecord(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return false;
  try {
    return JSON.stringify(value) !== undefined;
  } catch {
    return false;
  }
}

/** The top-level keys of `after` whose values are not those of `before` (a phase only adds or replaces keys). */
function changed(before: RunData, after: RunData): Record<string, unknown> {
  const delta: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(after)) if (before[key] !== value) delta[key] = value;
  return delta;
}

/** Consensus asks for a human decision when one of its overlays says so (`needsDecision: true`). */
function asksForDecision(consensus: unknown): boolean {
  return isRecord(consensus) && consensus.needsDecision === true;
}

