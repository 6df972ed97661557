import neo4j, { isDate, isDateTime, isDuration, isLocalDateTime, isLocalTime, isNode, isPath, isPoint, isRelationship, isTime, type Driver } from 'neo4j-driver';
import { ForgeError } from '../errors.ts';
import { GRAPH_HOST_FUNCTIONS, type HostCallContext, type HostFunction } from '../wasm/host-functions.ts';
import { CypherGuard } from './cypher-guard.ts';

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
  guard?: CypherGuard;
  /** Rows returned at most, overriding each overlay's manifest (`database.rowCap`); more are dropped (`truncated`). */
  rowCap?: number;
  /** Transaction timeout (ms), overriding each overlay's manifest (`database.timeoutMs`). */
  timeoutMs?: number;
}

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

function parseParams(raw: unknown): Record<string, unknown> {
  let params: unknown;
  try {
    params = JSON.parse(String(raw === '' ? '{}' : raw));
  } catch {
    throw new GraphQueryError('the parameters are not JSON', undefined);
  }
  if (typeof params !== 'object' || params === null || Array.isArray(params)) throw new GraphQueryError('the parameters must be a JSON object', undefined);
  return params as Record<string, unknown>;
}

function translate(error: unknown): Error {
  const code = (error as { code?: string }).code;
  if (code === 'ServiceUnavailable' || code === 'SessionExpired') return new StoreUnavailableError((error as Error).message, { cause: error });
  if (error instanceof ForgeError) return error;
  return new GraphQueryError((error as Error).message, code, { cause: error });
}

/**
 * The graph host functions over a real Neo4j: `db_read` runs in a READ access-mode transaction (so Neo4j itself
 * refuses writes), `db_write` in a write transaction; both pass the CypherGuard first, run with the calling
 * overlay's transaction timeout, and return at most its row cap as `{ rows, truncated }`.
 */
export function graphHostFunctions(options: GraphHostOptions): HostFunction[] {
  const guard = options.guard ?? new CypherGuard();
  const run = async (context: HostCallContext, mode: 'READ' | 'WRITE', cypher: unknown, rawParams: unknown): Promise<string> => {
    const rowCap = options.rowCap ?? context.database.rowCap;
    const timeout = options.timeoutMs ?? context.database.timeoutMs;
    guard.check(cypher);
    const params = parseParams(rawParams);
    const session = options.driver.session({ defaultAccessMode: mode === 'READ' ? neo4j.session.READ : neo4j.session.WRITE, ...(options.database === undefined ? {} : { database: options.database }) });
    try {
      const work = async (tx: { run: (q: string, p: Record<string, unknown>) => AsyncIterable<{ toObject(): Record<string, unknown> }> & { summary(): Promise<unknown> } }) => {
        const rows: unknown[] = [];
        let truncated = false;
        const result = tx.run(cypher as string, params);
        for await (const record of result) {
          if (rows.length >= rowCap) {
            truncated = true;
            break;
          }
          rows.push(toJson(record.toObject()));
        }
        return { rows, truncated };
      };
      const reply = mode === 'READ' ? await session.executeRead(work, { timeout }) : await session.executeWrite(work, { timeout });
      return JSON.stringify(reply);
    } catch (error) {
      throw translate(error);
    } finally {
      await session.close();
    }
  };
  return GRAPH_HOST_FUNCTIONS.map((signature) => ({
    ...signature,
    invoke: (context: HostCallContext, args: readonly (string | number)[]) => run(context, signature.name === 'db_read' ? 'READ' : 'WRITE', args[0], args[1]),
  }));
}
