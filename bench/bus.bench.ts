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

/**
 * One cascade hop (validate, transition, write-behind hop record) against a bare XState `sendTo` hop between two
 * running actors. Chains and actors are created outside the timed part; samples alternate, medians are compared.
 */
async function cascadeHop(options: BenchOptions): Promise<BenchRow> {
  const chains = options.quick ? 200 : 1_000;
  const hopsPerChain = 8;
  const samples = options.quick ? 3 : 9;
  const logger = createLogger({ level: 'silent' });
  const receiver = createMachine({ id: 'receiver', on: { HOP: {} } });
  const sender = setup({ actors: { receiver } }).createMachine({
    id: 'sender',
    invoke: { id: 'receiver', src: 'receiver' },
    on: { GO: { actions: sendTo('receiver', { type: 'HOP' }) } },
  });
  const targets = Array.from({ length: hopsPerChain }, (_, i) => `overlay-${i}`);
  const ours: number[] = [];
  const bare: number[] = [];
  for (let sample = 0; sample < samples + 1; sample++) {
    const cascades = new CascadeManager({ store: new MemoryStore(), logger, maxLiveChains: chains + 1 });
    const ids: string[] = [];
    for (let c = 0; c < chains; c++) ids.push((await cascades.start('source', 'insight.detected', { maxHops: hopsPerChain })).id);
    let start = process.hrtime.bigint();
    for (const id of ids) for (const to of targets) await cascades.propagate(id, to);
    const oursNs = Number(process.hrtime.bigint() - start) / (chains * hopsPerChain);
    cascades.stop();

    const actor = createActor(sender).start();
    start = process.hrtime.bigint();
    for (let i = 0; i < chains * hopsPerChain; i++) {
      actor.send({ type: 'GO' });
      await Promise.resolve();
    }
    const bareNs = Number(process.hrtime.bigint() - start) / (chains * hopsPerChain);
    actor.stop();
    if (sample > 0) {
      ours.push(oursNs);
      bare.push(bareNs);
    }
  }
  const median = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
  return row('cascade hop (validated, recorded) vs bare XState sendTo hop', median(ours) / 1e3, median(bare) / 1e3, 'µs/hop', '≤ 2×', (r) => r !== null && r <= 2);
}

/** Heap per live cascade chain (an actor with its TTL timer) against a bare root actor. */
async function chainMemory(options: BenchOptions): Promise<BenchRow> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run the benchmarks with node --expose-gc (npm run bench does)');
  const count = options.quick ? 500 : 2_000;
  const settle = async (): Promise<number> => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    return process.memoryUsage().heapUsed;
  };
  const logger = createLogger({ level: 'silent' });
  let before = await settle();
  const cascades = new CascadeManager({ store: new MemoryStore(), logger, maxLiveChains: count + 1 });
  for (let i = 0; i < count; i++) await cascades.start('source', 'insight.detected');
  const perChain = ((await settle()) - before) / count;
  cascades.stop();
  before = await settle();
  const bareMachine = createMachine({ id: 'bare', initial: 'idle', states: { idle: {} } });
  const kept = Array.from({ length: count }, () => createActor(bareMachine).start());
  const perActor = ((await settle()) - before) / count;
  for (const actor of kept) actor.stop();
  return row('memory per live cascade chain (actor, TTL timer, record in the memory store)', perChain / 1024, perActor / 1024, 'KiB', 'reported', null);
}

export async function busBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  return [await throughput(options), await cascadeHop(options), await chainMemory(options)];
}
