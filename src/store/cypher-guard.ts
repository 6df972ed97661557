import { ForgeError } from '../errors.ts';

/** A query an overlay may not run; `details.reason` says which rule refused it. */
export class CypherRejectedError extends ForgeError {
  constructor(reason: string, message: string, details: Record<string, unknown> = {}) {
    super('CYPHER_REJECTED', `Cypher refused: ${message}. db_read runs one read-only query with $parameters: no procedures outside the allowlist, no file or network loading, no administration (writes go through db_write's mutations).`, {
      details: { reason, ...details },
    });
  }
}

export interface CypherGuardOptions {
  /** Procedures a query may call, by exact name (case-insensitive), e.g. `db.labels`. Default: none. */
  allowProcedures?: readonly string[];
  /** Longest query accepted (characters). Default 16 Ki. */
  maxLength?: number;
}

/** What a query's EXPLAIN tells: the driver's result summary, the parts the guard reads. */
export interface QueryPlanSummary {
  queryType: string;
  plan: PlanNode | false;
  database: { name: string | undefined | null };
}

/** One operator of an EXPLAIN plan as the driver gives it. */
export interface PlanNode {
  operatorType: string;
  arguments: Record<string, unknown>;
  children: PlanNode[];
}

const DEFAULT_MAX_LENGTH = 16 * 1024;

/**
 * The operators a read-only query may plan to, from Neo4j 5's list: scans and seeks, expansions, joins, filters,
 * projections, aggregation, ordering and paging, subquery plumbing. Anything else (LoadCSV, ProcedureCall outside
 * the allowlist, the Show… and Terminate… commands, every updating operator) is refused: an operator this list does
 * not know is refused too, so a Neo4j release that adds one fails closed until it is reviewed and added here.
 */
const READ_OPERATORS = new Set([
  // leaves
  'AllNodesScan', 'NodeByLabelScan', 'NodeByIdSeek', 'NodeByElementIdSeek', 'NodeIndexSeek', 'NodeUniqueIndexSeek', 'NodeIndexSeekByRange',
  'NodeUniqueIndexSeekByRange', 'NodeIndexScan', 'NodeIndexContainsScan', 'NodeIndexEndsWithScan', 'MultiNodeIndexSeek', 'UnionNodeByLabelsScan',
  'IntersectionNodeByLabelsScan', 'SubtractionNodeByLabelsScan', 'DirectedAllRelationshipsScan', 'UndirectedAllRelationshipsScan',
  'DirectedRelationshipTypeScan', 'UndirectedRelationshipTypeScan', 'DirectedUnionRelationshipTypesScan', 'UndirectedUnionRelationshipTypesScan',
  'DirectedRelationshipByIdSeek', 'UndirectedRelationshipByIdSeek', 'DirectedRelationshipByElementIdSeek', 'UndirectedRelationshipByElementIdSeek',
  'DirectedRelationshipIndexSeek', 'UndirectedRelationshipIndexSeek', 'DirectedRelationshipIndexScan', 'UndirectedRelationshipIndexScan',
  'DirectedRelationshipIndexContainsScan', 'UndirectedRelationshipIndexContainsScan', 'DirectedRelationshipIndexEndsWithScan',
  'UndirectedRelationshipIndexEndsWithScan', 'DirectedRelationshipIndexSeekByRange', 'UndirectedRelationshipIndexSeekByRange',
  'DirectedRelationshipUniqueIndexSeek', 'UndirectedRelationshipUniqueIndexSeek', 'DirectedRelationshipUniqueIndexSeekByRange',
  'UndirectedRelationshipUniqueIndexSeekByRange', 'NodeCountFromCountStore', 'RelationshipCountFromCountStore', 'Argument', 'ArgumentTracker',
  'Input', 'EmptyRow',
  // traversal
  'Expand(All)', 'Expand(Into)', 'OptionalExpand(All)', 'OptionalExpand(Into)', 'VarLengthExpand(All)', 'VarLengthExpand(Into)',
  'VarLengthExpand(Pruning)', 'BFSPruningVarLengthExpand', 'VarLengthExpand(Pruning,BFS)', 'ShortestPath', 'StatefulShortestPath(All)',
  'StatefulShortestPath(Into)', 'Trail', 'Repeat(Trail)', 'ProjectEndpoints', 'TriadicSelection', 'TriadicBuild', 'TriadicFilter',
  // joins and subqueries
  'Apply', 'SemiApply', 'AntiSemiApply', 'LetSemiApply', 'LetAntiSemiApply', 'SelectOrSemiApply', 'SelectOrAntiSemiApply',
  'LetSelectOrSemiApply', 'LetSelectOrAntiSemiApply', 'RollUpApply', 'ConditionalApply', 'AntiConditionalApply', 'Anti', 'Optional',
  'CartesianProduct', 'NodeHashJoin', 'NodeLeftOuterHashJoin', 'NodeRightOuterHashJoin', 'ValueHashJoin', 'AssertSameNode',
  'AssertSameRelationship', 'Union', 'OrderedUnion', 'Unwind', 'PartitionedUnwind', 'NullifyMetadata',
  // rows
  'Filter', 'Projection', 'CacheProperties', 'ProduceResults', 'EmptyResult', 'Eager', 'Limit', 'ExhaustiveLimit', 'Skip', 'Sort',
  'PartialSort', 'Top', 'Top1WithTies', 'PartialTop', 'Distinct', 'OrderedDistinct', 'EagerAggregation', 'OrderedAggregation', 'Aggregation',
]);

/** What may appear outside string literals: printable ASCII, tab, line feed, carriage return; no backslash. */
const PLAIN = /^[\t\n\r\x20-\x5b\x5d-\x7e]$/;

/**
 * Decides whether an overlay's read query may run. The server decides what a query is: {@link checkPlan} reads its
 * EXPLAIN (the query type must be read-only, every operator of the plan must be a read operator, procedures only from
 * the allowlist). {@link prefilter} is a first, text-only filter that may refuse (wrong type, too long, non-ASCII or
 * control characters or backslash escapes outside string literals, where Neo4j would read them differently from a
 * person), but never accepts a query on its own.
 */
export class CypherGuard {
  readonly #procedures: ReadonlySet<string>;
  readonly #maxLength: number;

  constructor(options: CypherGuardOptions = {}) {
    this.#procedures = new Set((options.allowProcedures ?? []).map((name) => name.toLowerCase()));
    this.#maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  }

  /** The query, if the text-only rules let it through to the server's check; else {@link CypherRejectedError}. */
  prefilter(query: unknown): string {
    if (typeof query !== 'string' || query.trim() === '') throw new CypherRejectedError('type', 'the query must be a non-empty string');
    if (query.length > this.#maxLength) throw new CypherRejectedError('length', `the query is ${query.length} characters; at most ${this.#maxLength}`);
    let quote: string | undefined;
    for (let i = 0; i < query.length; i++) {
      const c = query[i]!;
      if (quote !== undefined) {
        if (c === '\\') i++;
        else if (c === quote) quote = undefined;
        continue;
      }
      if (c === "'" || c === '"') {
        quote = c;
        continue;
      }
      if (!PLAIN.test(c)) {
        const code = c.codePointAt(0)!;
        const reason = c === '\\' ? 'escape' : code < 0x20 || code === 0x7f ? 'control' : 'non-ascii';
        const what = c === '\\' ? 'a backslash escape' : `the character U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
        throw new CypherRejectedError(reason, `${what} at ${i} is outside a string literal (only plain ASCII is accepted there; put other text in a $parameter)`, { at: i });
      }
    }
    if (quote !== undefined) throw new CypherRejectedError('syntax', 'a string literal is not closed');
    return query;
  }

  /** Refuses, unless the server planned the query as read-only with read operators (and allowed procedures) only. */
  checkPlan(summary: QueryPlanSummary, database?: string): void {
    if (summary.queryType !== 'r') {
      throw new CypherRejectedError('query-type', `Neo4j plans this query as ${summary.queryType === 'w' ? 'a write' : summary.queryType === 'rw' ? 'a read and write' : summary.queryType === 's' ? 'a schema change' : `type "${summary.queryType}"`}, not a read`, { queryType: summary.queryType });
    }
    if (database !== undefined && summary.database.name !== database) {
      throw new CypherRejectedError('database', `the query would run on database "${String(summary.database.name)}", not "${database}"`);
    }
    if (summary.plan === false) throw new CypherRejectedError('plan', 'Neo4j returned no plan for the query');
    const pending: PlanNode[] = [summary.plan];
    for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
      const operator = node.operatorType.replace(/@.*$/, '');
      if (operator === 'ProcedureCall') this.#checkProcedure(node);
      else if (!READ_OPERATORS.has(operator)) throw new CypherRejectedError('operator', `the plan holds the operator ${operator}, which a read of the graph does not need`, { operator });
      pending.push(...node.children);
    }
  }

  #checkProcedure(node: PlanNode): void {
    const raw = node.arguments.Details ?? node.arguments.details;
    const details = typeof raw === 'string' ? raw : '';
    const name = /^\s*([A-Za-z_][\w.]*)\s*\(/.exec(details)?.[1]?.toLowerCase();
    if (name === undefined || !this.#procedures.has(name)) {
      throw new CypherRejectedError('procedure', `the query calls the procedure ${name ?? '(unnamed)'}, which is not on the allowlist (${[...this.#procedures].join(', ') || 'none'})`, { procedure: name ?? null });
    }
  }
}
