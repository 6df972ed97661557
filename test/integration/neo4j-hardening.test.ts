import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import neo4j, { type Driver } from 'neo4j-driver';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';

/**
 * The project's Neo4j server is the second layer behind the kernel's CypherGuard: connected as the kernel is (the
 * admin user, no guard in between), these queries must still be refused by the server itself. The settings live in
 * scripts/services/neo4j-server/NeoServer.java; a server started before them answers here as unhardened.
 */
/** Server-side limit on each probe (ms): an unhardened server would otherwise wait on an FTP banner for minutes. */
const QUERY_TIMEOUT_MS = 10_000;

describe('the Neo4j server refuses what its only client, the kernel, never needs', () => {
  const services = inject('services');
  let driver: Driver;
  let http: Server;
  let port: number;
  /** TCP connections the loopback HTTP server accepted: a blocked LOAD CSV must not even connect. */
  let connections = 0;

  /** How a query ends on the server: its rows, or the Neo4j error code and message. */
  const run = (cypher: string) =>
    driver.executeQuery(cypher, {}, { transactionConfig: { timeout: QUERY_TIMEOUT_MS } }).then(
      (result) => ({ ok: true as const, rows: result.records.map((r) => r.toObject()) }),
      (error: unknown) => ({ ok: false as const, code: (error as { code?: string }).code, message: (error as Error).message }),
    );
  const setting = async (name: string): Promise<string | undefined> => {
    const { records } = await driver.executeQuery('SHOW SETTINGS YIELD name, value WHERE name = $name RETURN value', { name });
    return records[0]?.get('value') as string | undefined;
  };

  beforeAll(async () => {
    driver = neo4j.driver(services.NEO4J_URI, neo4j.auth.basic(services.NEO4J_USER, services.NEO4J_PASSWORD));
    http = createServer((_request, response) => response.end('a,b\n'));
    http.on('connection', () => {
      connections++;
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    port = (http.address() as AddressInfo).port;
    // The server must be reachable, or "no connection arrived" would prove nothing.
    expect(await (await fetch(`http://127.0.0.1:${port}/x.csv`)).text()).toBe('a,b\n');
    connections = 0;
  });

  afterAll(async () => {
    await driver.close();
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
  });

  it.each([
    ['an absolute path', 'file:///etc/passwd'],
    ['a path climbing out of the import folder', 'file:///../../../../../../etc/passwd'],
  ])('refuses LOAD CSV from a file URL (%s), even to the admin user', async (_what, url) => {
    const outcome = await run(`LOAD CSV FROM '${url}' AS line RETURN line LIMIT 1`);
    expect(outcome).toMatchObject({
      ok: false,
      code: 'Neo.ClientError.Statement.ExternalResourceFailed',
      message: expect.stringContaining('dbms.security.allow_csv_import_from_file_urls') as string,
    });
  });

  it('confines file URLs to an import folder of their own, not the server home with its logs and store', async () => {
    expect(await setting('server.directories.import')).toMatch(/[/\\]import$/);
  });

  it.each([
    ['by IPv4 address', 'http://127.0.0.1:{PORT}/x.csv'],
    ['by name', 'http://localhost:{PORT}/x.csv'],
    ['by IPv6 address', 'http://[::1]:{PORT}/x.csv'],
    ['by IPv4-mapped IPv6 address', 'http://[::ffff:127.0.0.1]:{PORT}/x.csv'],
    ['over HTTPS', 'https://127.0.0.1:{PORT}/x.csv'],
    ['over FTP', 'ftp://127.0.0.1:{PORT}/x.csv'],
  ])('refuses LOAD CSV over the network (%s): the loopback server receives no connection', async (_what, template) => {
    connections = 0;
    const outcome = await run(`LOAD CSV FROM '${template.replace('{PORT}', String(port))}' AS line RETURN line`);
    expect(outcome).toMatchObject({
      ok: false,
      code: 'Neo.ClientError.Statement.ExternalResourceFailed',
      message: expect.stringContaining('cypher_ip_blocklist') as string,
    });
    expect(connections).toBe(0);
  });

  it('runs db.labels(), a procedure on the allowlist', async () => {
    expect(await run('CALL db.labels() YIELD label RETURN count(label) AS n')).toMatchObject({ ok: true });
  });

  it('loads no plugin procedure or function: the allowlist names only three read-only built-ins', async () => {
    expect(await setting('dbms.security.procedures.allowlist')).toBe('db.labels,db.relationshipTypes,db.propertyKeys');
  });

  // Measured on 5.26 community: the allowlist gates plugin jars only; built-ins are compiled as such and skip it, and
  // community has no roles to deny EXECUTE. If this starts failing, the server now restricts built-ins: invert it
  // into a refusal and update the note on PROCEDURE_ALLOWLIST in NeoServer.java.
  it('still runs built-in procedures off the allowlist, which leaves the CypherGuard as their only gate', async () => {
    expect(await run('CALL dbms.listConfig() YIELD name RETURN count(name) AS n')).toMatchObject({ ok: true });
  });

  it('sends no usage reports to Neo4j', async () => {
    expect(await setting('dbms.usage_report.enabled')).toBe('false');
  });
});
