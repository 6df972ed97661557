import neo4j from 'neo4j-driver';
import { describe, expect, it } from 'vitest';
import { MAX_JSON_NESTING } from '../../src/json-nesting.ts';
import { compileMutations, MAX_MUTATIONS } from '../../src/store/graph-mutations.ts';

const writes = { labels: ['Capsule', 'Note'], relationships: ['CITES'] };
const compile = (mutations: unknown) => compileMutations(JSON.stringify(mutations), 'scorer', writes);
const refusal = (mutations: unknown): string | null => {
  try {
    compileMutations(typeof mutations === 'string' ? mutations : JSON.stringify(mutations), 'scorer', writes);
    return null;
  } catch (error) {
    return (error as { code: string }).code;
  }
};

describe('compileMutations', () => {
  it('compiles every operation to Cypher that matches only the overlay’s own nodes, with values as parameters', () => {
    const [merge, create, update, remove, link, unlink] = compile([
      { merge: 'Capsule', key: { id: 'c1' }, set: { kind: 'insight', n: 3 } },
      { create: 'Note', properties: { text: 'x' } },
      { update: 'Capsule', key: { id: 'c1' }, set: { n: 4 }, remove: ['kind'] },
      { delete: 'Capsule', key: { id: 'c1' } },
      { link: 'CITES', from: { label: 'Capsule', key: { id: 'c2' } }, to: { label: 'Capsule', key: { id: 'c1' } }, properties: { w: 0.5 } },
      { unlink: 'CITES', from: { label: 'Capsule', key: { id: 'c2' } }, to: { label: 'Capsule', key: { id: 'c1' } } },
    ]);
    expect(merge?.cypher).toBe('MERGE (n:`Capsule` {`id`: $key.`id`, forge_owner: $owner}) SET n += $set');
    expect(merge?.params).toMatchObject({ owner: 'scorer', key: { id: 'c1' }, set: { kind: 'insight', n: neo4j.int(3) } });
    expect(create?.cypher).toBe('CREATE (n:`Note`) SET n += $props, n.forge_owner = $owner');
    expect(update?.cypher).toBe('MATCH (n:`Capsule` {`id`: $key.`id`, forge_owner: $owner}) SET n += $set REMOVE n.`kind`');
    expect(remove?.cypher).toBe('MATCH (n:`Capsule` {`id`: $key.`id`, forge_owner: $owner}) DETACH DELETE n');
    expect(link?.cypher).toBe('MATCH (a:`Capsule` {`id`: $from.`id`, forge_owner: $owner}) MATCH (b:`Capsule` {`id`: $to.`id`, forge_owner: $owner}) MERGE (a)-[r:`CITES`]->(b) SET r += $props');
    expect(unlink?.cypher).toContain('MATCH (a)-[r:`CITES`]->(b) DELETE r');
    expect(link?.params.props).toEqual({ w: 0.5 });
  });

  it('sends integral numbers as integers and others as floats, arrays element by element', () => {
    const [m] = compile([{ merge: 'Capsule', key: { id: 'c1' }, set: { big: 2 ** 53, small: 7, half: 0.5, list: [1, 2] } }]);
    expect(m?.params.set).toEqual({ big: 2 ** 53, small: neo4j.int(7), half: 0.5, list: [neo4j.int(1), neo4j.int(2)] });
  });

  it.each([
    ['not JSON', 'MATCH (n) DETACH DELETE n'],
    ['not an array', { merge: 'Capsule', key: { id: 'c1' } }],
    ['an empty array', []],
    ['too many', Array.from({ length: MAX_MUTATIONS + 1 }, (_, i) => ({ merge: 'Capsule', key: { id: `c${i}` } }))],
    ['two operations in one', [{ merge: 'Capsule', create: 'Note', key: { id: 'c1' } }]],
    ['no operation', [{ key: { id: 'c1' } }]],
    ['an unknown field', [{ merge: 'Capsule', key: { id: 'c1' }, where: 'true' }]],
    ['an undeclared label', [{ merge: 'Other', key: { id: 'c1' } }]],
    ['a kernel label', [{ merge: 'AuditEntry', key: { id: 'c1' } }]],
    ['an injected label', [{ merge: 'Capsule` {id: 1}) DETACH DELETE (n', key: { id: 'c1' } }]],
    ['an injected property name', [{ merge: 'Capsule', key: { 'id`: 1}) MATCH (m) DETACH DELETE m //': 'x' } }]],
    ['the owner property', [{ merge: 'Capsule', key: { id: 'c1' }, set: { forge_owner: 'other' } }]],
    ['the owner property in a key', [{ update: 'Capsule', key: { forge_owner: 'other' }, set: { a: 1 } }]],
    ['an empty key', [{ delete: 'Capsule', key: {} }]],
    ['a nested value', [{ merge: 'Capsule', key: { id: 'c1' }, set: { deep: { a: 1 } } }]],
    ['a mixed array', [{ merge: 'Capsule', key: { id: 'c1' }, set: { list: [1, 'a'] } }]],
    ['null', [{ merge: 'Capsule', key: { id: null } }]],
    ['an update with nothing to do', [{ update: 'Capsule', key: { id: 'c1' } }]],
    ['an undeclared relationship type', [{ link: 'HOP', from: { label: 'Capsule', key: { id: 'a' } }, to: { label: 'Capsule', key: { id: 'b' } } }]],
    ['an endpoint with more fields', [{ link: 'CITES', from: { label: 'Capsule', key: { id: 'a' }, where: 'x' }, to: { label: 'Capsule', key: { id: 'b' } } }]],
  ])('refuses %s with GRAPH_MUTATION_REFUSED', (_what, mutations) => {
    expect(refusal(mutations)).toBe('GRAPH_MUTATION_REFUSED');
  });

  it('refuses an argument nested deeper than the kernel takes with a typed error, not a stack overflow', () => {
    const deep = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
    expect(refusal(`[{"create":"Note","properties":{"text":${deep(32_768)}}}]`)).toBe('GRAPH_MUTATION_REFUSED');
    expect(refusal(`[{"create":"Note","properties":{"text":${deep(MAX_JSON_NESTING)}}}]`)).toBe('GRAPH_MUTATION_REFUSED');
  });
});
