import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startServices, stopServices } from '../../scripts/services/index.ts';
import { createKernel, type Kernel, type KernelOptions } from '../../src/kernel.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { freePort } from '../support/net.ts';
import { budget, until } from '../support/wait.ts';

const TRUSTED = { internal: true, trusted: true } as const;

describe('Neo4j as a projection of the journal (its own real Neo4j, stopped and restarted)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'forge-projection-'));
  let env: NodeJS.ProcessEnv;
  const kernels: Kernel[] = [];
  afterAll(async () => {
    for (const kernel of kernels) await kernel.stop().catch(() => undefined);
    await stopServices({ names: ['neo4j'], env });
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs and chains never wait for Neo4j; the audit trail and the chains catch up after an outage and a restart, nothing missing or doubled', async () => {
    env = { ...process.env, FORGE_SERVICES_DIR: join(dir, 'services'), FORGE_NEO4J_PORT: String(await freePort()) };
    const { endpoints } = await startServices({ names: ['neo4j'], env });
    const log = captureLogger();
    const options: KernelOptions = {
      logger: log.logger,
      cacheDir: false,
      store: { kind: 'neo4j', uri: endpoints.NEO4J_URI, user: endpoints.NEO4J_USER, password: endpoints.NEO4J_PASSWORD },
      journal: { kind: 'sqlite', path: join(dir, 'journal.db') },
    };
    const open = async (): Promise<Kernel> => {
      const kernel = await createKernel(options);
      kernels.push(kernel);
      const doer: NativeOverlay = { manifest: { name: 'doer', version: '1.0.0', phases: ['execution'] }, exports: { run: () => ({ ok: true, data: { done: true } }) } };
      await kernel.overlays.load(doer, TRUSTED);
      return kernel;
    };
    const runs = async (kernel: Kernel, from: number, count: number): Promise<string[]> => {
      const results = await Promise.all(Array.from({ length: count }, (_, i) => kernel.pipelines.start({ capsule: { id: `cap-${from + i}` } }).done));
      expect(results.map((r) => r.status)).toEqual(Array(count).fill('completed'));
      return results.map((r) => r.id);
    };

    const first = await open();
    const before = await runs(first, 0, 5);
    await until(() => first.projection()?.projected === 5, 'the first runs to be projected', { timeoutMs: budget(30_000) });
    expect((await first.store.listAudit()).map((a) => a.runId).sort()).toEqual([...before].sort());

    // Neo4j goes away for the length of a burst of runs and chains: every run still completes, every chain starts,
    // hops and ends, and the lag shows.
    await stopServices({ names: ['neo4j'], env });
    const during = await runs(first, 5, 10);
    const done = await first.cascades.start('kernel', 'insight.detected', {}, { ttlMs: 600_000 });
    await first.cascades.propagate(done.id, 'a');
    await first.cascades.propagate(done.id, 'b');
    await first.cascades.complete(done.id);
    const live = await first.cascades.start('kernel', 'insight.detected', {}, { ttlMs: 600_000 });
    await first.cascades.propagate(live.id, 'c');
    await until(() => (first.projection()?.behind ?? 0) > 0 && first.projection()!.error !== null, 'the projection to show its lag and why', { timeoutMs: budget(30_000) });
    expect(first.projection()!.lagMs).toBeGreaterThan(0);
    // The process goes while Neo4j is down (what it could not write stays in the journal, not in its buffer).
    await first.stop().catch(() => undefined);

    await startServices({ names: ['neo4j'], env });
    const second = await open();
    const after = await runs(second, 15, 3);
    // Its status is as of its last pass: wait for the entries themselves, then for a pass that saw them all.
    await until(async () => (await second.store.listAudit()).length >= 18, 'the projection to catch up', { timeoutMs: budget(60_000) });
    await until(() => second.projection()?.behind === 0 && second.projection()!.error === null, 'the projection to say it caught up', { timeoutMs: budget(30_000) });
    // The chain left live at the stop is back, from its journal, with its hop; both chains and their hops are in Neo4j once.
    expect(second.cascades.get(live.id)).toMatchObject({ status: 'active', hops: 1, visited: ['kernel', 'c'] });
    await until(async () => (await second.store.loadChains()).some((c) => c.id === done.id && c.status === 'completed'), 'the completed chain to be projected', { timeoutMs: budget(30_000) });
    expect((await second.store.loadHops(done.id)).map((h) => h.to)).toEqual(['a', 'b']);
    expect((await second.store.loadHops(live.id)).map((h) => h.to)).toEqual(['c']);
    expect((await second.store.loadChains()).filter((c) => c.id === done.id || c.id === live.id)).toHaveLength(2);
    const audit = await second.store.listAudit();
    const ids = audit.map((a) => a.runId);
    const missing = [...before, ...during, ...after].filter((id) => !ids.includes(id)).map((id) => (before.includes(id) ? 'before' : during.includes(id) ? 'during' : 'after'));
    expect(missing).toEqual([]);
    expect(ids.sort()).toEqual([...before, ...during, ...after].sort());
    expect(new Set(ids).size).toBe(ids.length);
    expect(audit.find((a) => a.runId === during[0])).toMatchObject({ capsuleId: 'cap-5', decision: 'none' });
  }, budget(300_000));
});
