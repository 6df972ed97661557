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
}

export type CascadeEvent =
  /** One hop to an overlay; the caller has validated it (no cycle, within the hop limit) before sending. */
  | { type: 'PROPAGATE'; to: string; at: number }
  | { type: 'COMPLETE' }
  /** After a restore from a snapshot or the store: re-arm the TTL from `now` (timers are not restored, xstate#5331). */
  | { type: 'REARM'; now: number };

export type CascadeEmitted = { type: 'hop'; to: string; hops: number } | { type: 'completed' } | { type: 'expired' };

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
}

/**
 * One cascade chain — an insight spreading from overlay to overlay: `active → completed | expired`. Hop-limited and
 * cycle-free by the caller's validation (before any mutation); TTL-bounded by an `after` timer whose deadline lives
 * in context, so a restored chain re-arms it.
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
  }),
  states: {
    active: {
      after: { ttl: { target: 'expired' } },
      on: {
        PROPAGATE: { actions: ['hop', 'emitHop'] },
        COMPLETE: { target: 'completed' },
        REARM: { target: 'active', reenter: true, actions: 'rearm' },
      },
    },
    completed: { type: 'final', entry: 'emitCompleted' },
    expired: { type: 'final', entry: 'emitExpired' },
  },
});
