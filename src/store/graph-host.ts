import { randomUUID } from 'node:crypto';
import neo4j, { isDate, isDateTime, isDuration, isLocalDateTime, isLocalTime, isNode, isPath, isPoint, isRelationship, isTime, type Driver } from 'neo4j-driver';
import { ForgeError } from '../errors.ts';
import { jsonNestsDeeperThan, MAX_JSON_NESTING } from '../json-nesting.ts';
import { GRAPH_HOST_FUNCTIONS, type HostCallContext, type HostFunction } from '../wasm/host-functions.ts';
import { CypherGuard, type QueryPlanSummary } from './cypher-guard.ts';
import { compileMutations } from './graph-mutations.ts';
import { ReplyTooLargeError } from '../wasm/errors.ts';

/** Neo4j refused or failed the overlay's query; `details.neo4jCode` is the server's code. */
export class GraphQueryError extends ForgeError {
  constructor(message: string, neo4jCode: string | undefined, options: { cause?: unknown } = {}) {
    super('GRAPH_QUERY_FAILED', `The graph refused the query: ${message}`, { ...options, details: { neo4jCode: neo4jCode ?? null } });
  }
}

/** Neo4j cannot be reached right now (stopped, restarting, network). */
export class StoreUnavailableError extends ForgeError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('STORE_UNAVAILABLE', `Neo4j is unavailable: ${message}. The kernel reconnects by itself; retry the call.`, options);
  }
}

export interface GraphHostOptions {
  driver: Driver;
  database?: string;
  /** Decides what a read query may be (the procedures allowlist lives there). */
  guard?: CypherGuard;
  /** Ceilings over every overlay's manifest (`database.rowCap`, `timeoutMs`, `maxReplyBytes`): the smaller applies. */
  rowCap?: number;
  timeoutMs?: number;
  maxReplyBytes?: number;
}

/** The transaction timeout no manifest can pass unless the service sets another ceiling (ms). */
export const GRAPH_TIMEOUT_CEILING_MS = 30_000;
/** The reply size no manifest can pass unless the service sets another ceiling (bytes of JSON). */
export const GRAPH_REPLY_CEILING_BYTES = 4 * 1024 * 1024;

/** Neo4j values as plain JSON: integers as numbers (strings past 2^53), graph objects as objects, temporals as ISO text. */
export function toJson(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (neo4j.isInt(value)) return neo4j.integer.inSafeRange(value) ? neo4j.integer.toNumber(value) : neo4j.integer.toString(value);
  if (isNode(value)) return { elementId: value.elementId, labels: value.labels, properties: toJson(value.properties) };
  if (isRelationship(value)) return { elementId: value.elementId, type: value.type, start: value.startNodeElementId, end: value.endNodeElementId, properties: toJson(value.properties) };
  if (isPath(value)) return { segments: value.segments.map((s) => ({ start: toJson(s.start), relationship: toJson(s.relationship), end: toJson(s.end) })) };
  if (isDate(value) || isDateTime(value) || isLocalDateTime(value) || isLocalTime(value) || isTime(value) || isDuration(value) || isPoint(value)) return value.toString();
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  return value;
}

/** Parameters as Neo4j should see them: integral JSON numbers as integers (so `SKIP $n LIMIT $m` works), the rest as is. */
export function toNeo4jParams(value: unknown): unknown {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? neo4j.int(value) : value;
  if (Array.isArray(value)) return value.map(toNeo4jParams);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toNeo4jParams(v)]));
  return value;
}

function parseParams(raw: unknown): Record<string, unknown> {
  const text = String(raw === '' ? '{}' : raw);
  // toNeo4jParams and the driver recurse into the value: refused before either sees it.
  if (jsonNestsDeeperThan(text)) throw new GraphQueryError(`the parameters nest arrays and objects deeper than ${MAX_JSON_NESTING} levels`, undefined);
  let params: unknown;
  try {
    params = JSON.parse(text);
  } catch {
    throw new GraphQueryError('the parameters are not JSON', undefined);
  }
  if (typeof params !== 'object' || params === null || Array.isArray(params)) throw new GraphQueryError('the parameters must be a JSON object', undefined);
  return toNeo4jParams(params) as Record<string, unknown>;
}

function translate(error: unknown): Error {
  const code = (error as { code?: string }).code;
  if (code === 'ServiceUnavailable' || code === 'SessionExpired') return new StoreUnavailableError((error as Error).message, { cause: error });
  if (error instanceof ForgeError) return error;
  return new GraphQueryError((error as Error).message, code, { cause: error });
}

interface Transaction {
  run(query: string, params?: Record<string, unknown>): AsyncIterable<{ toObject(): Record<string, unknown> }> & { summary(): Promise<unknown> };
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

/**
 * Stops the transactions tagged with `call`: the server ends them at once. A rollback from the client alone waits for
 * the query it is running to answer first, so a slow query would run on until its timeout.
 */
async function terminate(options: GraphHostOptions, call: string): Promise<void> {
  const database = options.database === undefined ? {} : { database: options.database };
  const { records } = await options.driver.executeQuery('SHOW TRANSACTIONS YIELD transactionId, metaData WHERE metaData.forgeCall = $call RETURN collect(transactionId) AS ids', { call }, database);
  const ids = records[0]?.get('ids') as string[] | undefined;
  if (ids !== undefined && ids.length > 0) await options.driver.executeQuery('TERMINATE TRANSACTIONS $ids', { ids }, database);
}

/**
 * Runs `work` in a transaction of its own that ends when the overlay's call does: when the call is abandoned
 * (deadline, cancel, a killed worker), the server is told to terminate the transaction at once, instead of letting
 * its query run on until its timeout.
 */
async function inTransaction<T>(options: GraphHostOptions, context: HostCallContext, mode: 'READ' | 'WRITE', timeout: number, work: (tx: Transaction) => Promise<T>): Promise<T> {
  if (context.signal.aborted) throw new GraphQueryError('the overlay call was abandoned before the query started', undefined);
  const session = options.driver.session({ defaultAccessMode: mode === 'READ' ? neo4j.session.READ : neo4j.session.WRITE, ...(options.database === undefined ? {} : { database: options.database }) });
  const call = randomUUID();
  const tx = session.beginTransaction({ timeout, metadata: { forgeCall: call, forgeOverlay: context.overlayName, forgeExport: context.exportName } }) as unknown as Transaction;
  let ended = false;
  const abandon = (): void => {
    if (!ended) void terminate(options, call).catch(() => undefined);
  };
  context.signal.addEventListener('abort', abandon, { once: true });
  try {
    const result = await work(tx);
    ended = true;
    await tx.commit();
    return result;
  } catch (error) {
    ended = true;
    await tx.rollback().catch(() => undefined);
    if (context.signal.aborted) throw new GraphQueryError('the overlay call was abandoned; its query was stopped', undefined, { cause: error });
    throw translate(error);
  } finally {
    context.signal.removeEventListener('abort', abandon);
    await session.close().catch(() => undefined);
  }
}

/**
 * The graph host functions over a real Neo4j.
 *
 * `db_read(cypher, params)`: the CypherGuard's text filter first, then Neo4j's own plan (`EXPLAIN` in the same READ
 * transaction) decides: only a read-only plan of read operators runs, and it runs in a READ transaction (so Neo4j
 * refuses writes a second time). The reply is `{ rows, truncated }`, at most the overlay's row cap (more rows are
 * dropped, `truncated`) and byte cap (past it, `REPLY_TOO_LARGE`).
 *
 * `db_write(mutations)`: structured mutations (see graph-mutations.ts) compiled to parameterized Cypher in one WRITE
 * transaction, within the labels and types the overlay declares, on nodes it owns; the reply is the counters.
 *
 * Both run with the smaller of the overlay's transaction timeout and the service's ceiling, and stop when the call is
 * abandoned.
 */
export function graphHostFunctions(options: GraphHostOptions): HostFunction[] {
  const guard = options.guard ?? new CypherGuard();
  let home: Promise<string> | undefined;
  /** The database reads must plan on: the configured one, or the server's home database, asked once. */
  const database = (): Promise<string> => {
    if (options.database !== undefined) return Promise.resolve(options.database);
    home ??= options.driver.executeQuery('EXPLAIN RETURN 1', {}, { routing: neo4j.routing.READ }).then(
      ({ summary }) => String(summary.database.name),
      (error: unknown) => {
        home = undefined;
        throw translate(error);
      },
    );
    return home;
  };
  const timeoutOf = (context: HostCallContext) => Math.min(context.database.timeoutMs, options.timeoutMs ?? GRAPH_TIMEOUT_CEILING_MS);
  const read = (context: HostCallContext, cypher: unknown, rawParams: unknown): Promise<string> => {
    const query = guard.prefilter(cypher);
    const params = parseParams(rawParams);
    const rowCap = Math.min(context.database.rowCap, options.rowCap ?? Number.MAX_SAFE_INTEGER);
    const maxBytes = Math.min(context.database.maxReplyBytes, options.maxReplyBytes ?? GRAPH_REPLY_CEILING_BYTES);
    return inTransaction(options, context, 'READ', timeoutOf(context), async (tx) => {
      guard.checkPlan((await tx.run(`EXPLAIN ${query}`, params).summary()) as QueryPlanSummary, await database());
      const rows: string[] = [];
      // The reply is `{"rows":[…],"truncated":…}`: its bytes are the rows' JSON, their commas and this frame.
      let bytes = 30;
      let truncated = false;
      for await (const record of tx.run(query, params)) {
        if (rows.length >= rowCap) {
          truncated = true;
          break;
        }
        const row = JSON.stringify(toJson(record.toObject()));
        bytes += Buffer.byteLength(row) + 1;
        if (bytes > maxBytes) throw new ReplyTooLargeError('The reply of db_read', bytes, maxBytes);
        rows.push(row);
      }
      return `{"rows":[${rows.join(',')}],"truncated":${truncated}}`;
    });
  };
  const write = (context: HostCallContext, mutations: unknown): Promise<string> => {
    const statements = compileMutations(String(mutations), context.overlayName, context.graph.writes);
    return inTransaction(options, context, 'WRITE', timeoutOf(context), async (tx) => {
      const counts = { nodesCreated: 0, nodesDeleted: 0, relationshipsCreated: 0, relationshipsDeleted: 0, propertiesSet: 0 };
      for (const { cypher, params } of statements) {
        const summary = (await tx.run(cypher, params).summary()) as { counters: { updates(): Record<string, number> } };
        const updates = summary.counters.updates();
        for (const key of Object.keys(counts) as (keyof typeof counts)[]) counts[key] += updates[key] ?? 0;
      }
      return JSON.stringify(counts);
    });
  };
  return GRAPH_HOST_FUNCTIONS.map((signature) => ({
    ...signature,
    invoke: (context: HostCallContext, args: readonly (string | number)[]) => (signature.name === 'db_read' ? read(context, args[0], args[1]) : write(context, args[0])),
  }));
}
