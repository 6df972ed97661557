import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventBus } from '../../src/bus/bus.ts';
import { PRIORITIES, type BusEvent, type Priority } from '../../src/bus/event.ts';
import { MemoryStore } from '../../src/store/memory-store.ts';
import { codeOf } from '../support/errors.ts';

const tick = async (ms = 0): Promise<void> => {
  await vi.advanceTimersByTimeAsync(ms);
};

describe('EventBus', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('compares priorities as ranks: a high-and-above subscriber gets high and critical, not normal', async () => {
    const bus = new EventBus();
    const seen: string[] = [];
    bus.subscribe({ patterns: ['capsule.*'], minPriority: 'high' }, (e) => void seen.push(e.priority));
    for (const priority of PRIORITIES) await bus.publish({ type: 'capsule.created', priority });
    await tick();
    expect(seen.sort()).toEqual(['critical', 'high']);
  });

  it('matches exact types and domain.* / *.action patterns, and freezes the payload', async () => {
    const bus = new EventBus();
    const got: string[] = [];
    bus.subscribe({ types: ['capsule.created'] }, (e) => void got.push(`exact:${e.type}`));
    bus.subscribe({ patterns: ['*.error'] }, (e) => void got.push(`error:${e.type}`));
    let payload: unknown;
    bus.subscribe({ patterns: ['capsule.*'] }, (e) => {
      payload = e.payload;
    });
    await bus.publish({ type: 'capsule.created', payload: { tags: ['a'] } });
    await bus.publish({ type: 'overlay.error' });
    await tick();
    expect(got.sort()).toEqual(['error:overlay.error', 'exact:capsule.created']);
    expect(Object.isFrozen(payload) && Object.isFrozen((payload as { tags: string[] }).tags)).toBe(true);
  });

  it('says whether anyone listens to a type, by exact type or pattern, until they unsubscribe', () => {
    const bus = new EventBus();
    expect(bus.listens('pipeline.started')).toBe(false);
    const off = bus.subscribe({ patterns: ['pipeline.*'] }, () => undefined);
    bus.subscribe({ types: ['capsule.created'] }, () => undefined);
    expect([bus.listens('pipeline.started'), bus.listens('capsule.created'), bus.listens('capsule.deleted')]).toEqual([true, true, false]);
    off();
    expect(bus.listens('pipeline.started')).toBe(false);
  });

  it('never lets a slow subscriber delay another', async () => {
    const bus = new EventBus({ handlerTimeoutMs: 60_000 });
    const fast: number[] = [];
    bus.subscribe({ types: ['job.done'] }, () => new Promise(() => {}));
    bus.subscribe({ types: ['job.done'] }, (e) => void fast.push((e.payload as { n: number }).n));
    for (let n = 0; n < 5; n++) await bus.publish({ type: 'job.done', payload: { n } });
    await tick();
    expect(fast).toEqual([0, 1, 2, 3, 4]);
  });

  it('retries a failing subscriber with backoff, then dead-letters (listed without removal, persisted), and retries to that subscriber only', async () => {
    const store = new MemoryStore();
    const bus = new EventBus({ maxAttempts: 3, retryDelayMs: 100, store, random: () => 0.5 });
    let failing = true;
    const attempts: number[] = [];
    const other: string[] = [];
    bus.subscribe({ name: 'flaky', types: ['capsule.created'] }, () => {
      attempts.push(Date.now());
      if (failing) throw new Error('boom');
    });
    bus.subscribe({ name: 'steady', types: ['capsule.created'] }, (e) => void other.push(e.id));
    const event = await bus.publish({ type: 'capsule.created', payload: { id: 1 } });
    await tick(10_000);
    expect(attempts).toHaveLength(3);
    expect(attempts[1]! - attempts[0]!).toBeLessThan(attempts[2]! - attempts[1]!);
    const letters = bus.deadLetters();
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ event: { id: event.id }, attempts: 3, error: { code: 'HANDLER_FAILED', message: 'boom' } });
    expect(bus.deadLetters()).toHaveLength(1);
    expect((await store.listDeadLetters()).map((d) => d.id)).toEqual([letters[0]!.id]);

    failing = false;
    await bus.retryDeadLetter(letters[0]!.id);
    await tick();
    expect(attempts).toHaveLength(4);
    expect(other).toEqual([event.id]);
    expect(bus.deadLetters()).toEqual([]);
    expect(await store.listDeadLetters()).toEqual([]);
    expect(bus.metrics()).toMatchObject({ published: 1, delivered: 2, failed: 3, retried: 2, deadLettered: 1 });
  });

  it('counts a handler past its deadline as a failure', async () => {
    const bus = new EventBus({ handlerTimeoutMs: 50, maxAttempts: 1 });
    bus.subscribe({ types: ['slow.job'] }, () => new Promise(() => {}));
    await bus.publish({ type: 'slow.job' });
    await tick(60);
    expect(bus.deadLetters()[0]?.error.code).toBe('HANDLER_TIMEOUT');
  });

  it('a filter that throws loses only its own subscriber\'s delivery (dead-lettered, not silent)', async () => {
    const bus = new EventBus();
    const got: string[] = [];
    bus.subscribe({ name: 'picky', types: ['capsule.created'], filter: () => { throw new Error('bad filter'); } }, () => void got.push('picky'));
    bus.subscribe({ name: 'plain', types: ['capsule.created'] }, () => void got.push('plain'));
    await bus.publish({ type: 'capsule.created' });
    await tick();
    expect(got).toEqual(['plain']);
    expect(bus.deadLetters()[0]).toMatchObject({ error: { code: 'FILTER_FAILED' }, attempts: 0 });
  });

  it('delivers targeted events only to subscribers with that target', async () => {
    const bus = new EventBus();
    const got: string[] = [];
    bus.subscribe({ types: ['insight.detected'], target: 'a' }, () => void got.push('a'));
    bus.subscribe({ types: ['insight.detected'], target: 'b' }, () => void got.push('b'));
    bus.subscribe({ types: ['insight.detected'] }, () => void got.push('untargeted'));
    await bus.publish({ type: 'insight.detected', targets: ['b'] });
    await tick();
    expect(got).toEqual(['b']);
  });

  it('threads correlation, causation and hops through handlers, and stops a feedback loop at the hop limit', async () => {
    const bus = new EventBus({ maxHops: 3, maxAttempts: 1 });
    const seen: BusEvent[] = [];
    bus.subscribe({ types: ['ping.sent'] }, async (e) => {
      seen.push(e);
      await bus.publish({ type: 'ping.sent' });
    });
    const root = await bus.publish({ type: 'ping.sent', correlationId: 'corr-1' });
    await tick();
    expect(seen.map((e) => e.hops)).toEqual([0, 1, 2, 3]);
    expect(seen.every((e) => e.correlationId === 'corr-1')).toBe(true);
    expect(seen[1]!.causationId).toBe(root.id);
    expect(seen[2]!.causationId).toBe(seen[1]!.id);
    expect(bus.deadLetters()[0]?.error.code).toBe('HOP_LIMIT');
  });

  it('applies backpressure: publish waits for room, then fails with QUEUE_FULL (never waits forever)', async () => {
    const bus = new EventBus({ capacity: 2, publishTimeoutMs: 500, handlerTimeoutMs: 60_000 });
    let release: () => void = () => {};
    bus.subscribe({ types: ['job.queued'] }, () => new Promise<void>((r) => (release = r)));
    await bus.publish({ type: 'job.queued' });
    await bus.publish({ type: 'job.queued' });
    const third = bus.publish({ type: 'job.queued' });
    const fourth = codeOf(bus.publish({ type: 'job.queued' }));
    release();
    await tick();
    await expect(third).resolves.toMatchObject({ type: 'job.queued' });
    await tick(500);
    expect(await fourth).toBe('QUEUE_FULL');
  });

  it('refuses a publish at once, in O(1), once as many publishers wait as the queue holds, however many pile up', async () => {
    const bus = new EventBus({ capacity: 10, publishTimeoutMs: 1_000, handlerTimeoutMs: 60_000 });
    bus.subscribe({ types: ['job.queued'] }, () => new Promise<void>(() => undefined));
    for (let i = 0; i < 10; i++) await bus.publish({ type: 'job.queued' });
    const outcomes: string[] = [];
    const publishes = Array.from({ length: 50_000 }, () => bus.publish({ type: 'job.queued' }).then(
      () => 'ok',
      (error: { code: string; details: { waitedMs: number } }) => `${error.code}:${error.details.waitedMs}`,
    ).then((outcome) => void outcomes.push(outcome)));
    // No time passes: every publisher past the ten waiting ones is refused already.
    await tick(0);
    expect(outcomes).toHaveLength(50_000 - 10);
    expect(new Set(outcomes)).toEqual(new Set(['QUEUE_FULL:0']));
    // The ten waiting ones are refused at their timeout, on time.
    await tick(1_000);
    await Promise.all(publishes);
    expect(outcomes.slice(-10)).toEqual(Array(10).fill('QUEUE_FULL:1000'));
  });

  it('lets timers fire while it works through a backlog of handlers that never wait', async () => {
    vi.useRealTimers();
    const total = 20_000;
    const bus = new EventBus({ capacity: total });
    let ticks = 0;
    let ticksWhenDone = -1;
    let done: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => (done = resolve));
    let delivered = 0;
    bus.subscribe({ types: ['job.queued'] }, () => {
      if (++delivered === total) {
        ticksWhenDone = ticks;
        done();
      }
    });
    const interval = setInterval(() => ticks++, 1);
    // Give the interval its first chance, then queue the whole backlog in one go.
    await new Promise((r) => setTimeout(r, 5));
    const before = ticks;
    for (let i = 0; i < total; i++) void bus.publish({ type: 'job.queued' });
    await finished;
    clearInterval(interval);
    // Had the deliveries run back to back in microtasks, no timer could have fired until the last one.
    expect(ticksWhenDone).toBeGreaterThan(before);
    await bus.stop();
  });

  it('checks a registered JSON Schema at publish', async () => {
    const bus = new EventBus();
    bus.registerSchema('capsule.created', { type: 'object', required: ['id'], properties: { id: { type: 'string' } } });
    await expect(bus.publish({ type: 'capsule.created', payload: { id: 'c1' } })).resolves.toBeDefined();
    expect(await codeOf(bus.publish({ type: 'capsule.created', payload: { id: 1 } }))).toBe('INVALID_EVENT');
  });

  it('refuses bad input: subscriptions to nothing or to bad types, past the cap; bad events', async () => {
    const bus = new EventBus({ maxSubscribers: 1 });
    expect(await codeOf(() => bus.subscribe({}, () => {}))).toBe('INVALID_SUBSCRIPTION');
    expect(await codeOf(() => bus.subscribe({ types: ['Not A Type'] }, () => {}))).toBe('INVALID_SUBSCRIPTION');
    bus.subscribe({ types: ['a.b'] }, () => {});
    expect(await codeOf(() => bus.subscribe({ types: ['a.b'] }, () => {}))).toBe('SUBSCRIBER_LIMIT');
    expect(await codeOf(bus.publish({ type: 'nodot' }))).toBe('INVALID_EVENT');
    expect(await codeOf(bus.publish({ type: 'a.b', priority: 'urgent' as Priority }))).toBe('INVALID_EVENT');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(await codeOf(bus.publish({ type: 'a.b', payload: cyclic }))).toBe('INVALID_EVENT');
  });

  it('stop() refuses new events, drains until its deadline, and reports what it could not deliver', async () => {
    const bus = new EventBus({ handlerTimeoutMs: 60_000 });
    const got: number[] = [];
    bus.subscribe({ name: 'quick', types: ['job.done'] }, (e) => void got.push((e.payload as { n: number }).n));
    bus.subscribe({ name: 'stuck', types: ['job.done'] }, () => new Promise(() => {}));
    await bus.publish({ type: 'job.done', payload: { n: 1 } });
    await bus.publish({ type: 'job.done', payload: { n: 2 } });
    const stopping = bus.stop(100);
    expect(await codeOf(bus.publish({ type: 'job.done' }))).toBe('BUS_STOPPED');
    await tick(200);
    const report = await stopping;
    expect(got).toEqual([1, 2]);
    expect(report.undelivered).toEqual([expect.objectContaining({ type: 'job.done', subscriber: 'stuck' })]);
  });
});

describe('EventBus properties (fast-check)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('delivers in priority order (critical first, FIFO within a priority) to a busy subscriber', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom(...PRIORITIES), { minLength: 1, maxLength: 40 }), async (priorities) => {
        const bus = new EventBus({ handlerTimeoutMs: 60_000 });
        let open: () => void = () => {};
        const gate = new Promise<void>((r) => (open = r));
        const order: { priority: Priority; n: number }[] = [];
        bus.subscribe({ types: ['job.queued'] }, async (e) => {
          const p = e.payload as { n: number };
          if (p.n === -1) await gate;
          else order.push({ priority: e.priority, n: p.n });
        });
        await bus.publish({ type: 'job.queued', payload: { n: -1 } });
        await vi.advanceTimersByTimeAsync(0);
        for (const [n, priority] of priorities.entries()) await bus.publish({ type: 'job.queued', priority, payload: { n } });
        open();
        await vi.advanceTimersByTimeAsync(0);
        const expected = priorities.map((priority, n) => ({ priority, n })).sort((a, b) => PRIORITIES.indexOf(b.priority) - PRIORITIES.indexOf(a.priority) || a.n - b.n);
        expect(order).toEqual(expected);
      }),
      { numRuns: 100 },
    );
  });

  it('with random subscribe, unsubscribe and failure schedules, loses nothing and redelivers nothing acknowledged', async () => {
    type Step = { kind: 'subscribe'; failures: number } | { kind: 'unsubscribe'; which: number } | { kind: 'publish' };
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ kind: fc.constant('subscribe' as const), failures: fc.integer({ min: 0, max: 4 }) }),
      fc.record({ kind: fc.constant('unsubscribe' as const), which: fc.nat(10) }),
      { weight: 3, arbitrary: fc.constant({ kind: 'publish' as const }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 40 }), async (steps) => {
        const maxAttempts = 3;
        const bus = new EventBus({ maxAttempts, retryDelayMs: 10, maxRetryDelayMs: 40 });
        const subs: { acked: Map<string, number>; failuresPerEvent: number; stop: () => void; active: boolean; expected: Set<string> }[] = [];
        for (const s of steps) {
          if (s.kind === 'subscribe') {
            const sub = { acked: new Map<string, number>(), failuresPerEvent: s.failures, stop: () => {}, active: true, expected: new Set<string>() };
            const tries = new Map<string, number>();
            sub.stop = bus.subscribe({ types: ['item.added'] }, (e) => {
              const n = (tries.get(e.id) ?? 0) + 1;
              tries.set(e.id, n);
              if (n <= sub.failuresPerEvent) throw new Error('not yet');
              sub.acked.set(e.id, (sub.acked.get(e.id) ?? 0) + 1);
            });
            subs.push(sub);
          } else if (s.kind === 'unsubscribe') {
            const sub = subs.filter((x) => x.active)[s.which];
            if (sub !== undefined) {
              sub.stop();
              sub.active = false;
            }
          } else {
            const event = await bus.publish({ type: 'item.added' });
            for (const sub of subs) if (sub.active) sub.expected.add(event.id);
          }
          await vi.advanceTimersByTimeAsync(1);
        }
        await vi.advanceTimersByTimeAsync(5_000);
        const dead = new Set(bus.deadLetters().map((d) => d.event.id));
        for (const sub of subs) {
          for (const count of sub.acked.values()) expect(count).toBe(1);
          if (!sub.active) continue;
          for (const id of sub.expected) {
            if (sub.failuresPerEvent < maxAttempts) expect(sub.acked.get(id)).toBe(1);
            else expect(dead.has(id)).toBe(true);
          }
        }
      }),
      { numRuns: 100 },
    );
  });
});
