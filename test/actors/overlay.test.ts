import { createActor, fromPromise } from 'xstate';
import { getShortestPaths } from 'xstate/graph';
import { describe, expect, it } from 'vitest';
import { overlayMachine, QUARANTINE_AFTER_FAILED_CHECKS, type OverlayEvent } from '../../actors/overlay.ts';

const input = { overlayId: 'ov_1', name: 'scorer', version: '1.0.0' };
const machine = overlayMachine.provide({
  actors: { load: fromPromise(() => Promise.resolve()), initialize: fromPromise(() => Promise.resolve()) },
});

async function settled(actor: ReturnType<typeof createActor<typeof machine>>, state: string): Promise<void> {
  for (let i = 0; i < 20 && actor.getSnapshot().value !== state; i++) await Promise.resolve();
  expect(actor.getSnapshot().value).toBe(state);
}

describe('Overlay lifecycle machine', () => {
  it('walks loading → ready → initializing → active ⇄ inactive, and terminates on unload', async () => {
    const actor = createActor(machine, { input }).start();
    const emitted: string[] = [];
    actor.on('*', (e) => emitted.push(e.type));
    await settled(actor, 'ready');
    actor.send({ type: 'ACTIVATE' });
    await settled(actor, 'active');
    actor.send({ type: 'DEACTIVATE' });
    expect(actor.getSnapshot().value).toBe('inactive');
    actor.send({ type: 'ACTIVATE' });
    expect(actor.getSnapshot().value).toBe('active');
    actor.send({ type: 'UNLOAD' });
    expect(actor.getSnapshot().value).toBe('terminated');
    expect(actor.getSnapshot().status).toBe('done');
    expect(emitted).toEqual(['activated', 'deactivated', 'activated', 'terminated']);
  });

  it(`quarantines after ${QUARANTINE_AFTER_FAILED_CHECKS} failed health checks in a row (a passing check resets the count)`, async () => {
    const actor = createActor(machine, { input }).start();
    await settled(actor, 'ready');
    actor.send({ type: 'ACTIVATE' });
    await settled(actor, 'active');
    actor.send({ type: 'HEALTH_FAILED', reason: 'x' });
    actor.send({ type: 'HEALTH_FAILED', reason: 'x' });
    actor.send({ type: 'HEALTH_OK' });
    actor.send({ type: 'HEALTH_FAILED', reason: 'x' });
    actor.send({ type: 'HEALTH_FAILED', reason: 'x' });
    expect(actor.getSnapshot().value).toBe('active');
    actor.send({ type: 'HEALTH_FAILED', reason: 'disk full' });
    expect(actor.getSnapshot()).toMatchObject({ value: 'quarantined', context: { reason: 'disk full' } });
    actor.send({ type: 'RELEASE' });
    expect(actor.getSnapshot()).toMatchObject({ value: 'active', context: { failedChecks: 0 } });
  });

  it('terminates when loading fails, and quarantines when initialize fails', async () => {
    const failing = overlayMachine.provide({ actors: { load: fromPromise(() => Promise.reject(new Error('bad module'))) } });
    const a = createActor(failing, { input }).start();
    await settled(a, 'terminated');
    expect(a.getSnapshot().context.reason).toContain('bad module');
    const badInit = overlayMachine.provide({ actors: { load: fromPromise(() => Promise.resolve()), initialize: fromPromise(() => Promise.reject(new Error('no config'))) } });
    const b = createActor(badInit, { input }).start();
    await settled(b, 'ready');
    b.send({ type: 'ACTIVATE' });
    await settled(b, 'quarantined');
  });

  it('reaches every state (model-based, xstate/graph, with the invoked actors done/error events)', () => {
    const events = [
      { type: 'xstate.done.actor.0.overlay.loading' },
      { type: 'xstate.error.actor.0.overlay.loading', error: new Error('x') },
      { type: 'ACTIVATE' },
      { type: 'xstate.done.actor.0.overlay.initializing' },
      { type: 'xstate.error.actor.0.overlay.initializing', error: new Error('x') },
      { type: 'DEACTIVATE' },
      { type: 'HEALTH_FAILED', reason: 'x' },
      { type: 'HEALTH_OK' },
      { type: 'RELEASE' },
      { type: 'UNLOAD' },
    ] as unknown as OverlayEvent[];
    const paths = getShortestPaths(machine, {
      input,
      events,
      serializeState: (s) => JSON.stringify([s.value, s.context.failedChecks]),
    });
    const reached = new Set(paths.map((p) => p.state.value));
    expect([...reached].sort()).toEqual(['active', 'inactive', 'initializing', 'loading', 'quarantined', 'ready', 'terminated']);
  });
});
