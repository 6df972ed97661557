import fc from 'fast-check';
import { createActor, SimulatedClock, type Actor } from 'xstate';
import { getShortestPaths } from 'xstate/graph';
import { describe, expect, it } from 'vitest';
import { circuitBreakerMachine, DEFAULT_BREAKER_CONFIG, successIsNoOp, type BreakerConfig, type BreakerEmitted, type BreakerEvent } from '../../actors/circuit-breaker.ts';

type Breaker = Actor<typeof circuitBreakerMachine>;

function start(config: Partial<BreakerConfig> = {}, clock = new SimulatedClock()): { breaker: Breaker; clock: SimulatedClock; emitted: BreakerEmitted[] } {
  const breaker = createActor(circuitBreakerMachine, { input: { config }, clock });
  const emitted: BreakerEmitted[] = [];
  breaker.on('*', (event) => emitted.push(event));
  breaker.start();
  return { breaker, clock, emitted };
}

/** Runs one call through the breaker: acquire, then report the outcome. Returns whether it was admitted. */
function call(breaker: Breaker, outcome: 'ok' | 'fault' | 'slow' | 'callerError', at = 0): boolean {
  const probe = breaker.getSnapshot().value === 'halfOpen';
  breaker.send({ type: 'ACQUIRE' });
  if (!breaker.getSnapshot().context.admitted) return false;
  if (outcome === 'ok') breaker.send({ type: 'SUCCESS', durationMs: 5, at, probe });
  else if (outcome === 'slow') breaker.send({ type: 'SUCCESS', durationMs: DEFAULT_BREAKER_CONFIG.slowCallMs + 1, at, probe });
  else if (outcome === 'fault') breaker.send({ type: 'FAILURE', at, probe });
  else breaker.send({ type: 'RELEASE', probe });
  return true;
}

const state = (breaker: Breaker): string => breaker.getSnapshot().value;

describe('CircuitBreaker machine', () => {
  it('opens after 5 consecutive overlay faults, and says so', () => {
    const { breaker, emitted } = start();
    for (let i = 0; i < 4; i++) call(breaker, 'fault');
    expect(state(breaker)).toBe('closed');
    call(breaker, 'fault');
    expect(state(breaker)).toBe('open');
    expect(emitted).toEqual([{ type: 'open', resetAfterMs: breaker.getSnapshot().context.resetAfterMs, forced: false }]);
  });

  it('a success resets the consecutive count', () => {
    const { breaker } = start();
    for (let i = 0; i < 4; i++) call(breaker, 'fault');
    call(breaker, 'ok');
    for (let i = 0; i < 4; i++) call(breaker, 'fault');
    expect(state(breaker)).toBe('closed');
  });

  it('opens on the failure rate over the window once the minimum volume is reached, not before', () => {
    const { breaker } = start({ consecutiveFailures: 100, windowSize: 20, minimumCalls: 10, failureRate: 0.5 });
    for (let i = 0; i < 9; i++) call(breaker, i % 2 === 0 ? 'fault' : 'ok');
    expect(state(breaker)).toBe('closed');
    call(breaker, 'ok');
    expect(state(breaker)).toBe('closed');
    call(breaker, 'fault');
    expect(state(breaker)).toBe('open');
  });

  it('counts a slow call as a fault', () => {
    const { breaker } = start({ consecutiveFailures: 3 });
    for (let i = 0; i < 3; i++) call(breaker, 'slow');
    expect(state(breaker)).toBe('open');
  });

  it('rejects fast while open, then admits exactly one probe after the reset wait', () => {
    const { breaker, clock, emitted } = start({ jitter: 0 });
    for (let i = 0; i < 5; i++) call(breaker, 'fault');
    expect(call(breaker, 'ok')).toBe(false);
    clock.increment(DEFAULT_BREAKER_CONFIG.resetTimeoutMs - 1);
    expect(state(breaker)).toBe('open');
    clock.increment(1);
    expect(state(breaker)).toBe('halfOpen');
    breaker.send({ type: 'ACQUIRE' });
    expect(breaker.getSnapshot().context.admitted).toBe(true);
    breaker.send({ type: 'ACQUIRE' });
    expect(breaker.getSnapshot().context.admitted).toBe(false);
    expect(emitted.map((e) => e.type)).toEqual(['open', 'reject', 'halfOpen', 'reject']);
  });

  it('closes after a successful probe; a failed probe reopens with a longer (exponential, capped) wait', () => {
    const { breaker, clock } = start({ jitter: 0, resetTimeoutMs: 1_000, maxResetTimeoutMs: 5_000 });
    for (let i = 0; i < 5; i++) call(breaker, 'fault');
    const waits: number[] = [];
    for (let round = 0; round < 5; round++) {
      waits.push(breaker.getSnapshot().context.resetAfterMs);
      clock.increment(breaker.getSnapshot().context.resetAfterMs);
      expect(call(breaker, 'fault')).toBe(true);
      expect(state(breaker)).toBe('open');
    }
    expect(waits).toEqual([1_000, 2_000, 4_000, 5_000, 5_000]);
    clock.increment(breaker.getSnapshot().context.resetAfterMs);
    call(breaker, 'ok');
    expect(state(breaker)).toBe('closed');
    for (let i = 0; i < 5; i++) call(breaker, 'fault');
    expect(breaker.getSnapshot().context.resetAfterMs).toBe(1_000);
  });

  it('jitters the wait within its bounds, deterministically from the seed', () => {
    const waits = [1, 2, 3, 4, 5, 6, 7, 8].map((seed) => {
      const breaker = createActor(circuitBreakerMachine, { input: { seed }, clock: new SimulatedClock() }).start();
      for (let i = 0; i < 5; i++) call(breaker, 'fault');
      return breaker.getSnapshot().context.resetAfterMs;
    });
    for (const wait of waits) {
      expect(wait).toBeGreaterThanOrEqual(DEFAULT_BREAKER_CONFIG.resetTimeoutMs * 0.8);
      expect(wait).toBeLessThanOrEqual(DEFAULT_BREAKER_CONFIG.resetTimeoutMs * 1.2);
    }
    expect(new Set(waits).size).toBeGreaterThan(1);
  });

  it('ignores a late result of a call admitted before the breaker opened', () => {
    const { breaker, clock } = start({ jitter: 0 });
    for (let i = 0; i < 5; i++) call(breaker, 'fault');
    clock.increment(DEFAULT_BREAKER_CONFIG.resetTimeoutMs);
    breaker.send({ type: 'ACQUIRE' });
    breaker.send({ type: 'SUCCESS', durationMs: 1, at: 0, probe: false });
    expect(state(breaker)).toBe('halfOpen');
    breaker.send({ type: 'FAILURE', at: 0, probe: false });
    expect(state(breaker)).toBe('halfOpen');
    breaker.send({ type: 'SUCCESS', durationMs: 1, at: 0, probe: true });
    expect(state(breaker)).toBe('closed');
  });

  it('a probe released for a caller mistake frees the slot without deciding anything', () => {
    const { breaker, clock } = start({ jitter: 0 });
    for (let i = 0; i < 5; i++) call(breaker, 'fault');
    clock.increment(DEFAULT_BREAKER_CONFIG.resetTimeoutMs);
    call(breaker, 'callerError');
    expect(state(breaker)).toBe('halfOpen');
    expect(call(breaker, 'ok')).toBe(true);
    expect(state(breaker)).toBe('closed');
  });

  it('is forced open until an operator resets it, whatever the time', () => {
    const { breaker, clock, emitted } = start();
    breaker.send({ type: 'FORCE_OPEN', at: 0 });
    clock.increment(10 * DEFAULT_BREAKER_CONFIG.maxResetTimeoutMs);
    expect(state(breaker)).toBe('forcedOpen');
    expect(call(breaker, 'ok')).toBe(false);
    breaker.send({ type: 'RESET' });
    expect(state(breaker)).toBe('closed');
    expect(call(breaker, 'ok')).toBe(true);
    expect(emitted.map((e) => e.type)).toEqual(['open', 'reject', 'close']);
  });

  it('re-arms the open wait from its stored deadline after a restore (timers are not restored, xstate#5331)', () => {
    const first = start({ jitter: 0 });
    for (let i = 0; i < 5; i++) call(first.breaker, 'fault', 1_000_000);
    const persisted = first.breaker.getPersistedSnapshot();
    first.breaker.stop();

    const clock = new SimulatedClock();
    const restored = createActor(circuitBreakerMachine, { snapshot: persisted, clock }).start();
    expect(state(restored)).toBe('open');
    // 20 s of the 30 s wait have passed while the process was down.
    restored.send({ type: 'REARM', now: 1_000_000 + 20_000 });
    clock.increment(9_999);
    expect(state(restored)).toBe('open');
    clock.increment(1);
    expect(state(restored)).toBe('halfOpen');
  });

  it('reaches every state, through every kind of event (model-based, xstate/graph)', () => {
    const events: BreakerEvent[] = [
      { type: 'ACQUIRE' },
      { type: 'SUCCESS', durationMs: 1, at: 0, probe: true },
      { type: 'FAILURE', at: 0, probe: true },
      { type: 'RELEASE', probe: true },
      { type: 'RESET' },
      { type: 'FORCE_OPEN', at: 0 },
      { type: 'xstate.after.resetWait.breaker.open' } as unknown as BreakerEvent,
    ];
    const paths = getShortestPaths(circuitBreakerMachine, {
      input: { config: { consecutiveFailures: 2, windowSize: 4, minimumCalls: 4 } },
      events,
      serializeState: (snapshot) => JSON.stringify([snapshot.value, snapshot.context.consecutive, snapshot.context.probing, snapshot.context.window.length]),
    });
    const reached = new Set(paths.map((p) => p.state.value));
    expect([...reached].sort()).toEqual(['closed', 'forcedOpen', 'halfOpen', 'open']);
    const toClosedViaProbe = paths.find((p) => p.state.value === 'closed' && p.steps.some((s) => s.state.value === 'halfOpen'));
    expect(toClosedViaProbe ?? paths.find((p) => p.state.value === 'halfOpen')).toBeDefined();
  });
});

describe('CircuitBreaker properties (fast-check)', () => {
  type Command = { kind: 'call'; outcome: 'ok' | 'fault' | 'slow' | 'callerError' } | { kind: 'wait'; ms: number } | { kind: 'reset' };
  const command: fc.Arbitrary<Command> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('call' as const), outcome: fc.constantFrom('ok' as const, 'fault' as const, 'slow' as const, 'callerError' as const) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 80_000 }) }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reset' as const }) },
  );

  /**
   * Sends the commands; in half-open a second caller arrives while the first is still running, trying to sneak in
   * a second probe. `probesInFlight` counts probes admitted and not yet settled when `check` runs.
   */
  function replay(commands: Command[], check: (before: string, after: string, probesInFlight: number, cmd: Command) => void): void {
    const { breaker, clock } = start({ consecutiveFailures: 3, minimumCalls: 4, windowSize: 8, resetTimeoutMs: 10_000 });
    for (const cmd of commands) {
      const before = state(breaker);
      let probesInFlight = 0;
      if (cmd.kind === 'wait') clock.increment(cmd.ms);
      else if (cmd.kind === 'reset') breaker.send({ type: 'RESET' });
      else {
        const probe = before === 'halfOpen';
        breaker.send({ type: 'ACQUIRE' });
        const admitted = breaker.getSnapshot().context.admitted;
        if (probe && admitted) probesInFlight++;
        breaker.send({ type: 'ACQUIRE' });
        if (probe && breaker.getSnapshot().context.admitted) probesInFlight++;
        check(before, state(breaker), probesInFlight, cmd);
        if (admitted) {
          if (cmd.outcome === 'ok') breaker.send({ type: 'SUCCESS', durationMs: 1, at: clock.now(), probe });
          if (cmd.outcome === 'slow') breaker.send({ type: 'SUCCESS', durationMs: 60_000, at: clock.now(), probe });
          if (cmd.outcome === 'fault') breaker.send({ type: 'FAILURE', at: clock.now(), probe });
          if (cmd.outcome === 'callerError') breaker.send({ type: 'RELEASE', probe });
        }
      }
      check(before, state(breaker), 0, cmd);
    }
  }

  it('never has more than one probe in flight while half-open', () => {
    fc.assert(
      fc.property(fc.array(command, { maxLength: 80 }), (commands) => {
        replay(commands, (_before, _after, probesInFlight) => {
          expect(probesInFlight).toBeLessThanOrEqual(1);
        });
      }),
      { numRuns: 300 },
    );
  });

  it('never opens on caller errors and fast successes alone', () => {
    const harmless = fc.array(
      fc.oneof(fc.record({ kind: fc.constant('call' as const), outcome: fc.constantFrom('ok' as const, 'callerError' as const) }), fc.record({ kind: fc.constant('wait' as const), ms: fc.nat(100_000) })),
      { maxLength: 100 },
    );
    fc.assert(
      fc.property(harmless, (commands) => {
        replay(commands, (_before, after) => {
          expect(after).toBe('closed');
        });
      }),
      { numRuns: 200 },
    );
  });

  it('closes only after a successful probe (or an operator reset)', () => {
    fc.assert(
      fc.property(fc.array(command, { maxLength: 80 }), (commands) => {
        replay(commands, (before, after, _probes, cmd) => {
          if (after === 'closed' && before !== 'closed') {
            expect(cmd.kind === 'reset' || (cmd.kind === 'call' && cmd.outcome === 'ok' && before === 'halfOpen')).toBe(true);
          }
        });
      }),
      { numRuns: 300 },
    );
  });
  it('changes nothing when it receives a success the registry skips (successIsNoOp), after any history of calls', () => {
    fc.assert(
      // A tail of fast successes makes the clean, full window (where the send is skipped) common.
      fc.property(fc.array(command, { maxLength: 60 }), fc.nat(12), fc.integer({ min: 0, max: 20_000 }), (commands, tail, durationMs) => {
        const { breaker, clock } = start({ consecutiveFailures: 3, minimumCalls: 4, windowSize: 8, resetTimeoutMs: 10_000 });
        for (const cmd of [...commands, ...Array.from({ length: tail }, () => ({ kind: 'call' as const, outcome: 'ok' as const }))]) {
          if (cmd.kind === 'wait') clock.increment(cmd.ms);
          else if (cmd.kind === 'reset') breaker.send({ type: 'RESET' });
          else call(breaker, cmd.outcome, clock.now());
        }
        const before = breaker.getSnapshot();
        if (before.value !== 'closed' || !successIsNoOp(before.context, durationMs)) return;
        breaker.send({ type: 'SUCCESS', durationMs, at: clock.now(), probe: false });
        const after = breaker.getSnapshot();
        expect(after.value).toBe('closed');
        expect(after.context).toEqual(before.context);
      }),
      { numRuns: 300 },
    );
  });
});
