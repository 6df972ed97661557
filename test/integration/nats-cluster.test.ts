import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { startNatsCluster, type NatsCluster } from '../../scripts/services/nats-cluster.ts';
import { NatsBus } from '../../src/bus/nats-bus.ts';
import { freePort } from '../support/net.ts';

describe('the NATS bus on a 3-node JetStream cluster (real servers)', () => {
  let cluster: NatsCluster | undefined;
  const buses: NatsBus[] = [];
  afterAll(async () => {
    await Promise.all(buses.map((b) => b.stop(1_000).catch(() => undefined)));
    await cluster?.stop();
  });

  it('loses no acknowledged event when a node is killed mid-stream', async () => {
    const ports: number[] = [];
    for (let i = 0; i < 6; i++) ports.push(await freePort());
    cluster = await startNatsCluster({ ports: ports.slice(0, 3), clusterPorts: ports.slice(3) });
    const tag = randomUUID().slice(0, 8);
    const options = { servers: cluster.servers, stream: `FORGE_HA_${tag}`, subjectPrefix: `ha${tag}`, replicas: 3 };
    const publisher = await NatsBus.connect({ ...options, processId: 'publisher' });
    const subscriber = await NatsBus.connect({ ...options, servers: [...cluster.servers].reverse(), processId: 'subscriber' });
    buses.push(publisher, subscriber);
    const delivered: string[] = [];
    subscriber.subscribe({ name: 'ledger', types: ['payment.settled'] }, (e) => void delivered.push(e.id));
    await subscriber.ready();

    const acknowledged: string[] = [];
    for (let i = 0; i < 100; i++) {
      if (i === 40) await cluster.kill(0);
      const id = `pay-${i}`;
      // While the cluster elects new leaders a publish may fail: the publisher retries with the same id (deduplicated).
      for (let attempt = 0; attempt < 100; attempt++) {
        try {
          await publisher.publish({ type: 'payment.settled', payload: { i }, id });
          acknowledged.push(id);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    }
    expect(acknowledged.length).toBe(100);
    const deadline = Date.now() + 60_000;
    while (!acknowledged.every((id) => delivered.includes(id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(acknowledged.filter((id) => !delivered.includes(id))).toEqual([]);
  }, 180_000);
});
