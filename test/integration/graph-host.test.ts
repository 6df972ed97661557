import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import neo4j, { type Driver } from 'neo4j-driver';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import { CypherGuard } from '../../src/store/cypher-guard.ts';
import { graphHostFunctions } from '../../src/store/graph-host.ts';
import { Neo4jStore } from '../../src/store/neo4j-store.ts';
import { loadWasmOverlay, type OverlayEngine } from '../../src/wasm/engine.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { buildFixture } from '../support/overlays.ts';
import { budget } from '../support/wait.ts';

/** How a call ends: its output, or the code of its error (`untyped …` for anything else). */
const outcome = (promise: Promise<{ output: unknown }>) =>
  promise.then(
    (r) => ({ ok: true as const, output: r.output }),
    (error: unknown) => ({ ok: false as const, code: isForgeError(error) ? error.code : `untyped ${String(error)}`, message: (error as Error).message }),
  );

describe.each(['relaxed', 'strict'] as const)('graph access from overlays on the real Neo4j (%s mode)', (mode) => {
  const services = inject('services');
  let driver: Driver;
  let probe: OverlayEngine;
  let other: OverlayEngine;
  let http: Server;
  let httpRequests = 0;
  const label = `GraphProbe${randomUUID().replaceAll('-', '')}`;
  const otherLabel = `GraphOther${randomUUID().replaceAll('-', '')}`;
  const canary = `canary-${randomUUID()}`;
  const users = async () => (await driver.executeQuery('SHOW USERS YIELD user RETURN user ORDER BY user', {}, { database: 'system' })).records.map((r) => r.get('user') as string);
  let usersBefore: string[];
  /** The single number a query returns. */
  const count = async (query: string, params: Record<string, unknown>, database?: string): Promise<number> =>
    neo4j.integer.toNumber((await driver.executeQuery(query, params, database === undefined ? {} : { database })).records[0]!.get('n') as number);
  const canaryAlive = async () => (await count('MATCH (c:ForgeCanary {id: $id}) RETURN count(c) AS n', { id: canary })) === 1;
  const read = (engine: OverlayEngine, cypher: string, params: Record<string, unknown> = {}, options: { deadlineMs?: number } = {}) => outcome(engine.call('read', { cypher, params }, options));
  const write = (engine: OverlayEngine, mutations: unknown) => outcome(engine.call('write', { mutations }));

  beforeAll(async () => {
    driver = neo4j.driver(services.NEO4J_URI, neo4j.auth.basic(services.NEO4J_USER, services.NEO4J_PASSWORD));
    await driver.executeQuery('CREATE (:ForgeCanary {id: $id})', { id: canary });
    usersBefore = await users();
    http = createServer((_request, response) => {
      httpRequests++;
      response.end('a,b\n');
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const hostFunctions = graphHostFunctions({ driver, rowCap: 10, guard: new CypherGuard({ allowProcedures: ['db.labels'] }) });
    const load = async (name: string, writes: { labels: string[]; relationships: string[] }) => {
      const { bytes, manifest } = await buildFixture('fixtures/graph-queries.ts', { name, capabilities: ['DATABASE_READ', 'DATABASE_WRITE'], graph: { writes }, database: { maxReplyBytes: 1024 * 1024 } });
      return loadWasmOverlay(bytes, { manifest, grant: ['DATABASE_READ', 'DATABASE_WRITE'], mode, cache: testCache, logger: captureLogger().logger, poolSize: 1, hostFunctions });
    };
    probe = await load('graph-probe', { labels: [label], relationships: ['CITES'] });
    other = await load('graph-other', { labels: [otherLabel, label], relationships: ['CITES'] });
  }, budget(120_000));

  afterAll(async () => {
    await Promise.all([probe.close(), other.close()]);
    await driver.executeQuery('MATCH (n) WHERE n:ForgeCanary AND n.id = $id OR $label IN labels(n) OR $other IN labels(n) DETACH DELETE n', { id: canary, label, other: otherLabel });
    await driver.close();
    await new Promise((resolve) => http.close(resolve));
  });

  describe('every known way past the old guard is refused, through db_read and db_write, and changes nothing', () => {
    /** `{PORT}` stands for the port of the test's HTTP server, known once it listens. */
    const bypasses: [string, string][] = [
      ['a line comment ended by \\r, then LOAD CSV of a file', "//\rLOAD CSV FROM 'file:///etc/passwd' AS l RETURN l[0] AS line"],
      ['a line comment ended by \\r, then SHOW TRANSACTIONS', '//\rSHOW TRANSACTIONS'],
      ['a line comment ended by \\r, then TERMINATE TRANSACTIONS', "//\rTERMINATE TRANSACTIONS 'neo4j-transaction-1'"],
      ['LOAD CSV over HTTP from a loopback service', "LOAD CSV FROM 'http://127.0.0.1:{PORT}/x.csv' AS l RETURN l"],
      ['a no-break space inside CALL', 'CALL\u00a0db.propertyKeys()'],
      ['a line separator inside CALL', 'CALL\u2028db.propertyKeys()'],
      ['an ideographic space inside CALL', 'CALL\u3000db.propertyKeys()'],
      ['U+001C as whitespace', 'SHOW\u001cTRANSACTIONS'],
      ['\\u escapes inside keywords', 'C\\u0041LL db.propertyKeys()'],
      ['\\u escapes inside LOAD CSV', "LOAD \\u0043SV FROM 'file:///etc/passwd' AS l RETURN l"],
      ['CREATE USER with a no-break space', "CREATE\u00a0USER forge_evil SET PASSWORD 'evilpassword1' CHANGE NOT REQUIRED"],
      ['CREATE USER in plain ASCII', "CREATE USER forge_evil SET PASSWORD 'evilpassword1' CHANGE NOT REQUIRED"],
      ['CREATE INDEX with an ideographic space', `CREATE\u3000INDEX forge_evil FOR (n:${label}) ON (n.id)`],
      ['CREATE INDEX in plain ASCII', `CREATE INDEX forge_evil FOR (n:${label}) ON (n.id)`],
      ['DROP INDEX with a line separator', 'DROP\u2028INDEX forge_chain_status'],
      ['a write through the read function', `MATCH (c:ForgeCanary) DETACH DELETE c`],
      ['a procedure outside the allowlist', 'CALL db.propertyKeys()'],
      ['a subquery in transactions', `CALL { MATCH (c:ForgeCanary) DETACH DELETE c } IN TRANSACTIONS`],
      ['another database', 'USE system SHOW USERS'],
    ];

    it.each(bypasses)('%s', async (_what, template) => {
      const cypher = template.replace('{PORT}', String((http.address() as AddressInfo).port));
      const viaRead = await read(probe, cypher);
      expect(viaRead.ok, JSON.stringify(viaRead)).toBe(false);
      expect(viaRead).toMatchObject({ code: expect.stringMatching(/^(CYPHER_REJECTED|GRAPH_QUERY_FAILED)$/) as string });
      const viaWrite = await outcome(probe.call('write', { mutations: cypher }));
      expect(viaWrite).toMatchObject({ ok: false, code: 'GRAPH_MUTATION_REFUSED' });
      expect(await canaryAlive()).toBe(true);
      expect(await users()).toEqual(usersBefore);
      expect(httpRequests).toBe(0);
      const schema = await driver.executeQuery("SHOW INDEXES YIELD name WHERE name = 'forge_evil' OR name = 'forge_chain_status' RETURN collect(name) AS names");
      expect(schema.records[0]!.get('names')).not.toContain('forge_evil');
    });
  });

  describe('legitimate reads pass', () => {
    beforeAll(async () => {
      const mutations = [1, 2, 3].map((i) => ({ merge: label, key: { id: `n${i}` }, set: { rank: i, show: `show-${i}` } }));
      expect(await write(probe, [...mutations, { link: 'CITES', from: { label, key: { id: 'n2' } }, to: { label, key: { id: 'n1' } } }])).toMatchObject({ ok: true });
    });

    it.each([
      ['paging with integer parameters', `MATCH (n:${label}) RETURN n.id AS id ORDER BY id SKIP $offset LIMIT $n`, { offset: 1, n: 1 }, [{ id: 'n2' }]],
      ['a property named like a keyword', `MATCH (n:${label} {id: 'n1'}) RETURN n.show AS show`, {}, [{ show: 'show-1' }]],
      ['a dynamic label', 'MATCH (n:$($label)) RETURN count(n) AS c', { label }, [{ c: 3 }]],
      ['a traversal', `MATCH (a:${label})-[:CITES]->(b) RETURN a.id AS a, b.id AS b`, {}, [{ a: 'n2', b: 'n1' }]],
      ['an optional match and aggregation', `MATCH (a:${label}) OPTIONAL MATCH (a)-[:CITES]->(b) RETURN count(b) AS cites, max(a.rank) AS top`, {}, [{ cites: 1, top: 3 }]],
      ['EXISTS and COUNT subqueries', `MATCH (a:${label}) WHERE EXISTS { (a)-[:CITES]->() } RETURN a.id AS id, COUNT { (a)--() } AS degree`, {}, [{ id: 'n2', degree: 1 }]],
      ['a read subquery and UNWIND', `UNWIND [1, 2] AS i CALL (i) { MATCH (n:${label} {rank: i}) RETURN n.id AS id } RETURN id ORDER BY id`, {}, [{ id: 'n1' }, { id: 'n2' }]],
      ['a UNION', `MATCH (n:${label} {rank: 1}) RETURN n.id AS id UNION MATCH (n:${label} {rank: 3}) RETURN n.id AS id`, {}, [{ id: 'n1' }, { id: 'n3' }]],
      ['a procedure on the allowlist', 'CALL db.labels() YIELD label WHERE label = $label RETURN label', { label }, [{ label }]],
      ['a string with anything in it', "RETURN 'ünïcødé \\u00e9 ✓' AS s", {}, [{ s: 'ünïcødé é ✓' }]],
    ])('%s', async (_what, cypher, params, rows) => {
      const result = await read(probe, cypher, params);
      expect(result).toMatchObject({ ok: true, output: { rows, truncated: false } });
    });
  });

  describe('writes are structured, declared and owned', () => {
    it('creates, updates, links, unlinks and deletes its own nodes, integers as integers', async () => {
      expect(await write(probe, [{ create: label, properties: { id: 'w1', n: 7, tags: ['a', 'b'] } }, { merge: label, key: { id: 'w2' }, set: { n: 1.5 } }])).toMatchObject({
        ok: true,
        output: { nodesCreated: 2 },
      });
      const types = await driver.executeQuery(`MATCH (n:${label}) WHERE n.id IN ['w1', 'w2'] RETURN n.id AS id, valueType(n.n) AS type, n.forge_owner AS owner ORDER BY id`);
      expect(types.records.map((r) => [r.get('id') as unknown, r.get('type') as unknown, r.get('owner') as unknown])).toEqual([
        ['w1', 'INTEGER NOT NULL', 'graph-probe'],
        ['w2', 'FLOAT NOT NULL', 'graph-probe'],
      ]);
      expect(await write(probe, [{ update: label, key: { id: 'w1' }, set: { n: 8 }, remove: ['tags'] }, { link: 'CITES', from: { label, key: { id: 'w1' } }, to: { label, key: { id: 'w2' } } }])).toMatchObject({
        ok: true,
        output: { relationshipsCreated: 1 },
      });
      expect(await write(probe, [{ unlink: 'CITES', from: { label, key: { id: 'w1' } }, to: { label, key: { id: 'w2' } } }, { delete: label, key: { id: 'w2' } }])).toMatchObject({
        ok: true,
        output: { relationshipsDeleted: 1, nodesDeleted: 1 },
      });
    });

    it("cannot touch another overlay's nodes, even of a label both declare", async () => {
      await write(probe, [{ merge: label, key: { id: 'mine' }, set: { secret: 'kept' } }]);
      expect(await write(other, [{ update: label, key: { id: 'mine' }, set: { secret: 'stolen' } }, { delete: label, key: { id: 'mine' } }])).toMatchObject({ ok: true, output: { nodesDeleted: 0, propertiesSet: 0 } });
      const after = await driver.executeQuery(`MATCH (n:${label} {id: 'mine'}) RETURN n.secret AS secret, n.forge_owner AS owner`);
      expect(after.records.map((r) => [r.get('secret') as unknown, r.get('owner') as unknown])).toEqual([['kept', 'graph-probe']]);
    });

    it.each([
      ['a label it did not declare', [{ merge: otherLabel, key: { id: 'x' } }]],
      ['a kernel label', [{ merge: 'AuditEntry', key: { id: 'x' }, set: { decision: 'approve' } }]],
      ['a kernel snapshot', [{ update: 'PipelineRunSnapshot', key: { runId: 'x' }, set: { snapshot: '{}' } }]],
      ['a relationship type it did not declare', [{ link: 'HOP', from: { label, key: { id: 'n1' } }, to: { label, key: { id: 'n2' } } }]],
      ['the owner property', [{ merge: label, key: { id: 'x' }, set: { forge_owner: 'graph-other' } }]],
      ['a name that is not an identifier', [{ merge: `${label}\`) DETACH DELETE (m`, key: { id: 'x' } }]],
      ['a nested value', [{ merge: label, key: { id: 'x' }, set: { deep: { a: 1 } } }]],
      ['Cypher text', 'MATCH (n) DETACH DELETE n'],
      ['nothing', []],
    ])('refuses %s with GRAPH_MUTATION_REFUSED before Neo4j sees it', async (_what, mutations) => {
      expect(await write(probe, mutations)).toMatchObject({ ok: false, code: 'GRAPH_MUTATION_REFUSED' });
      expect(await canaryAlive()).toBe(true);
    });
  });

  it("reads no kernel audit entry, run snapshot or dead letter in the clear (they are sealed), while the kernel reads them", async () => {
    const store = new Neo4jStore({ uri: services.NEO4J_URI, user: services.NEO4J_USER, password: services.NEO4J_PASSWORD });
    const id = `sealed-${randomUUID()}`;
    try {
      store.appendAudit({ id, runId: id, capsuleId: id, decision: 'reject', detail: { reason: 'confidential-reason' }, at: Date.now() });
      await store.flush();
      await store.saveRunSnapshot({ runId: id, version: 1, status: 'awaitingDecision', snapshot: { capsule: { content: 'card 4111-1111-1111-1111' } }, updatedAt: Date.now() });
      await store.saveDeadLetter({ id, subscriber: 'x', event: { payload: 'confidential-payload' }, error: { code: 'X', message: 'm' }, attempts: 3, at: Date.now() });
      const seen = await Promise.all([
        read(probe, 'MATCH (a:AuditEntry {id: $id}) RETURN a', { id }),
        read(probe, 'MATCH (r:PipelineRunSnapshot {runId: $id}) RETURN r', { id }),
        read(probe, 'MATCH (d:DeadLetter {id: $id}) RETURN d', { id }),
      ]);
      for (const result of seen) {
        expect(result.ok).toBe(true);
        expect(JSON.stringify(result)).not.toMatch(/confidential|4111|reject/);
      }
      expect((await store.listAudit({ runId: id }))[0]).toMatchObject({ decision: 'reject', detail: { reason: 'confidential-reason' } });
      expect(await store.loadRunSnapshot(id)).toMatchObject({ snapshot: { capsule: { content: 'card 4111-1111-1111-1111' } } });
    } finally {
      await driver.executeQuery('MATCH (n) WHERE (n:AuditEntry OR n:DeadLetter) AND n.id = $id OR n:PipelineRunSnapshot AND n.runId = $id DETACH DELETE n', { id });
      await store.close();
    }
  });

  it('refuses a 40 MiB reply with REPLY_TOO_LARGE, and serves the next call', async () => {
    const huge = await read(probe, "RETURN reduce(s = '0123456789', i IN range(1, 22) | s + s) AS big");
    expect(huge).toMatchObject({ ok: false, code: 'REPLY_TOO_LARGE' });
    expect(await read(probe, 'RETURN 1 AS one')).toMatchObject({ ok: true, output: { rows: [{ one: 1 }] } });
  }, budget(120_000));

  it('stops the query of an abandoned call: it is gone from SHOW TRANSACTIONS within a second of the deadline', async () => {
    const marker = `abandoned_${randomUUID().replaceAll('-', '')}`;
    const running = async () =>
      count('SHOW TRANSACTIONS YIELD currentQuery WHERE currentQuery CONTAINS $marker RETURN count(*) AS n', { marker }, 'neo4j');
    const call = read(probe, `/* ${marker} */ UNWIND range(1, 2000000000) AS i WITH i WHERE i < 0 RETURN count(*) AS c`, {}, { deadlineMs: 1_500 });
    // Wait (with a deadline) until the query runs on the server.
    for (const start = Date.now(); (await running()) === 0; ) {
      if (Date.now() - start > 60_000) throw new Error('the slow query never showed in SHOW TRANSACTIONS');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(await call).toMatchObject({ ok: false, code: expect.stringMatching(/DEADLINE_EXCEEDED|GRAPH_QUERY_FAILED/) as string });
    const abandonedAt = Date.now();
    let gone = false;
    while (!gone && Date.now() - abandonedAt < 1_000) {
      gone = (await running()) === 0;
      if (!gone) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(gone).toBe(true);
  }, budget(120_000));
});
