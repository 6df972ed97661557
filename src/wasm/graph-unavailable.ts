import { ForgeError } from '../errors.ts';
import { GRAPH_HOST_FUNCTIONS, type HostFunction } from './host-functions.ts';

/** `db_read` / `db_write` were called but the kernel has no graph database. */
export class GraphUnavailableError extends ForgeError {
  constructor(name: string) {
    super(
      'GRAPH_UNAVAILABLE',
      `${name}: no graph database is configured. Start the kernel with the Neo4j store (createKernel({ store: { kind: 'neo4j', uri, user, password } })); the in-memory store has no graph.`,
      { details: { hostFunction: name } },
    );
  }
}

/**
 * The graph host functions of a kernel without a graph database: the capability gate applies as usual, and a call
 * fails with GRAPH_UNAVAILABLE (failing the overlay call) instead of the import being unknown.
 */
export const GRAPH_UNAVAILABLE_FUNCTIONS: readonly HostFunction[] = Object.freeze(
  GRAPH_HOST_FUNCTIONS.map((signature): HostFunction => ({ ...signature, invoke: () => Promise.reject(new GraphUnavailableError(signature.name)) })),
);
