import neo4j, { type Driver } from 'neo4j-driver';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

describe('Neo4j 5 server (real, on loopback)', () => {
  const services = inject('services');
  let driver: Driver;

  beforeAll(() => {
    driver = neo4j.driver(services.NEO4J_URI, neo4j.auth.basic(services.NEO4J_USER, services.NEO4J_PASSWORD));
  });
  afterAll(async () => {
    await driver.close();
  });

  it('is a Neo4j 5 server answering Bolt with the configured credentials', async () => {
    const info = await driver.getServerInfo();
    expect(info.agent).toMatch(/^Neo4j\/5\./);
    expect(info.address).toMatch(/^127\.0\.0\.1:/);
  });

  it('reads back a node it wrote, across separate transactions', async () => {
    const id = randomUUID();
    await driver.executeQuery('CREATE (:SmokeTest { id: $id, payload: $payload })', { id, payload: 'hello graph' });
    const { records } = await driver.executeQuery('MATCH (n:SmokeTest { id: $id }) RETURN n.payload AS payload', { id }, { routing: neo4j.routing.READ });
    expect(records.map((r) => r.get('payload') as string)).toEqual(['hello graph']);
    await driver.executeQuery('MATCH (n:SmokeTest { id: $id }) DELETE n', { id });
  });

  it('refuses a write inside a READ access-mode session (the server enforces it)', async () => {
    const session = driver.session({ defaultAccessMode: neo4j.session.READ });
    try {
      await expect(session.executeRead((tx) => tx.run('CREATE (:SmokeTest { id: $id })', { id: randomUUID() }))).rejects.toMatchObject({
        code: expect.stringMatching(/^Neo\.ClientError\./) as unknown,
      });
    } finally {
      await session.close();
    }
  });

  it('rejects wrong credentials with a security error', async () => {
    const wrong = neo4j.driver(services.NEO4J_URI, neo4j.auth.basic(services.NEO4J_USER, 'not-the-password'));
    try {
      await expect(wrong.getServerInfo()).rejects.toMatchObject({ code: 'Neo.ClientError.Security.Unauthorized' });
    } finally {
      await wrong.close();
    }
  });
});
