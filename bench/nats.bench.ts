import { randomUUID } from 'node:crypto';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, nanos } from '@nats-io/transport-node';
import { startServices, stopServices } from '../scripts/services/index.ts';
import { LatencyWindow } from '../src/bus/latency.ts';
import { NatsBus } from '../src/bus/nats-bus.ts';
import { row, type BenchOptions, type BenchRow } from './harness.ts';

/** The same 256-byte payload for both sides. */
const PAYLOAD = { capsuleId: 'cap-1', note: 'x'.repeat(200) };

/**
 * Publish → delivered across two connections (as between two kernel processes) through the NATS bus, against the
 * raw JetStream client doing the same work (publish and await the ack; a durable pull consumer that acks) in the
 * same run. Throughput over the whole batch, and the p99 of publish-to-handler latency.
 */
export async function natsBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  const names = process.env.NATS_URL === undefined ? (['nats'] as const) : ([] as const);
  const { endpoints, started } = await startServices({ names });
  const servers = process.env.NATS_URL ?? endpoints.NATS_URL;
  const count = options.quick ? 300 : 3_000;
  try {
    // Raw: one connection publishes, another consumes.
    const tag = randomUUID().slice(0, 8);
    const pub = await connect({ servers });
    const sub = await connect({ servers });
    const jsm = await jetstreamManager(pub);
    const stream = `BENCH_RAW_${tag}`;
    await jsm.streams.add({ name: stream, subjects: [`rawbench${tag}.>`], duplicate_window: nanos(120_000) });
    await jsm.consumers.add(stream, { durable_name: 'raw', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, max_ack_pending: 256 });
    const rawLatency = new LatencyWindow(count);
    let rawSeen = 0;
    const rawDone = new Promise<void>((resolve) => {
      void (async () => {
        const messages = await jetstream(sub).consumers.get(stream, 'raw').then((c) => c.consume({ max_messages: 64 }));
        for await (const m of messages) {
          rawLatency.add(Date.now() - (m.json<{ at: number }>().at));
          m.ack();
          if (++rawSeen === count) {
            void messages.close();
            resolve();
          }
        }
      })();
    });
    const js = jetstream(pub);
    let t = performance.now();
    for (let i = 0; i < count; i++) await js.publish(`rawbench${tag}.capsule.created`, JSON.stringify({ ...PAYLOAD, at: Date.now() }), { msgID: `${tag}-${i}` });
    await rawDone;
    const rawRate = count / ((performance.now() - t) / 1e3);
    await jsm.streams.delete(stream);
    await pub.close();
    await sub.close();

    // Ours: a kernel bus publishes, another consumes as a group.
    const ourStream = `BENCH_BUS_${tag}`;
    const a = await NatsBus.connect({ servers, stream: ourStream, subjectPrefix: `busbench${tag}`, processId: 'bench-a' });
    const b = await NatsBus.connect({ servers, stream: ourStream, subjectPrefix: `busbench${tag}`, processId: 'bench-b' });
    const ourLatency = new LatencyWindow(count);
    let seen = 0;
    let resolveOurs!: () => void;
    const oursDone = new Promise<void>((r) => (resolveOurs = r));
    b.subscribe({ name: 'bench', types: ['capsule.created'] }, (event) => {
      ourLatency.add(Date.now() - event.timestamp);
      if (++seen === count) resolveOurs();
    });
    await new Promise((r) => setTimeout(r, 500));
    t = performance.now();
    for (let i = 0; i < count; i++) await a.publish({ type: 'capsule.created', payload: PAYLOAD });
    await oursDone;
    const ourRate = count / ((performance.now() - t) / 1e3);
    await a.stop(1_000);
    await b.stop(1_000);
    const cleanup = await connect({ servers });
    await (await jetstreamManager(cleanup)).streams.delete(ourStream).catch(() => false);
    await cleanup.close();
    return [
      row('NATS bus: publish → delivered across processes (throughput vs raw JetStream client)', ourRate, rawRate, 'events/s', 'reported', null),
      row('NATS bus: publish → handler latency p99 (vs raw JetStream client)', ourLatency.percentiles().p99, rawLatency.percentiles().p99, 'ms', 'reported', null),
    ];
  } finally {
    if (started.length > 0) await stopServices({ names: started });
  }
}
