import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CypherGuard } from '../../src/store/cypher-guard.ts';

const reason = (guard: CypherGuard, query: string): string | null => {
  try {
    guard.check(query);
    return null;
  } catch (error) {
    return (error as { code: string; details: { reason: string } }).code === 'CYPHER_REJECTED' ? (error as { details: { reason: string } }).details.reason : 'untyped';
  }
};

describe('CypherGuard', () => {
  const guard = new CypherGuard();

  it.each([
    ['CALL\tdb.labels()', 'procedure'],
    ['CALL\ndbms.listConfig()', 'procedure'],
    ['MATCH (n) CALL{ WITH n RETURN n AS m } RETURN m', 'subquery'],
    ['CALL dbms.security.listUsers() // apoc', 'procedure'],
    ["CALL db.labels() YIELD label WHERE label <> 'apoc' RETURN label", 'procedure'],
    ['CALL apoc.cypher.doIt($q, {})', 'procedure'],
    ["LOAD  CSV FROM 'file:///etc/passwd' AS l RETURN l", 'load-csv'],
    ['DROP DATABASE neo4j', 'administration'],
    ['MATCH (n) RETURN n; MATCH (m) DETACH DELETE m', 'multiple-statements'],
    ['MATCH (n) RETURN n /* trailing */ ; CREATE (x)', 'multiple-statements'],
    ['CALL /* hidden */ db.labels()', 'procedure'],
    ['call `db`.`labels`()', 'procedure'],
    ['MATCH (n) CALL { WITH n SET n.x = 1 } IN TRANSACTIONS OF 10 ROWS', 'subquery'],
    ["USING PERIODIC COMMIT LOAD CSV FROM 'x' AS l CREATE (n)", 'using'],
    ['MATCH (n:Person) USING INDEX n:Person(name) WHERE n.name = $n RETURN n', 'using'],
    ['SHOW DATABASES', 'administration'],
    ['CREATE USER mallory SET PASSWORD $p', 'administration'],
    ['GRANT ROLE admin TO mallory', 'administration'],
    ['CREATE INDEX FOR (n:Capsule) ON (n.id)', 'administration'],
    ['ALTER USER neo4j SET PASSWORD $p', 'administration'],
    ['USE system SHOW USERS', 'administration'],
    ['TERMINATE TRANSACTIONS $ids', 'administration'],
    ["RETURN apoc.cypher.runFirstColumnSingle('CREATE (n) RETURN n', {})", 'function'],
    ['RETURN dbms.components()', 'function'],
    ["MATCH (n) RETURN 'x", 'syntax'],
    ['', 'empty'],
  ])('rejects %j (%s)', (query, rule) => {
    expect(reason(guard, query)).toBe(rule);
  });

  it.each([
    'MATCH (c:Capsule) WHERE c.created_at > $t RETURN c.id',
    'MATCH (d:Dataset) RETURN d SKIP $offset LIMIT 10',
    "MATCH (c:Capsule) WHERE c.note = 'a; b' RETURN c",
    "MATCH (c:Capsule {title: 'CALL db.labels(); DROP DATABASE neo4j'}) RETURN c",
    'MATCH (c:Capsule) // CALL db.labels()\nRETURN c',
    'MERGE (c:Capsule {id: $id}) SET c.kind = $kind, c.status = $status',
    'MATCH (a:Capsule {id: $from}), (b:Capsule {id: $to}) CREATE (a)-[:DERIVED_FROM]->(b)',
    'MATCH (n:`Show`) RETURN n.drop AS value;',
    'UNWIND $rows AS row MERGE (c:Capsule {id: row.id}) RETURN count(c)',
    'RETURN toUpper($name) AS name, size($list) AS n',
  ])('accepts the legitimate %j', (query) => {
    expect(reason(guard, query)).toBeNull();
  });

  it('allows exactly the configured procedures and, when enabled, plain subqueries', () => {
    const permissive = new CypherGuard({ allowProcedures: ['db.labels'], allowSubqueries: true });
    expect(reason(permissive, 'CALL db.labels() YIELD label RETURN label')).toBeNull();
    expect(reason(permissive, 'CALL db.relationshipTypes()')).toBe('procedure');
    expect(reason(permissive, 'MATCH (n) CALL { WITH n RETURN n AS m } RETURN m')).toBeNull();
    expect(reason(permissive, 'MATCH (n) CALL { WITH n SET n.x = 1 } IN TRANSACTIONS')).toBe('in-transactions');
  });

  it('refuses queries over the length limit and non-strings', () => {
    expect(reason(new CypherGuard({ maxLength: 20 }), 'MATCH (n) RETURN n, n, n')).toBe('too-long');
    expect(reason(guard, 42 as unknown as string)).toBe('empty');
  });

  it('is not fooled by any keyword hidden in a string literal or comment, nor by whitespace or case', () => {
    const dangerous = fc.constantFrom('CALL db.labels()', 'DROP DATABASE neo4j', 'LOAD CSV FROM $u AS l RETURN l', 'SHOW USERS');
    const space = fc.constantFrom(' ', '\t', '\n', '  ', ' /* c */ ', '\r\n');
    fc.assert(
      fc.property(dangerous, space, fc.boolean(), (statement, gap, lower) => {
        const hidden = `MATCH (n) WHERE n.text = '${statement}' RETURN n // ${statement}`;
        expect(reason(guard, hidden)).toBeNull();
        const spaced = statement.split(' ').join(gap);
        expect(reason(guard, lower ? spaced.toLowerCase() : spaced)).not.toBeNull();
      }),
    );
  });
});
