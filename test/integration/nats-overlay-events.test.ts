// Overlay events across processes on a real NATS JetStream: a copy of an overlay deactivated in one process hands
// its events to the active copy elsewhere, and a redelivered cascade event is the same hop, not a cycle.
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { NatsBus } from '../../src/bus/nats-bus.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { deleteStreams } from '../support/nats.ts';
import { until } from '../support/wait.ts';

const TRUSTED = { internal: true, trusted: true } as const;

describe('overlay events over NATS JetStream (real server)', () => {
  const services = inject('services');
  const kernels: Kernel[] = [];
  const streams: string[] = [];
  afterEach(async () => {
    await Promise.all(kernels.splice(0).map((k) => k.stop()));
    await deleteStreams(services.NATS_URL, streams.splice(0));
  });
  const cluster = () => {
    const tag = randomUUID().slice(0, 8);
    streams.push(`FORGE_OE_${tag}`);
    return async (processId: string): Promise<Kernel> => {
      const k = await createKernel({ logger: captureLogger().logger, cacheDir: false, bus: { transport: 'nats', servers: services.NATS_URL, stream: `FORGE_OE_${tag}`, subjectPrefix: `oe${tag}`, processId, retryDelayMs: 20 } });
      kernels.push(k);
      return k;
    };
  };

  it('hands the events of a copy deactivated in one process to the active copy in another: none lost, none dead-lettered', async () => {
    const join = cluster();
    const a = await join('a');
    const b = await join('b');
    const handled: { a: number[]; b: number[] } = { a: [], b: [] };
    const worker = (name: 'a' | 'b'): NativeOverlay => ({
      manifest: { name: 'worker', version: '1.0.0', subscribes: ['job.made'] },
      exports: { run: (input) => (handled[name].push((input as { event: { payload: { i: number } } }).event.payload.i), { ok: true }) },
    });
    await a.overlays.load(worker('a'), TRUSTED);
    await b.overlays.load(worker('b'), TRUSTED);
    a.overlays.deactivate('worker');
    await Promise.all([a, b].map((k) => (k.bus as NatsBus).ready()));
    for (let i = 0; i < 40; i++) await a.bus.publish({ type: 'job.made', payload: { i } });
    await until(() => handled.b.length >= 40, 'the active copy to handle every event', { everyMs: 50 }).catch((error: unknown) => {
      throw new Error(`${(error as Error).message} a: ${handled.a.length} b: ${handled.b.length} ${JSON.stringify(a.overlays.stats())}`);
    });
    expect(handled.a).toEqual([]);
    expect([...handled.b].sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect([...a.bus.deadLetters(), ...b.bus.deadLetters()]).toEqual([]);
  });

  it('takes a redelivered cascade event (a retry after a failure) as the same hop: the overlay runs again, the chain goes on', async () => {
    const k = await cluster()('solo');
    let calls = 0;
    await k.overlays.load({ manifest: { name: 'flaky', version: '1.0.0', subscribes: ['insight.made'] }, exports: { run: () => (++calls === 1 ? { ok: false, error: { message: 'not yet' } } : { ok: true }) } }, TRUSTED);
    await (k.bus as NatsBus).ready();
    const chain = await k.cascades.start('seed', 'insight.made', { note: 'x' });
    await until(() => calls >= 2, 'the retry of the failed delivery', { everyMs: 20 }).catch((error: unknown) => {
      throw new Error(`${(error as Error).message} calls ${calls} ${JSON.stringify(k.cascades.get(chain.id))} ${JSON.stringify(k.bus.deadLetters())}`);
    });
    expect(k.cascades.get(chain.id)).toMatchObject({ status: 'active', hops: 1, visited: ['seed', 'flaky'], errors: 1, actions: 1 });
  });
});
