import { assign, emit, fromPromise, setup } from 'xstate';

/** Consecutive failed health checks that quarantine an overlay. */
export const QUARANTINE_AFTER_FAILED_CHECKS = 3;

export interface OverlayContext {
  overlayId: string;
  name: string;
  version: string;
  /** Health checks failed in a row. */
  failedChecks: number;
  /** Why the overlay was quarantined or terminated, if it was. */
  reason: string | null;
}

export type OverlayEvent =
  /** Make a ready or inactive overlay serve calls (runs its `initialize` export the first time). */
  | { type: 'ACTIVATE' }
  | { type: 'DEACTIVATE' }
  | { type: 'HEALTH_OK' }
  | { type: 'HEALTH_FAILED'; reason: string }
  /** An operator lets a quarantined overlay serve again. */
  | { type: 'RELEASE' }
  | { type: 'UNLOAD' };

export type OverlayEmitted = { type: 'quarantined'; reason: string } | { type: 'activated' } | { type: 'deactivated' } | { type: 'terminated'; reason: string };

export interface OverlayInput {
  overlayId: string;
  name: string;
  version: string;
}

/**
 * The lifecycle of one loaded overlay (calls are admitted only in `active`; their counters and the breaker live
 * beside it, so a call costs no transition of this machine): `loading → ready → active ⇄ inactive`, `quarantined` after repeated failed
 * health checks, `terminated` when unloaded or when loading fails. The effects (loading the module, running its
 * `initialize` export) are named actors the kernel provides with `.provide()`, so the machine stays data.
 */
export const overlayMachine = setup({
  types: {
    context: {} as OverlayContext,
    events: {} as OverlayEvent,
    emitted: {} as OverlayEmitted,
    input: {} as OverlayInput,
  },
  actors: {
    /** Compiles and instantiates the overlay; provided by the kernel. */
    load: fromPromise<void, { overlayId: string }>(() => Promise.reject(new Error('the kernel provides "load"'))),
    /** Runs the overlay's `initialize` export, if it has one; provided by the kernel. */
    initialize: fromPromise<void, { overlayId: string }>(() => Promise.resolve()),
  },
  guards: {
    checksExhausted: ({ context }) => context.failedChecks + 1 >= QUARANTINE_AFTER_FAILED_CHECKS,
  },
  actions: {
    countFailedCheck: assign(({ context }) => ({ failedChecks: context.failedChecks + 1 })),
    clearChecks: assign({ failedChecks: 0 }),
    quarantine: assign(({ event }) => ({ reason: event.type === 'HEALTH_FAILED' ? event.reason : 'quarantined' })),
    emitQuarantined: emit(({ context }) => ({ type: 'quarantined' as const, reason: context.reason ?? 'quarantined' })),
    emitActivated: emit({ type: 'activated' as const }),
    emitDeactivated: emit({ type: 'deactivated' as const }),
    emitTerminated: emit(({ context }) => ({ type: 'terminated' as const, reason: context.reason ?? 'unloaded' })),
    failed: assign(({ event }) => ({ reason: `failed to start: ${String((event as { error?: { message?: string } }).error?.message ?? 'unknown error')}` })),
  },
}).createMachine({
  id: 'overlay',
  initial: 'loading',
  context: ({ input }) => ({ ...input, failedChecks: 0, reason: null }),
  on: {
    UNLOAD: { target: '.terminated' },
  },
  states: {
    loading: {
      invoke: {
        src: 'load',
        input: ({ context }) => ({ overlayId: context.overlayId }),
        onDone: 'ready',
        onError: { target: 'terminated', actions: 'failed' },
      },
    },
    ready: {
      on: { ACTIVATE: 'initializing' },
    },
    initializing: {
      invoke: {
        src: 'initialize',
        input: ({ context }) => ({ overlayId: context.overlayId }),
        onDone: { target: 'active', actions: 'emitActivated' },
        onError: { target: 'quarantined', actions: ['failed', 'emitQuarantined'] },
      },
    },
    active: {
      on: {
        DEACTIVATE: { target: 'inactive', actions: 'emitDeactivated' },
        HEALTH_OK: { actions: 'clearChecks' },
        HEALTH_FAILED: [
          { guard: 'checksExhausted', target: 'quarantined', actions: ['countFailedCheck', 'quarantine', 'emitQuarantined'] },
          { actions: 'countFailedCheck' },
        ],
      },
    },
    inactive: {
      on: { ACTIVATE: { target: 'active', actions: 'emitActivated' } },
    },
    quarantined: {
      on: { RELEASE: { target: 'active', actions: ['clearChecks', 'emitActivated'] } },
    },
    terminated: {
      type: 'final',
      entry: 'emitTerminated',
    },
  },
});

export type OverlayState = 'loading' | 'ready' | 'initializing' | 'active' | 'inactive' | 'quarantined' | 'terminated';
