import { describe, expect, it } from 'vitest';
import { loadWasmOverlay } from '../../src/wasm/engine.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { buildFixture } from '../support/overlays.ts';

describe('db_read / db_write without a graph database (the in-memory default)', () => {
  it.each(['read', 'write'])('fails db_%s with GRAPH_UNAVAILABLE and says how to configure Neo4j', async (which) => {
    const { bytes, manifest } = await buildFixture('fixtures/graph-queries.ts', { capabilities: ['DATABASE_READ', 'DATABASE_WRITE'] });
    const overlay = await loadWasmOverlay(bytes, { manifest, grant: ['DATABASE_READ', 'DATABASE_WRITE'], mode: 'relaxed', cache: testCache, logger: captureLogger().logger });
    try {
      const error = await overlay.call(which, { cypher: 'RETURN 1 AS one' }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'GRAPH_UNAVAILABLE' });
      expect((error as Error).message).toContain("store: { kind: 'neo4j'");
    } finally {
      await overlay.close();
    }
  });
});
