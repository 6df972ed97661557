import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { startNatsCluster, type NatsCluster } from '../../scripts/services/nats-cluster.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import { captureLogger } from '../support/engine.ts';
import { freePort } from '../support/net.ts';
import { budget, childLog, until } from '../support/wait.ts';

const MEMBER = join(import.meta.dirname, 'fixtures', 'cluster-process.ts');

describe('kernel processes on a 3-node NATS JetStream cluster (real servers, real processes)', () => {
  let cluster: NatsCluster | undefined;
  let kernel: Kernel | undefined;
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await kernel?.stop().catch(() => undefined);
    await cluster?.stop();
  });

  it('loses no acknowledged event when a NATS node is killed mid-stream while kernel processes consume', async () => {
    const ports: number[] = [];
    for (let i = 0; i < 6; i++) ports.push(await freePort());
    cluster = await startNatsCluster({ ports: ports.slice(0, 3), clusterPorts: ports.slice(3) });
    const tag = randomUUID().slice(0, 8);
    const env = { ...process.env, NATS_URL: cluster.servers.join(','), STREAM: `FORGE_HA_${tag}`, PREFIX: `ha${tag}`, REPLICAS: '3' };
    const got: { got: string; by: string }[] = [];
    let ready = 0;
    for (const name of ['member-a', 'member-b']) {
      // The members list the nodes in reverse, so they do not all lean on the node that will die.
      const child = spawn(process.execPath, [MEMBER, name], { env: { ...env, NATS_URL: [...cluster.servers].reverse().join(',') }, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stderr.pipe(childLog(`nats-cluster-${name}`));
      children.push(child);
      createInterface({ input: child.stdout }).on('line', (line) => {
        const parsed = JSON.parse(line) as { got?: string; by?: string; ready?: string };
        if (parsed.ready !== undefined) ready++;
        if (parsed.got !== undefined) got.push(parsed as { got: string; by: string });
      });
    }
    await until(() => ready === 2, 'both member processes to be ready', { everyMs: 100 });
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, bus: { transport: 'nats', servers: cluster.servers, stream: env.STREAM, subjectPrefix: env.PREFIX, replicas: 3, processId: 'publisher' } });

    const acknowledged: string[] = [];
    for (let i = 0; i < 100; i++) {
      if (i === 40) await cluster.kill(0);
      const id = `pay-${i}`;
      // While the cluster elects new leaders a publish may fail: the publisher retries with the same id (deduplicated).
      for (let attempt = 0; attempt < 100; attempt++) {
        try {
          await kernel.bus.publish({ type: 'capsule.created', payload: { i }, id });
          acknowledged.push(id);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    }
    expect(acknowledged.length).toBe(100);
    const delivered = (): Set<string> => new Set(got.map((g) => g.got));
    await until(() => acknowledged.every((id) => delivered().has(id)), 'every acknowledged event to be delivered', { everyMs: 100 }).catch(() => undefined);
    expect(acknowledged.filter((id) => !delivered().has(id))).toEqual([]);
    // The group is load-balanced: whichever member got an event, no other member of the group handled it too
    // (a redelivery after the node loss may repeat an event to the same group: at least once, never lost).
    expect(got.every((g) => ['member-a', 'member-b'].includes(g.by))).toBe(true);
  }, budget(240_000));
});
