import { randomUUID } from 'node:crypto';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { Neo4jStore } from '../../src/store/neo4j-store.ts';
import { captureLogger } from '../support/engine.ts';
import { buildExamples, GOOD_CAPSULE } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

describe('a kernel on the Neo4j store (real server)', () => {
  const services = inject('services');
  let kernel: Kernel | undefined;
  let examples: Awaited<ReturnType<typeof buildExamples>>;
  beforeAll(async () => {
    examples = await buildExamples();
  }, budget(120_000));
  afterEach(async () => {
    await kernel?.stop();
  });

  it('persists overlay registrations and gives granted overlays db_write on the graph', async () => {
    kernel = await createKernel({
      logger: captureLogger().logger,
      cacheDir: false,
      store: { kind: 'neo4j', uri: services.NEO4J_URI, user: services.NEO4J_USER, password: services.NEO4J_PASSWORD },
    });
    const relaxed = { mode: 'relaxed' as const, grant: ['LOGGING' as const, 'DATABASE_WRITE' as const] };
    const handles = await kernel.overlays.loadAll(
      (['analysis-classifier', 'security-validator', 'governance-voter', 'capsule-processor'] as const).map((name) => ({ source: examples[name].wasm, options: relaxed })),
    );
    const handle = handles.find((h) => h.name === 'capsule-processor')!;
    expect((await kernel.store.listOverlays()).find((o) => o.id === handle.id)).toMatchObject({ name: 'capsule-processor', grant: ['LOGGING', 'DATABASE_WRITE'], state: 'active' });
    const id = `cap-${randomUUID()}`;
    const result = await kernel.overlays.call('capsule-processor', 'run', { capsule: { ...GOOD_CAPSULE, id }, consensus: { decision: 'approve' }, context: { graph: true } }, { trust: 50 });
    expect(result.output).toMatchObject({ ok: true, data: { written: true, status: 'stored' } });
    const { records } = await (kernel.store as Neo4jStore).driver.executeQuery('MATCH (c:Capsule {id: $id}) RETURN c.status AS status', { id });
    expect(records.map((r) => r.get('status') as string)).toEqual(['stored']);
    await kernel.overlays.unload(handle.id);
    expect((await kernel.store.listOverlays()).find((o) => o.id === handle.id)).toBeUndefined();
  });

  it('refuses an incomplete Neo4j configuration with INVALID_CONFIG', async () => {
    await expect(createKernel({ store: { kind: 'neo4j', uri: services.NEO4J_URI } as never })).rejects.toMatchObject({ code: 'INVALID_CONFIG' });
    await expect(createKernel({ store: { kind: 'sqlite' } as never })).rejects.toMatchObject({ code: 'INVALID_CONFIG' });
  });

  it('fails to start with STORE_UNAVAILABLE when Neo4j does not answer', async () => {
    await expect(createKernel({ store: { kind: 'neo4j', uri: 'bolt://127.0.0.1:1', user: 'neo4j', password: 'x' } })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
  });
});
