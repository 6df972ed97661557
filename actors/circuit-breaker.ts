import { assign, emit, setup } from 'xstate';

/** How a breaker decides; resolved once per overlay, never per call. */
export interface BreakerConfig {
  /** Consecutive overlay faults that open the breaker. */
  consecutiveFailures: number;
  /** Outcomes kept for the failure rate (a sliding window of the last N calls). */
  windowSize: number;
  /** Calls the window must hold before the rate can open the breaker. */
  minimumCalls: number;
  /** Share of faults in the window (0–1) that opens the breaker. */
  failureRate: number;
  /** A call slower than this (ms) counts as a fault, even if it succeeded. */
  slowCallMs: number;
  /** First wait before a probe is allowed (ms). */
  resetTimeoutMs: number;
  /** Each reopening multiplies the wait by this. */
  backoffFactor: number;
  /** The wait never exceeds this (ms). */
  maxResetTimeoutMs: number;
  /** The wait varies by ± this share, so breakers opened together do not probe together. */
  jitter: number;
}

export const DEFAULT_BREAKER_CONFIG: BreakerConfig = Object.freeze({
  consecutiveFailures: 5,
  windowSize: 20,
  minimumCalls: 10,
  failureRate: 0.5,
  slowCallMs: 10_000,
  resetTimeoutMs: 30_000,
  backoffFactor: 2,
  maxResetTimeoutMs: 300_000,
  jitter: 0.2,
});

export interface BreakerContext {
  config: BreakerConfig;
  /** Overlay faults since the last success. */
  consecutive: number;
  /** The last outcomes, oldest first (true = fault). */
  window: boolean[];
  /** How many times in a row the breaker opened without a successful probe in between (drives the backoff). */
  openings: number;
  /** When the breaker last opened (ms since the epoch, from the caller's clock); null when closed. */
  openedAt: number | null;
  /** The wait chosen at the last opening (ms). */
  resetAfterMs: number;
  /** The wait still to run when the open state is (re-)entered (ms): the full wait, or what is left after a restore. */
  remainingMs: number;
  /** True while the single half-open probe is in flight. */
  probing: boolean;
  /** Whether the last ACQUIRE was admitted. */
  admitted: boolean;
  /** Calls rejected fast since the breaker last closed. */
  rejected: number;
  /** State of the deterministic jitter generator (xorshift32), kept in context so snapshots restore it. */
  seed: number;
}

export type BreakerEvent =
  /** A call wants to run; read `context.admitted` right after sending. */
  | { type: 'ACQUIRE' }
  /**
   * The admitted call finished; `durationMs` decides whether it was slow. `probe` says it was admitted as the
   * half-open probe (a call admitted earlier and finishing late must not settle the probe).
   */
  | { type: 'SUCCESS'; durationMs: number; at: number; probe: boolean }
  /** The overlay itself failed (trap, out of fuel, deadline, error result). */
  | { type: 'FAILURE'; at: number; probe: boolean }
  /** The admitted call ended for a reason that is not the overlay's (a caller mistake): it neither helps nor hurts. */
  | { type: 'RELEASE'; probe: boolean }
  /** An operator closes the breaker. */
  | { type: 'RESET' }
  /** An operator opens the breaker until reset. */
  | { type: 'FORCE_OPEN'; at: number }
  /** After a restore from a snapshot: timers are not restored (xstate#5331), so re-arm the open wait from `now`. */
  | { type: 'REARM'; now: number };

export type BreakerEmitted =
  | { type: 'open'; resetAfterMs: number; forced: boolean }
  | { type: 'halfOpen' }
  | { type: 'close' }
  | { type: 'reject'; state: 'open' | 'halfOpen' | 'forcedOpen' };

export interface BreakerInput {
  config?: Partial<BreakerConfig>;
  /** Seed of the jitter (any 32-bit integer but 0). */
  seed?: number;
}

function nextSeed(seed: number): number {
  let x = seed | 0 || 0x9e3779b9;
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x | 0;
}

/** The wait before the next probe: exponential in the openings, capped, with jitter (ms). */
function resetWait(context: BreakerContext, openings: number, seed: number): number {
  const { resetTimeoutMs, backoffFactor, maxResetTimeoutMs, jitter } = context.config;
  const base = Math.min(maxResetTimeoutMs, resetTimeoutMs * backoffFactor ** Math.max(0, openings - 1));
  const unit = (seed >>> 0) / 0xffffffff;
  return Math.max(0, Math.round(base * (1 + jitter * (2 * unit - 1))));
}

function trips(context: BreakerContext, consecutive: number, window: boolean[]): boolean {
  const { consecutiveFailures, minimumCalls, failureRate } = context.config;
  if (consecutive >= consecutiveFailures) return true;
  if (window.length < minimumCalls) return false;
  return window.filter(Boolean).length / window.length >= failureRate;
}

function record(context: BreakerContext, fault: boolean): boolean[] {
  const window = [...context.window, fault];
  return window.length > context.config.windowSize ? window.slice(window.length - context.config.windowSize) : window;
}

function faultOf(context: BreakerContext, event: BreakerEvent): boolean {
  return event.type === 'FAILURE' || (event.type === 'SUCCESS' && event.durationMs > context.config.slowCallMs);
}

/**
 * The circuit breaker of one overlay: `closed` → `open` on too many overlay faults (consecutive, or a failure rate
 * over a sliding window with a minimum volume; slow calls count as faults); `open` → `halfOpen` after a wait that
 * grows exponentially with each reopening (capped, jittered); `halfOpen` admits exactly one probe and rejects the
 * rest; the probe's success closes it, its fault reopens it. `forcedOpen` holds until a manual reset.
 *
 * Pure: the caller passes the time in events (`at`, `now`), so snapshots restore exactly and tests need no clock
 * but the actor's (SimulatedClock drives the `after` wait).
 */
export const circuitBreakerMachine = setup({
  types: {
    context: {} as BreakerContext,
    events: {} as BreakerEvent,
    emitted: {} as BreakerEmitted,
    // The assertion is what types the machine's input (XState infers it from this value); the linter cannot see that.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    input: {} as BreakerInput | undefined,
  },
  delays: {
    resetWait: ({ context }) => context.remainingMs,
  },
  guards: {
    trips: ({ context, event }) => faultOf(context, event) && trips(context, context.consecutive + 1, record(context, true)),
    isFault: ({ context, event }) => faultOf(context, event),
    probeFree: ({ context }) => !context.probing,
    isProbe: ({ context, event }) => context.probing && 'probe' in event && event.probe,
    probeFault: ({ context, event }) => context.probing && 'probe' in event && event.probe && faultOf(context, event),
  },
  actions: {
    admit: assign({ admitted: true }),
    rejectCall: assign(({ context }) => ({ admitted: false, rejected: context.rejected + 1 })),
    startProbe: assign({ admitted: true, probing: true }),
    endProbe: assign({ probing: false }),
    recordSuccess: assign(({ context }) => ({ consecutive: 0, window: record(context, false) })),
    recordFault: assign(({ context }) => ({ consecutive: context.consecutive + 1, window: record(context, true) })),
    open: assign(({ context, event }) => {
      const openings = context.openings + 1;
      const seed = nextSeed(context.seed);
      const wait = resetWait(context, openings, seed);
      const at = 'at' in event ? event.at : 0;
      return { openings, seed, openedAt: at, resetAfterMs: wait, remainingMs: wait, probing: false, consecutive: 0, window: [] };
    }),
    forceOpen: assign(({ event }) => ({ openedAt: 'at' in event ? event.at : 0, probing: false })),
    rearm: assign(({ context, event }) => {
      if (event.type !== 'REARM' || context.openedAt === null) return {};
      return { remainingMs: Math.max(0, context.openedAt + context.resetAfterMs - event.now) };
    }),
    close: assign({ consecutive: 0, window: [], openings: 0, openedAt: null, probing: false, rejected: 0 }),
    emitOpen: emit(({ context }) => ({ type: 'open' as const, resetAfterMs: context.resetAfterMs, forced: false })),
    emitForcedOpen: emit(() => ({ type: 'open' as const, resetAfterMs: Number.POSITIVE_INFINITY, forced: true })),
    emitHalfOpen: emit({ type: 'halfOpen' as const }),
    emitClose: emit({ type: 'close' as const }),
    emitRejectOpen: emit({ type: 'reject' as const, state: 'open' as const }),
    emitRejectHalfOpen: emit({ type: 'reject' as const, state: 'halfOpen' as const }),
    emitRejectForced: emit({ type: 'reject' as const, state: 'forcedOpen' as const }),
  },
}).createMachine({
  id: 'breaker',
  initial: 'closed',
  context: ({ input }) => ({
    config: { ...DEFAULT_BREAKER_CONFIG, ...input?.config },
    consecutive: 0,
    window: [],
    openings: 0,
    openedAt: null,
    resetAfterMs: 0,
    remainingMs: 0,
    probing: false,
    admitted: false,
    rejected: 0,
    seed: input?.seed ?? 0x2545f491,
  }),
  on: {
    RESET: { target: '.closed', actions: ['close', 'emitClose'] },
    FORCE_OPEN: { target: '.forcedOpen', actions: ['forceOpen', 'emitForcedOpen'] },
  },
  states: {
    closed: {
      on: {
        ACQUIRE: { actions: 'admit' },
        SUCCESS: [
          { guard: 'trips', target: 'open', actions: ['open', 'emitOpen'] },
          { guard: 'isFault', actions: 'recordFault' },
          { actions: 'recordSuccess' },
        ],
        FAILURE: [{ guard: 'trips', target: 'open', actions: ['open', 'emitOpen'] }, { actions: 'recordFault' }],
      },
    },
    open: {
      after: { resetWait: { target: 'halfOpen', actions: 'emitHalfOpen' } },
      on: {
        ACQUIRE: { actions: ['rejectCall', 'emitRejectOpen'] },
        REARM: { target: 'open', reenter: true, actions: 'rearm' },
      },
    },
    halfOpen: {
      on: {
        ACQUIRE: [
          { guard: 'probeFree', actions: 'startProbe' },
          { actions: ['rejectCall', 'emitRejectHalfOpen'] },
        ],
        SUCCESS: [
          { guard: 'probeFault', target: 'open', actions: ['open', 'emitOpen'] },
          { guard: 'isProbe', target: 'closed', actions: ['close', 'emitClose'] },
        ],
        FAILURE: { guard: 'isProbe', target: 'open', actions: ['open', 'emitOpen'] },
        RELEASE: { guard: 'isProbe', actions: 'endProbe' },
      },
    },
    forcedOpen: {
      on: {
        ACQUIRE: { actions: ['rejectCall', 'emitRejectForced'] },
      },
    },
  },
});

/**
 * True when a success reported to a closed breaker would change nothing: no fault since the last success, a full
 * window without faults, and a call within the slow-call limit. The registry skips that send (≈5 µs) on the hot path.
 */
export function successIsNoOp(context: BreakerContext, durationMs: number): boolean {
  return context.consecutive === 0 && context.window.length === context.config.windowSize && durationMs <= context.config.slowCallMs && !context.window.includes(true);
}

/** The state names of the breaker, as the inspector and `health()` show them. */
export type BreakerState = 'closed' | 'open' | 'halfOpen' | 'forcedOpen';
