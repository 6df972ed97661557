import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { BusEvent } from '../../src/bus/event.ts';
import { connect } from '@nats-io/transport-node';
import { NatsBus, type NatsBusOptions } from '../../src/bus/nats-bus.ts';
import { ChainGuard } from '../../src/cluster/chain-guard.ts';
import { deleteStreams } from '../support/nats.ts';

const until = async (condition: () => boolean, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('the bus over NATS JetStream (real server)', () => {
  const services = inject('services');
  const buses: NatsBus[] = [];
  const streams: string[] = [];
  afterEach(async () => {
    await Promise.all(buses.splice(0).map((b) => b.stop(1_000)));
    await deleteStreams(services.NATS_URL, streams.splice(0));
  });

  /** Buses sharing one stream, each with its own connection, as separate kernel processes would. */
  async function cluster(n: number, options: Partial<NatsBusOptions> = {}): Promise<NatsBus[]> {
    const tag = randomUUID().slice(0, 8);
    streams.push(`FORGE_TEST_${tag}`);
    const made: NatsBus[] = [];
    for (let i = 0; i < n; i++) made.push(await NatsBus.connect({ servers: services.NATS_URL, stream: `FORGE_TEST_${tag}`, subjectPrefix: `t${tag}`, retryDelayMs: 20, processId: `p${i}-${tag}`, ...options }));
    buses.push(...made);
    return made;
  }

  it('delivers each event once per subscriber group across processes, and to every process of a broadcast subscription', async () => {
    const [a, b, c] = await cluster(3);
    const seen: Record<string, string[]> = { a: [], b: [], bcastA: [], bcastB: [] };
    a!.subscribe({ name: 'indexer', types: ['capsule.created'] }, (e) => void seen.a!.push(e.id));
    b!.subscribe({ name: 'indexer', types: ['capsule.created'] }, (e) => void seen.b!.push(e.id));
    a!.subscribe({ name: 'cache', types: ['capsule.created'], broadcast: true }, (e) => void seen.bcastA!.push(e.id));
    b!.subscribe({ name: 'cache', types: ['capsule.created'], broadcast: true }, (e) => void seen.bcastB!.push(e.id));
    await Promise.all([a!.ready(), b!.ready()]);
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push((await c!.publish({ type: 'capsule.created', payload: { i } })).id);
    await until(() => seen.a!.length + seen.b!.length >= 40 && seen.bcastA!.length >= 40 && seen.bcastB!.length >= 40);
    await new Promise((r) => setTimeout(r, 300));
    // Exactly once for the group, whichever of its processes took each event (the split is up to NATS).
    expect([...seen.a!, ...seen.b!].sort()).toEqual([...ids].sort());
    expect([...seen.bcastA!].sort()).toEqual([...ids].sort());
    expect([...seen.bcastB!].sort()).toEqual([...ids].sort());
  });

  it('delivers an event published twice with the same id once (Nats-Msg-Id)', async () => {
    const [a] = await cluster(1);
    const seen: BusEvent[] = [];
    a!.subscribe({ name: 'dedup', types: ['order.placed'] }, (e) => void seen.push(e));
    await a!.ready();
    await a!.publish({ type: 'order.placed', payload: { n: 1 }, id: 'order-42' });
    await a!.publish({ type: 'order.placed', payload: { n: 1 }, id: 'order-42' });
    await a!.publish({ type: 'order.placed', payload: { n: 2 }, id: 'order-43' });
    await until(() => seen.length >= 2);
    await new Promise((r) => setTimeout(r, 300));
    expect(seen.map((e) => e.id)).toEqual(['order-42', 'order-43']);
  });

  it('redelivers a failing event with backoff, dead-letters it after the last attempt, and retries it to that group only', async () => {
    const [a] = await cluster(1, { maxAttempts: 3 });
    let attempts = 0;
    let healthy = false;
    const other: string[] = [];
    a!.subscribe({ name: 'flaky', types: ['job.run'] }, () => {
      attempts++;
      if (!healthy) throw new Error('downstream down');
    });
    a!.subscribe({ name: 'bystander', types: ['job.run'] }, (e) => void other.push(e.id));
    await a!.ready();
    const event = await a!.publish({ type: 'job.run', payload: {} });
    await until(() => a!.deadLetters().length === 1);
    expect(attempts).toBe(3);
    expect(a!.deadLetters()[0]).toMatchObject({ subscriber: 'flaky', attempts: 3, error: { code: 'HANDLER_FAILED', message: 'downstream down' }, event: { id: event.id } });
    healthy = true;
    await a!.retryDeadLetter(a!.deadLetters()[0]!.id);
    await until(() => attempts === 4);
    await new Promise((r) => setTimeout(r, 300));
    expect(a!.deadLetters()).toEqual([]);
    expect(other).toEqual([event.id]);
  });

  it('hands a subscriber its critical events before the lower ones it holds', async () => {
    const [a] = await cluster(1);
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    a!.subscribe({ name: 'ranked', types: ['alert.raised'] }, async (e) => {
      if ((e.payload as { n: string }).n === 'first') await gate;
      order.push((e.payload as { n: string }).n);
    });
    await a!.ready();
    await a!.publish({ type: 'alert.raised', payload: { n: 'first' } });
    await new Promise((r) => setTimeout(r, 200));
    for (const n of ['low-1', 'low-2']) await a!.publish({ type: 'alert.raised', payload: { n }, priority: 'low' });
    await a!.publish({ type: 'alert.raised', payload: { n: 'critical' }, priority: 'critical' });
    await new Promise((r) => setTimeout(r, 300));
    release();
    await until(() => order.length === 4);
    expect(order).toEqual(['first', 'critical', 'low-1', 'low-2']);
  });

  it('inherits correlation and hops inside a handler, and refuses bad input with typed errors', async () => {
    const [a] = await cluster(1, { maxHops: 1 });
    const seen: BusEvent[] = [];
    a!.subscribe({ name: 'chain', types: ['step.one', 'step.two'] }, async (e) => {
      seen.push(e);
      if (e.type === 'step.one') await a!.publish({ type: 'step.two', payload: {} });
    });
    await a!.ready();
    const root = await a!.publish({ type: 'step.one', payload: {}, correlationId: 'corr-n' });
    await until(() => seen.length === 2);
    expect(seen[1]).toMatchObject({ type: 'step.two', correlationId: 'corr-n', causationId: root.id, hops: 1 });
    await expect(a!.publish({ type: 'Not A Type' })).rejects.toMatchObject({ code: 'INVALID_EVENT' });
    await expect(a!.publish({ type: 'ok.type', id: 'bad id with spaces' })).rejects.toMatchObject({ code: 'INVALID_EVENT' });
    expect(() => a!.subscribe({ types: [] }, () => undefined)).toThrow(expect.objectContaining({ code: 'INVALID_SUBSCRIPTION' }) as Error);
    await expect(NatsBus.connect({ servers: 'nats://127.0.0.1:1' })).rejects.toMatchObject({ code: 'NATS_UNAVAILABLE' });
    await expect(NatsBus.connect({} as never)).rejects.toMatchObject({ code: 'INVALID_CONFIG' });
  });
  it('refuses a stream whose subjects another stream holds, or a stream of that name for other subjects, naming both (NATS_STREAM_CONFLICT)', async () => {
    const tag = randomUUID().slice(0, 8);
    streams.push(`FORGE_TEST_A${tag}`, `FORGE_TEST_B${tag}`, `FORGE_TEST_C${tag}`);
    const first = await NatsBus.connect({ servers: services.NATS_URL, stream: `FORGE_TEST_A${tag}`, subjectPrefix: `t${tag}` });
    buses.push(first);
    // Same subjects under another stream name: JetStream's "subjects overlap" (10065), reported with the holder.
    const overlap = NatsBus.connect({ servers: services.NATS_URL, stream: `FORGE_TEST_B${tag}`, subjectPrefix: `t${tag}` });
    await expect(overlap).rejects.toMatchObject({ code: 'NATS_STREAM_CONFLICT' });
    await expect(overlap).rejects.toThrow(`FORGE_TEST_A${tag}`);
    // The existing stream's name with other subjects: its publishes would land in no stream.
    const other = NatsBus.connect({ servers: services.NATS_URL, stream: `FORGE_TEST_A${tag}`, subjectPrefix: `u${tag}` });
    await expect(other).rejects.toMatchObject({ code: 'NATS_STREAM_CONFLICT' });
    await expect(other).rejects.toThrow(`t${tag}.>`);
    // A stream made by hand for a wider filter takes this bus's subjects: accepted.
    const conn = await connect({ servers: services.NATS_URL });
    try {
      const { jetstreamManager } = await import('@nats-io/jetstream');
      await (await jetstreamManager(conn)).streams.add({ name: `FORGE_TEST_C${tag}`, subjects: [`w${tag}.>`] });
    } finally {
      await conn.close();
    }
    const wide = await NatsBus.connect({ servers: services.NATS_URL, stream: `FORGE_TEST_C${tag}`, subjectPrefix: `w${tag}.ev` });
    buses.push(wide);
    const seen: BusEvent[] = [];
    wide.subscribe({ name: 'wide', types: ['x.y'] }, (e) => void seen.push(e));
    await wide.ready();
    await wide.publish({ type: 'x.y', payload: {} });
    await until(() => seen.length === 1);
  });
  it('lets exactly maxHops of many racing hops through, and refuses cycles, under compare-and-set', async () => {
    const conn = await connect({ servers: services.NATS_URL });
    try {
      const guards = await Promise.all([ChainGuard.open(conn), ChainGuard.open(conn), ChainGuard.open(conn)]);
      const id = `csc_${randomUUID()}`;
      await guards[0].register({ id, source: 'origin', maxHops: 3, visited: ['origin'], expiresAt: Date.now() + 60_000 });
      const attempts = Array.from({ length: 12 }, (_, i) => guards[i % 3]!.hop(id, `overlay-${i}`).then(() => 'ok', (e: { code: string }) => e.code));
      const outcomes = await Promise.all(attempts);
      expect(outcomes.filter((o) => o === 'ok')).toHaveLength(3);
      expect(new Set(outcomes.filter((o) => o !== 'ok'))).toEqual(new Set(['CASCADE_HOP_LIMIT']));
      expect((await guards[1].get(id))?.hops).toBe(3);
      const second = `csc_${randomUUID()}`;
      await guards[0].register({ id: second, source: 'origin', maxHops: 5, visited: ['origin'], expiresAt: Date.now() + 60_000 });
      await guards[1].hop(second, 'a');
      await expect(guards[2].hop(second, 'a')).rejects.toMatchObject({ code: 'CASCADE_CYCLE' });
      await expect(guards[2].hop(second, 'origin')).rejects.toMatchObject({ code: 'CASCADE_CYCLE' });
      await guards[0].complete(second);
      await expect(guards[2].hop(second, 'b')).rejects.toMatchObject({ code: 'CASCADE_NOT_ACTIVE' });
      await expect(guards[2].hop('csc_missing', 'b')).rejects.toMatchObject({ code: 'CASCADE_NOT_FOUND' });
    } finally {
      await conn.close();
    }
  });
});
