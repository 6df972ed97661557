import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SimulatedClock } from 'xstate';
import { DeadlineScheduler } from '../../src/pipeline/deadlines.ts';

describe('DeadlineScheduler', () => {
  it('expires each deadline once, at its time, unless removed first, on one timer', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ ms: fc.integer({ min: 1, max: 10_000 }), removeAt: fc.option(fc.integer({ min: 0, max: 12_000 })) }), { maxLength: 30 }), (plans) => {
        const clock = new SimulatedClock();
        const scheduler = new DeadlineScheduler(clock);
        const expired: [number, number][] = [];
        const removals = plans.map((plan, i) => ({ at: plan.removeAt, remove: scheduler.add(plan.ms, () => expired.push([i, clock.now()])) }));
        // Step to every instant where something is due or removed: deadlines first, then removals at that instant.
        const instants = [...new Set([...plans.map((p) => p.ms), ...plans.flatMap((p) => (p.removeAt === null ? [] : [p.removeAt]))])].sort((a, b) => a - b);
        for (const t of instants) {
          clock.increment(t - clock.now());
          for (const r of removals) if (r.at === t) r.remove();
        }
        clock.increment(1_000_000);
        const expected = plans.flatMap((p, i) => (p.removeAt === null || p.ms <= p.removeAt ? [[i, p.ms]] : []));
        expect([...expired].sort((a, b) => a[0] - b[0])).toEqual(expected);
      }),
      { numRuns: 200 },
    );
  });

  it('re-arms for an earlier deadline and stops cleanly', () => {
    const clock = new SimulatedClock();
    const scheduler = new DeadlineScheduler(clock);
    const fired: string[] = [];
    scheduler.add(5_000, () => fired.push('late'));
    scheduler.add(1_000, () => fired.push('early'));
    clock.increment(1_000);
    expect(fired).toEqual(['early']);
    scheduler.stop();
    clock.increment(10_000);
    expect(fired).toEqual(['early']);
  });
});
