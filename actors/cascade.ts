import { assign, emit, setup } from 'xstate';

export interface CascadeContext {
  id: string;
  source: string;
  insightType: string;
  correlationId: string;
  hops: number;
  maxHops: number;
  /** Overlays the chain has reached, the source first: propagating to one of them again would be a cycle. */
  visited: string[];
  createdAt: number;
  /** Absolute deadline (ms since the epoch), kept so a restored chain can re-arm its TTL. */
  expiresAt: number;
  /** TTL still to run when `active` is (re-)entered (ms). */
  remainingMs: number;
  /** Insight events published in the chain, overlay calls it caused, and those that failed. */
  insights: number;
  actions: number;
  errors: number;
  /** Why a stopped chain stopped: `cycle` (an insight came back to an overlay it reached) or `hop-limit`. */
  endReason: 'cycle' | 'hop-limit' | null;
}

/** What a chain counts as it goes. */
export type CascadeCounter = 'insights' | 'actions' | 'errors';

export type CascadeEvent =
  /** One hop to an overlay; the caller has validated it (no cycle, within the hop limit) before sending. */
  | { type: 'PROPAGATE'; to: string; at: number }
  | { type: 'COMPLETE' }
  /** Its guard ended it: an insight would loop, or the hop budget is spent. The chain stops at once. */
  | { type: 'STOP'; reason: 'cycle' | 'hop-limit' }
  | { type: 'COUNT'; what: CascadeCounter }
  /** After a restore from a snapshot or the store: re-arm the TTL from `now` (timers are not restored, xstate#5331). */
  | { type: 'REARM'; now: number };

export type CascadeEmitted = { type: 'hop'; to: string; hops: number } | { type: 'completed' } | { type: 'expired' } | { type: 'stopped'; reason: 'cycle' | 'hop-limit' };

export interface CascadeInput {
  id: string;
  source: string;
  insightType: string;
  correlationId: string;
  maxHops: number;
  createdAt: number;
  ttlMs: number;
  /** When restoring: what the chain had reached. */
  hops?: number;
  visited?: string[];
  insights?: number;
  actions?: number;
  errors?: number;
}

/**
 * One cascade chain — an insight spreading from overlay to overlay: `active → completed | expired | stopped`.
 * Hop-limited and cycle-free by the caller's validation (before any mutation): a hop its guard refuses stops the chain
 * at once, with the reason; TTL-bounded by an `after` timer whose deadline lives in context, so a restored chain
 * re-arms it.
 */
export const cascadeMachine = setup({
  types: {
    context: {} as CascadeContext,
    events: {} as CascadeEvent,
    emitted: {} as CascadeEmitted,
    input: {} as CascadeInput,
  },
  delays: {
    ttl: ({ context }) => context.remainingMs,
  },
  actions: {
    hop: assign(({ context, event }) => (event.type === 'PROPAGATE' ? { hops: context.hops + 1, visited: [...context.visited, event.to] } : {})),
    emitHop: emit(({ context }) => ({ type: 'hop' as const, to: context.visited[context.visited.length - 1] ?? '', hops: context.hops })),
    rearm: assign(({ context, event }) => (event.type === 'REARM' ? { remainingMs: Math.max(0, context.expiresAt - event.now) } : {})),
    emitCompleted: emit({ type: 'completed' as const }),
    emitExpired: emit({ type: 'expired' as const }),
    count: assign(({ context, event }) => (event.type === 'COUNT' ? { [event.what]: context[event.what] + 1 } : {})),
    stop: assign(({ event }) => (event.type === 'STOP' ? { endReason: event.reason } : {})),
    emitStopped: emit(({ context }) => ({ type: 'stopped' as const, reason: context.endReason ?? 'cycle' })),
  },
}).createMachine({
  id: 'cascade',
  initial: 'active',
  context: ({ input }) => ({
    id: input.id,
    source: input.source,
    insightType: input.insightType,
    correlationId: input.correlationId,
    hops: input.hops ?? 0,
    maxHops: input.maxHops,
    visited: input.visited ?? [input.source],
    createdAt: input.createdAt,
    expiresAt: input.createdAt + input.ttlMs,
    remainingMs: input.ttlMs,
    insights: input.insights ?? 0,
    actions: input.actions ?? 0,
    errors: input.errors ?? 0,
    endReason: null,
  }),
  states: {
    active: {
      after: { ttl: { target: 'expired' } },
      on: {
        PROPAGATE: { actions: ['hop', 'emitHop'] },
        COMPLETE: { target: 'completed' },
        STOP: { target: 'stopped', actions: 'stop' },
        COUNT: { actions: 'count' },
        REARM: { target: 'active', reenter: true, actions: 'rearm' },
      },
    },
    completed: { type: 'final', entry: 'emitCompleted' },
    expired: { type: 'final', entry: 'emitExpired' },
    stopped: { type: 'final', entry: 'emitStopped' },
  },
});
