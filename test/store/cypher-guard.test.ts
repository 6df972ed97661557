import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CypherGuard, type PlanNode, type QueryPlanSummary } from '../../src/store/cypher-guard.ts';

const refusal = (run: () => unknown): string | null => {
  try {
    run();
    return null;
  } catch (error) {
    return (error as { details: { reason: string } }).details.reason;
  }
};

const node = (operatorType: string, children: PlanNode[] = [], details = ''): PlanNode => ({ operatorType: `${operatorType}@neo4j`, arguments: { Details: details }, children });
const summary = (plan: PlanNode, queryType = 'r', database = 'neo4j'): QueryPlanSummary => ({ queryType, plan, database: { name: database } });

describe('CypherGuard: the text filter (it may refuse, never accept alone)', () => {
  const guard = new CypherGuard();

  it.each([
    ['MATCH (n:Capsule {id: $id}) RETURN n.id AS id'],
    ["MATCH (n) WHERE n.note = 'ünïcødé ✓ \\u0041 \\' quoted' RETURN n"],
    ['MATCH (n)\r\n\tRETURN n // a comment\n'],
    ['RETURN "a \\" b" AS x'],
  ])('passes %j on to the server', (query) => {
    expect(guard.prefilter(query)).toBe(query);
  });

  it.each([
    ['CALL\u00a0db.labels()', 'non-ascii'],
    ['CALL\u2028db.labels()', 'non-ascii'],
    ['CALL\u3000db.labels()', 'non-ascii'],
    ['MATCH (n)\u001cRETURN n', 'control'],
    ['MATCH (n)\u001fRETURN n', 'control'],
    ['MATCH (n)\u0000RETURN n', 'control'],
    ['C\\u0041LL db.labels()', 'escape'],
    ["LOAD \\u0043SV FROM 'file:///etc/passwd' AS l RETURN l", 'escape'],
    ['SHO\\u0057 TRANSACTIONS', 'escape'],
    ['MATCH (`n\\u0041`) RETURN 1', 'escape'],
    ["RETURN 'unterminated", 'syntax'],
    ['', 'type'],
    ['x'.repeat(16 * 1024 + 1), 'length'],
  ])('refuses %j (%s)', (query, reason) => {
    expect(refusal(() => guard.prefilter(query))).toBe(reason);
  });

  it('refuses every non-ASCII or control character outside a string literal, wherever it is', () => {
    fc.assert(
      fc.property(fc.constantFrom('MATCH (n) ', '// c\n', 'RETURN 1 ', '/* x */'), fc.integer({ min: 0, max: 0x10ffff }), fc.constantFrom('RETURN n', ''), (before, code, after) => {
        const c = String.fromCodePoint(code);
        const plain = (code >= 0x20 && code <= 0x7e && code !== 0x5c) || c === '\t' || c === '\n' || c === '\r';
        if (plain || c === "'" || c === '"' || (code >= 0xd800 && code <= 0xdfff)) return;
        expect(refusal(() => guard.prefilter(`${before}${c}${after}`))).not.toBeNull();
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('CypherGuard: the server decides (the plan)', () => {
  const guard = new CypherGuard({ allowProcedures: ['db.labels'] });

  it('accepts a read-only plan of read operators on the expected database', () => {
    expect(() => guard.checkPlan(summary(node('ProduceResults', [node('Projection', [node('NodeByLabelScan')])])), 'neo4j')).not.toThrow();
  });

  it.each([
    ['a write', summary(node('ProduceResults', [node('Create')]), 'w'), 'query-type'],
    ['a read and write', summary(node('ProduceResults'), 'rw'), 'query-type'],
    ['a schema change', summary(node('ProduceResults'), 's'), 'query-type'],
    ['LOAD CSV', summary(node('ProduceResults', [node('Projection', [node('LoadCSV')])])), 'operator'],
    ['SHOW TRANSACTIONS', summary(node('ProduceResults', [node('ShowTransactions')])), 'operator'],
    ['TERMINATE TRANSACTIONS', summary(node('ProduceResults', [node('TerminateTransactions')])), 'operator'],
    ['an operator nobody reviewed', summary(node('ProduceResults', [node('SomethingNew')])), 'operator'],
    ['a procedure off the allowlist', summary(node('ProduceResults', [node('ProcedureCall', [], 'dbms.listConfig() :: (name :: STRING)')])), 'procedure'],
    ['another database', summary(node('ProduceResults'), 'r', 'system'), 'database'],
  ])('refuses %s', (_what, plan, reason) => {
    expect(refusal(() => guard.checkPlan(plan, 'neo4j'))).toBe(reason);
  });

  it('lets through a procedure on the allowlist, deep in the plan', () => {
    expect(() => guard.checkPlan(summary(node('ProduceResults', [node('Apply', [node('Argument'), node('ProcedureCall', [], 'db.labels() :: (label :: STRING)')])])), 'neo4j')).not.toThrow();
  });
});
