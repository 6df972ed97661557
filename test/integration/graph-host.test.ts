import neo4j, { type Driver } from 'neo4j-driver';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { graphHostFunctions } from '../../src/store/graph-host.ts';
import { CypherGuard } from '../../src/store/cypher-guard.ts';
import { loadWasmOverlay, type OverlayEngine } from '../../src/wasm/engine.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { buildFixture } from '../support/overlays.ts';

describe.each(['relaxed', 'strict'] as const)('db_read / db_write on the real Neo4j (%s mode)', (mode) => {
  const services = inject('services');
  let driver: Driver;
  let overlay: OverlayEngine;
  const label = `GraphHostTest_${randomUUID().replaceAll('-', '')}`;

  beforeAll(async () => {
    driver = neo4j.driver(services.NEO4J_URI, neo4j.auth.basic(services.NEO4J_USER, services.NEO4J_PASSWORD));
    const { bytes, manifest } = await buildFixture('fixtures/graph-queries.ts', { capabilities: ['DATABASE_READ', 'DATABASE_WRITE'] });
    overlay = await loadWasmOverlay(bytes, {
      manifest,
      grant: ['DATABASE_READ', 'DATABASE_WRITE'],
      mode,
      cache: testCache,
      logger: captureLogger().logger,
      poolSize: 1,
      hostFunctions: graphHostFunctions({ driver, rowCap: 10, guard: new CypherGuard() }),
    });
  });
  afterAll(async () => {
    await overlay.close();
    await driver.executeQuery(`MATCH (n:${label}) DETACH DELETE n`);
    await driver.close();
  });

  it('writes with db_write and reads back with db_read, parameters only', async () => {
    const write = await overlay.call('write', { cypher: `CREATE (n:${label} {id: $id, n: $n}) RETURN n.id AS id`, params: { id: 'cap-1', n: 7 } });
    expect(write.output).toEqual({ rows: [{ id: 'cap-1' }], truncated: false });
    const read = await overlay.call('read', { cypher: `MATCH (n:${label} {id: $id}) RETURN n.id AS id, n.n AS count, n AS node`, params: { id: 'cap-1' } });
    expect(read.output).toMatchObject({
      rows: [{ id: 'cap-1', count: 7, node: { labels: [label], properties: { id: 'cap-1', n: 7 }, elementId: expect.any(String) as unknown } }],
      truncated: false,
    });
  });

  it('has Neo4j itself refuse a write through db_read (READ access mode)', async () => {
    await expect(overlay.call('read', { cypher: `CREATE (n:${label} {id: 'sneaky'})` })).rejects.toMatchObject({
      code: 'GRAPH_QUERY_FAILED',
      details: { neo4jCode: expect.stringMatching(/^Neo\.ClientError\./) as unknown },
    });
    const { records } = await driver.executeQuery(`MATCH (n:${label} {id: 'sneaky'}) RETURN n`);
    expect(records).toHaveLength(0);
  });

  it('refuses what the CypherGuard refuses before it reaches Neo4j', async () => {
    for (const cypher of ['CALL\tdb.labels()', 'MATCH (n) RETURN n; MATCH (m) DETACH DELETE m', "LOAD CSV FROM 'file:///etc/passwd' AS l RETURN l"]) {
      await expect(overlay.call('read', { cypher })).rejects.toMatchObject({ code: 'CYPHER_REJECTED' });
    }
  });

  it('caps the rows it returns, and says so', async () => {
    await overlay.call('write', { cypher: `UNWIND range(1, 25) AS i CREATE (:${label} {bulk: i})` });
    const read = await overlay.call('read', { cypher: `MATCH (n:${label}) WHERE n.bulk IS NOT NULL RETURN n.bulk AS i ORDER BY i` });
    expect(read.output).toEqual({ rows: Array.from({ length: 10 }, (_, k) => ({ i: k + 1 })), truncated: true });
  });

  it('refuses parameters that are not a JSON object', async () => {
    await expect(overlay.call('read', { cypher: 'RETURN $x AS x', params: [1, 2] })).rejects.toMatchObject({ code: 'GRAPH_QUERY_FAILED' });
  });
});
