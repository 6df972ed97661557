import { assign, setup } from 'xstate';
import type { Phase } from '../src/manifest.ts';

/** How one overlay (or the phase's custom handler) fared in a phase. */
export interface OverlayOutcome {
  name: string;
  /** `not-run`: a required sequential phase stopped at an earlier overlay's failure before this one ran. */
  status: 'ok' | 'failed' | 'timeout' | 'cancelled' | 'not-run';
  /** The error code when it did not succeed (e.g. `OUT_OF_FUEL`, `OVERLAY_ERROR`, `PHASE_TIMEOUT`). */
  code?: string;
  message?: string;
  fuelUsed: number;
  durationMs: number;
  attempts: number;
  /** The types of the events its calls published, with the attempt that published each (at most 100); absent when none. */
  published?: { type: string; attempt: number }[];
}

/** How one phase fared: run, skipped (with why), or failed (with every overlay that failed, by name). */
export interface PhaseOutcome {
  phase: Phase;
  status: 'completed' | 'failed' | 'skipped';
  required: boolean;
  durationMs: number;
  overlays: OverlayOutcome[];
  reason?: string;
  /** The result was reused from an earlier run with the same input and overlays (the phase cache): nothing ran. */
  cached?: true;
}

/** A human decision on a run paused at consensus. */
export interface Decision {
  approve: boolean;
  by: string;
  reason?: string;
  at: number;
}

/** The run's data: its input, then each phase's merged output under the phase's name. JSON only. */
export type RunData = Readonly<Record<string, unknown>>;

export interface RunError {
  code: string;
  message: string;
  phase?: Phase;
}

/** How one phase runs; resolved per run, frozen, and persisted with the run. */
export interface PhaseSettings {
  /** A disabled phase is skipped. */
  enabled: boolean;
  /** A failed required phase fails the run; a failed optional phase adds a warning and the run goes on. */
  required: boolean;
  /** Run the phase's overlays at once (each sees the data from before the phase) or one after the other. */
  parallel: boolean;
  /** The whole phase, overlays and handler, must finish within this (ms). */
  timeoutMs: number;
  /** Further attempts of an overlay that failed. */
  retries: number;
  /** Wait before the first retry (ms); doubled for each further one, ± 20 % jitter. */
  backoffMs: number;
  /** Overlays by name, in call order (default: the loaded overlays declaring the phase, in load order). */
  overlays: readonly string[];
  /**
   * Reuse the phase's result for the same input and the same overlay modules (the idempotent phase cache): only a
   * phase whose overlays all succeeded without a host call or a published event is cached. Default false.
   */
  cache?: boolean;
}

/** A run's configuration: its own frozen value, so changing one run's configuration never changes another's. */
export interface RunConfig {
  phases: Readonly<Record<Phase, Readonly<PhaseSettings>>>;
  /** Phases this run skips. */
  skip: readonly Phase[];
  /** The trust the run's overlay calls carry (0–100), checked against each overlay's trustRequired. */
  trust: number;
  /** Deadline for a human decision after consensus asks for one (ms), or null for none. */
  decisionTimeoutMs: number | null;
}

export interface PipelineContext {
  runId: string;
  correlationId: string;
  /** The kernel cluster whose processes may drive the run (null outside one). */
  cluster: string | null;
  config: RunConfig;
  /** When the run started (ms since the epoch). */
  startedAt: number;
  data: RunData;
  /** Phase outcomes in the order the phases ran. */
  outcomes: PhaseOutcome[];
  warnings: string[];
  error: RunError | null;
  decision: Decision | null;
  /** Where a run paused between phases resumes. */
  resumeAt: Phase | null;
  /** Absolute decision deadline (ms since the epoch), kept so a restored run re-arms it. */
  decideBy: number | null;
  /** Decision time still to run when `awaitingDecision` is (re-)entered (ms). */
  remainingMs: number;
}

export type PipelineEvent =
  /** The current phase finished (completed, skipped, or failed while optional: the run goes on). */
  | { type: 'PHASE_DONE'; outcome: PhaseOutcome; data: RunData; warning?: string }
  /** A required phase failed: the run fails. */
  | { type: 'PHASE_FAILED'; outcome: PhaseOutcome; data: RunData; error: RunError }
  /** Consensus finished and asks for a human decision. */
  | { type: 'AWAIT_DECISION'; outcome: PhaseOutcome; data: RunData; now: number }
  | { type: 'DECIDE'; decision: Decision }
  /** Between phases: hold the run until RESUME. */
  | { type: 'PAUSE' }
  | { type: 'RESUME' }
  | { type: 'CANCEL'; reason: string }
  /** The driver cannot go on (its store failed a checkpoint): the run fails with that fault's code, not as cancelled. */
  | { type: 'HALT'; code: string; message: string }
  /** After a restore: timers are not restored (xstate#5331), so re-arm the decision deadline from `now`. */
  | { type: 'REARM'; now: number };

export interface PipelineInput {
  runId: string;
  correlationId: string;
  cluster?: string | null;
  config: RunConfig;
  startedAt: number;
  data: RunData;
}

/** The phase after each phase; settlement is followed by completion. */
const NEXT = {
  ingestion: 'analysis',
  analysis: 'validation',
  validation: 'consensus',
  consensus: 'execution',
  execution: 'propagation',
  propagation: 'settlement',
  settlement: 'completed',
} as const;

/** The transitions every phase state shares: on to the next phase, fail, or pause before the next phase starts. */
function phaseState<P extends Phase>(phase: P) {
  return {
    on: {
      PHASE_DONE: { target: NEXT[phase], actions: 'recordPhase' },
      PHASE_FAILED: { target: 'failed', actions: ['recordPhase', 'recordError'] },
      PAUSE: { target: 'paused', actions: { type: 'pauseAt', params: { phase } } },
    },
  } as const;
}

/**
 * One pipeline run: a state per phase, `ingestion → analysis → validation → consensus → execution → propagation →
 * settlement → completed`, with `failed` and `cancelled`; `paused` between phases on request, and
 * `awaitingDecision` after consensus until a human decides (with an optional deadline kept in context, so a restored
 * run re-arms it). The driver in `src/pipeline` runs each phase's overlays and reports the outcome as an event; the
 * machine holds the run's data, outcomes and decision, so its persisted snapshot is the whole run.
 */
export const pipelineMachine = setup({
  types: {
    context: {} as PipelineContext,
    events: {} as PipelineEvent,
    input: {} as PipelineInput,
  },
  delays: {
    decisionDeadline: ({ context }) => context.remainingMs,
  },
  guards: {
    hasDeadline: ({ context }) => context.decideBy !== null,
    resumesAt: ({ context }, params: { phase: Phase }) => context.resumeAt === params.phase,
  },
  actions: {
    recordPhase: assign(({ context, event }) => {
      if (event.type !== 'PHASE_DONE' && event.type !== 'PHASE_FAILED' && event.type !== 'AWAIT_DECISION') return {};
      const warning = event.type === 'PHASE_DONE' ? event.warning : undefined;
      return { data: event.data, outcomes: [...context.outcomes, event.outcome], ...(warning === undefined ? {} : { warnings: [...context.warnings, warning] }) };
    }),
    recordError: assign(({ event }) => (event.type === 'PHASE_FAILED' ? { error: event.error } : {})),
    setDeadline: assign(({ context, event }) => {
      const timeoutMs = context.config.decisionTimeoutMs;
      if (event.type !== 'AWAIT_DECISION' || timeoutMs === null) return { decideBy: null };
      return { decideBy: event.now + timeoutMs, remainingMs: timeoutMs };
    }),
    rearm: assign(({ context, event }) => (event.type === 'REARM' && context.decideBy !== null ? { remainingMs: Math.max(0, context.decideBy - event.now) } : {})),
    decide: assign(({ context, event }) => (event.type === 'DECIDE' ? { decision: event.decision, decideBy: null, data: { ...context.data, decision: event.decision } } : {})),
    decisionTimedOut: assign({ error: { code: 'DECISION_TIMEOUT', message: 'Nobody decided on the run before its decision deadline.', phase: 'consensus' as const } }),
    pauseAt: assign((_, params: { phase: Phase }) => ({ resumeAt: params.phase })),
    clearPause: assign({ resumeAt: null }),
    recordCancel: assign(({ event }) => (event.type === 'CANCEL' ? { error: { code: 'CANCELLED', message: event.reason } } : {})),
    recordHalt: assign(({ event }) => (event.type === 'HALT' ? { error: { code: event.code, message: event.message } } : {})),
  },
}).createMachine({
  id: 'pipeline',
  initial: 'ingestion',
  context: ({ input }) => ({
    runId: input.runId,
    correlationId: input.correlationId,
    cluster: input.cluster ?? null,
    config: input.config,
    startedAt: input.startedAt,
    data: input.data,
    outcomes: [],
    warnings: [],
    error: null,
    decision: null,
    resumeAt: null,
    decideBy: null,
    remainingMs: 0,
  }),
  on: {
    CANCEL: { target: '.cancelled', actions: 'recordCancel' },
    HALT: { target: '.failed', actions: 'recordHalt' },
  },
  states: {
    ingestion: phaseState('ingestion'),
    analysis: phaseState('analysis'),
    validation: phaseState('validation'),
    consensus: {
      on: {
        ...phaseState('consensus').on,
        AWAIT_DECISION: { target: 'awaitingDecision', actions: ['recordPhase', 'setDeadline'] },
      },
    },
    execution: phaseState('execution'),
    propagation: phaseState('propagation'),
    settlement: phaseState('settlement'),
    paused: {
      on: {
        RESUME: [
          { guard: { type: 'resumesAt', params: { phase: 'ingestion' } }, target: 'ingestion', actions: 'clearPause' },
          { guard: { type: 'resumesAt', params: { phase: 'analysis' } }, target: 'analysis', actions: 'clearPause' },
          { guard: { type: 'resumesAt', params: { phase: 'validation' } }, target: 'validation', actions: 'clearPause' },
          { guard: { type: 'resumesAt', params: { phase: 'consensus' } }, target: 'consensus', actions: 'clearPause' },
          { guard: { type: 'resumesAt', params: { phase: 'execution' } }, target: 'execution', actions: 'clearPause' },
          { guard: { type: 'resumesAt', params: { phase: 'propagation' } }, target: 'propagation', actions: 'clearPause' },
          { guard: { type: 'resumesAt', params: { phase: 'settlement' } }, target: 'settlement', actions: 'clearPause' },
        ],
      },
    },
    awaitingDecision: {
      initial: 'open',
      on: {
        DECIDE: { target: 'execution', actions: 'decide' },
        REARM: { target: '.open', reenter: true, actions: 'rearm' },
      },
      states: {
        open: { always: { guard: 'hasDeadline', target: 'timed' } },
        timed: { after: { decisionDeadline: { target: '#pipeline.failed', actions: 'decisionTimedOut' } } },
      },
    },
    completed: { type: 'final' },
    failed: { type: 'final' },
    cancelled: { type: 'final' },
  },
});

/** The states of a run, as `run.status` and the inspector show them (`queued` before it starts). */
export type PipelineStatus = 'queued' | Phase | 'paused' | 'awaitingDecision' | 'completed' | 'failed' | 'cancelled';
