import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startServices, stopServices } from '../../scripts/services/index.ts';
import { Neo4jStore } from '../../src/store/neo4j-store.ts';
import { freePort } from '../support/net.ts';
import { budget } from '../support/wait.ts';

describe('Neo4j store across a server stop and restart (its own real server)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'forge-neo4j-restart-'));
  let env: NodeJS.ProcessEnv;
  let store: Neo4jStore | undefined;
  afterAll(async () => {
    await store?.close().catch(() => undefined);
    await stopServices({ names: ['neo4j'], env });
    rmSync(dir, { recursive: true, force: true });
  });

  it('fails unacknowledged writes with STORE_UNAVAILABLE, keeps buffered ones, and loses nothing acknowledged', async () => {
    env = { ...process.env, FORGE_SERVICES_DIR: dir, FORGE_NEO4J_PORT: String(await freePort()) };
    const { endpoints } = await startServices({ names: ['neo4j'], env });
    store = new Neo4jStore({ uri: endpoints.NEO4J_URI, user: endpoints.NEO4J_USER, password: endpoints.NEO4J_PASSWORD, intervalMs: 10 });
    await store.start();
    const chain = { id: 'chain-1', source: 'a', insightType: 'insight.detected', status: 'active' as const, hops: 0, maxHops: 5, visited: ['a'], createdAt: 1, expiresAt: null, correlationId: 'corr', insights: 1, actions: 0, errors: 0, endReason: null };
    await store.saveChain(chain);
    for (let i = 1; i <= 3; i++) store.appendHop({ chainId: 'chain-1', index: i, from: 'a', to: `o${i}`, eventType: 'insight.detected', at: i });
    await store.flush();

    await stopServices({ names: ['neo4j'], env });
    for (let i = 4; i <= 5; i++) store.appendHop({ chainId: 'chain-1', index: i, from: 'a', to: `o${i}`, eventType: 'insight.detected', at: i });
    await expect(store.saveRunSnapshot({ runId: 'run-1', version: 1, status: 'paused', snapshot: {}, updatedAt: 1 })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });

    await startServices({ names: ['neo4j'], env });
    await store.flush();
    expect((await store.loadHops('chain-1')).map((h) => h.index)).toEqual([1, 2, 3, 4, 5]);
    expect((await store.loadChains()).map((c) => c.id)).toEqual(['chain-1']);
    expect(await store.loadRunSnapshot('run-1')).toBeUndefined();
    await store.saveRunSnapshot({ runId: 'run-1', version: 1, status: 'paused', snapshot: { ok: true }, updatedAt: 2 });
    expect(await store.loadRunSnapshot('run-1')).toMatchObject({ snapshot: { ok: true } });

    // Stopping the store while Neo4j is down: it says what it could not persist instead of hanging or dropping it.
    await stopServices({ names: ['neo4j'], env });
    store.appendHop({ chainId: 'chain-1', index: 6, from: 'a', to: 'o6', eventType: 'insight.detected', at: 6 });
    await expect(store.close(2_000)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining('1 buffered write') as unknown });
    store = undefined;
  }, budget(300_000));
});
