import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

describe('NATS JetStream server (real, on loopback)', () => {
  const services = inject('services');
  const stream = `SMOKE_${randomBytes(6).toString('hex')}`;
  let connection: NatsConnection;
  let manager: JetStreamManager;

  beforeAll(async () => {
    connection = await connect({ servers: services.NATS_URL });
    manager = await jetstreamManager(connection);
    await manager.streams.add({ name: stream, subjects: [`${stream}.>`] });
  });
  afterAll(async () => {
    await manager.streams.delete(stream);
    await connection.close();
  });

  it('has JetStream enabled', async () => {
    const account = await manager.getAccountInfo();
    expect(account.streams).toBeGreaterThanOrEqual(1);
  });

  it('delivers published messages to a durable pull consumer and records the acks', async () => {
    const client = jetstream(connection);
    const first = await client.publish(`${stream}.capsule`, JSON.stringify({ n: 1 }), { msgID: 'msg-1' });
    const second = await client.publish(`${stream}.capsule`, JSON.stringify({ n: 2 }), { msgID: 'msg-2' });
    expect(first.duplicate).toBe(false);
    expect(second.seq).toBe(first.seq + 1);

    await manager.consumers.add(stream, { durable_name: 'smoke', ack_policy: AckPolicy.Explicit });
    const consumer = await client.consumers.get(stream, 'smoke');
    const received: unknown[] = [];
    const messages = await consumer.fetch({ max_messages: 2, expires: 5_000 });
    for await (const message of messages) {
      received.push(message.json());
      expect(await message.ackAck()).toBe(true);
    }
    expect(received).toEqual([{ n: 1 }, { n: 2 }]);

    const info = await consumer.info();
    expect(info.num_pending).toBe(0);
    expect(info.num_ack_pending).toBe(0);
    expect(info.delivered.stream_seq).toBe(second.seq);
  });

  it('drops a republish with the same Nats-Msg-Id inside the duplicate window', async () => {
    const client = jetstream(connection);
    const original = await client.publish(`${stream}.dedup`, 'once', { msgID: 'dedup-1' });
    const again = await client.publish(`${stream}.dedup`, 'once', { msgID: 'dedup-1' });
    expect(again.duplicate).toBe(true);
    expect(again.seq).toBe(original.seq);
    const info = await manager.streams.info(stream, { subjects_filter: `${stream}.dedup` });
    expect(info.state.subjects?.[`${stream}.dedup`]).toBe(1);
  });
});
