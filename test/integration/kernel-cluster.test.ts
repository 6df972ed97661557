import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { ChainGuard } from '../../src/cluster/chain-guard.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import { captureLogger } from '../support/engine.ts';
import { deleteStreams } from '../support/nats.ts';
import { budget, childLog } from '../support/wait.ts';

const SCRIPT = join(import.meta.dirname, 'fixtures', 'cluster-process.ts');

const until = async (condition: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('kernels as separate processes on NATS JetStream (real server, real processes)', () => {
  const services = inject('services');
  const tag = randomUUID().slice(0, 8);
  const env = { ...process.env, NATS_URL: services.NATS_URL, STREAM: `FORGE_CLUSTER_${tag}`, PREFIX: `c${tag}` };
  const children: ChildProcess[] = [];
  const lines: Record<string, unknown>[] = [];
  let kernel: Kernel | undefined;
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await kernel?.stop();
    await deleteStreams(services.NATS_URL, [env.STREAM]);
  });

  const member = (name: string, relays = ''): ChildProcess => {
    const child = spawn(process.execPath, [SCRIPT, name, relays], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr.pipe(childLog(`kernel-cluster-${name}`));
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
    children.push(child);
    return child;
  };

  it('delivers each event once to the overlay group across processes, lists the members, and drops a dead one', async () => {
    member('kernel-a');
    const b = member('kernel-b');
    await until(() => lines.filter((l) => 'ready' in l).length === 2, 60_000);
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false, bus: { transport: 'nats', servers: services.NATS_URL, stream: env.STREAM, subjectPrefix: env.PREFIX, processId: 'kernel-publisher' } });
    // Heartbeats say what each process runs; the first may predate its overlays.
    await until(async () => (await kernel!.cluster()).filter((m) => m.overlays.includes('indexer')).length === 2);
    const members = await kernel.cluster();
    expect(members.map((m) => m.processId).sort()).toEqual(['kernel-a', 'kernel-b', 'kernel-publisher']);
    expect(members.find((m) => m.processId === 'kernel-a')).toMatchObject({ overlays: ['indexer'], transport: 'nats', self: false });
    expect(members[0]).toMatchObject({ processId: 'kernel-publisher', self: true });
    const { url } = await kernel.inspector.listen({ port: 0 });
    const shown = (await (await fetch(`${url}api/cluster`)).json()) as { members: { processId: string }[] };
    expect(shown.members.map((m) => m.processId).sort()).toEqual(['kernel-a', 'kernel-b', 'kernel-publisher']);

    const ids: string[] = [];
    for (let i = 0; i < 30; i++) ids.push((await kernel.bus.publish({ type: 'capsule.created', payload: { i } })).id);
    const got = (): { got: string; by: string }[] => lines.filter((l): l is { got: string; by: string } => 'got' in l);
    await until(() => got().length >= 30);
    await new Promise((r) => setTimeout(r, 500));
    // Exactly once for the group, whichever of its processes took each event (the split is up to NATS).
    expect(got().map((g) => g.got).sort()).toEqual([...ids].sort());
    expect(got().every((g) => g.by === 'kernel-a' || g.by === 'kernel-b')).toBe(true);

    b.kill('SIGKILL');
    await until(async () => (await kernel!.cluster()).length === 2, 15_000);
    const after: string[] = [];
    for (let i = 0; i < 5; i++) after.push((await kernel.bus.publish({ type: 'capsule.created', payload: { i } })).id);
    await until(() => after.every((id) => got().some((g) => g.got === id)), budget(30_000));
    expect(got().filter((g) => after.includes(g.got)).every((g) => g.by === 'kernel-a')).toBe(true);
  }, budget(120_000));
  it('holds a cascade chain\'s hop limit and cycle guard across processes (compare-and-set in the cluster)', async () => {
    member('kernel-c', 'relay-a');
    member('kernel-d', 'relay-b,relay-c');
    await until(() => lines.filter((l) => l.ready === 'kernel-c' || l.ready === 'kernel-d').length === 2, 60_000);
    kernel ??= await createKernel({ logger: captureLogger().logger, cacheDir: false, bus: { transport: 'nats', servers: services.NATS_URL, stream: env.STREAM, subjectPrefix: env.PREFIX, processId: 'kernel-publisher' } });
    await new Promise((r) => setTimeout(r, 500));
    const chain = await kernel.cascades.start('origin', 'insight.detected', { note: 'root' }, { maxHops: 2, ttlMs: 60_000 });
    const relayed = (): { relayed: string; cascadeId: string }[] => lines.filter((l): l is { relayed: string; cascadeId: string } => 'relayed' in l && l.cascadeId === chain.id);
    await until(() => relayed().length >= 2);
    await new Promise((r) => setTimeout(r, 1_500));
    const conn = await connect({ servers: services.NATS_URL });
    try {
      const global = await (await ChainGuard.open(conn, `forge_chains_${env.STREAM}`)).get(chain.id);
      expect(global).toMatchObject({ hops: 2, maxHops: 2, status: 'active' });
      expect(global!.visited[0]).toBe('origin');
      expect(new Set(global!.visited).size).toBe(3);
      expect(relayed().map((r) => r.relayed).sort()).toEqual(global!.visited.slice(1).sort());
    } finally {
      await conn.close();
    }
  }, budget(120_000));
});
