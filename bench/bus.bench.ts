import { createActor, createMachine, sendTo, setup } from 'xstate';
import { EventBus } from '../src/bus/bus.ts';
import { CascadeManager } from '../src/cascade/cascades.ts';
import { createLogger } from '../src/logger.ts';
import { MemoryStore } from '../src/store/memory-store.ts';
import { paired, row, type BenchOptions, type BenchRow } from './harness.ts';

/** Publish → delivered with one subscriber, against a bare async queue that awaits once per event. */
async function throughput(options: BenchOptions): Promise<BenchRow> {
  const count = options.quick ? 2_000 : 20_000;
  const [bus, bare] = await paired(
    async () => {
      const b = new EventBus({ capacity: count + 1 });
      let delivered = 0;
      let done: () => void = () => {};
      const all = new Promise<void>((r) => (done = r));
      b.subscribe({ types: ['bench.event'] }, () => {
        if (++delivered === count) done();
      });
      for (let i = 0; i < count; i++) await b.publish({ type: 'bench.event', payload: i });
      await all;
      await b.stop(0);
    },
    async () => {
      const queue: number[] = [];
      let delivered = 0;
      const handler = async (n: number): Promise<void> => {
        delivered += n >= 0 ? 1 : 0;
        await Promise.resolve();
      };
      for (let i = 0; i < count; i++) queue.push(i);
      while (queue.length > 0) await handler(queue.shift()!);
      if (delivered !== count) throw new Error('bare queue lost events');
    },
    count,
    options,
  );
  // A throughput figure: ratio = our events per second over the bare queue's.
  return { ...row('bus publish → delivered, 1 subscriber (throughput vs bare async queue)', 1e9 / bus, 1e9 / bare, 'events/s', '≥ 25 %', null), ratio: bare / bus, pass: bare / bus >= 0.25 };
}

/** One cascade hop (validate, transition, persist) against a bare XState sendTo hop between two actors. */
async function cascadeHop(options: BenchOptions): Promise<BenchRow> {
  const hops = options.quick ? 2_000 : 20_000;
  const logger = createLogger({ level: 'silent' });
  const receiver = createMachine({ id: 'receiver', on: { HOP: {} } });
  const sender = setup({ actors: { receiver } }).createMachine({
    id: 'sender',
    invoke: { id: 'receiver', src: 'receiver' },
    on: { GO: { actions: sendTo('receiver', { type: 'HOP' }) } },
  });
  const [ours, bare] = await paired(
    async () => {
      const cascades = new CascadeManager({ store: new MemoryStore(), logger, maxLiveChains: hops + 1 });
      for (let i = 0; i < hops; i++) {
        const chain = await cascades.start('a', 'insight.detected', { maxHops: 1 });
        await cascades.propagate(chain.id, 'b');
      }
      cascades.stop();
    },
    async () => {
      for (let i = 0; i < hops; i++) {
        const actor = createActor(sender).start();
        actor.send({ type: 'GO' });
        actor.stop();
        await Promise.resolve();
      }
    },
    hops,
    options,
  );
  return row('cascade hop (start + validated, persisted hop) vs bare XState sendTo hop', ours / 1e3, bare / 1e3, 'µs/hop', '≤ 2×', (r) => r !== null && r <= 2);
}

export async function busBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  return [await throughput(options), await cascadeHop(options)];
}
