import neo4j from 'neo4j-driver';
import { ForgeError } from '../errors.ts';
import { jsonNestsDeeperThan, MAX_JSON_NESTING } from '../json-nesting.ts';
import { labelRefusal, OWNER_PROPERTY, propertyRefusal, relationshipRefusal } from './graph-names.ts';

/**
 * `db_write` takes structured mutations, never Cypher: the kernel compiles each to parameterized Cypher in which
 * every name is an identifier it checked and every value a parameter, limited to the labels and relationship types
 * the overlay's manifest declares. Every node an overlay writes carries its name in the owner property, and every
 * mutation matches only nodes it owns: an overlay can neither see through `db_write` nor touch another's nodes.
 */

/** A mutation is malformed, or names a label or type the overlay may not write; `details.at` is its index. */
export class GraphMutationError extends ForgeError {
  constructor(at: number | null, message: string) {
    super('GRAPH_MUTATION_REFUSED', `db_write refused${at === null ? '' : ` mutation ${at}`}: ${message}. See overlays-as/README.md, "Graph writes".`, { details: { at } });
  }
}

/** What an overlay's manifest lets it write. */
export interface GraphWrites {
  labels: readonly string[];
  relationships: readonly string[];
}

/** One compiled statement: Cypher with only checked names in it, and its parameters. */
export interface CompiledMutation {
  cypher: string;
  params: Record<string, unknown>;
}

/** Mutations one `db_write` call may carry. */
export const MAX_MUTATIONS = 100;
/** Properties one node or relationship reference, set or key may name. */
const MAX_PROPERTIES = 64;
const OPERATIONS = ['merge', 'create', 'update', 'delete', 'link', 'unlink'] as const;
type Operation = (typeof OPERATIONS)[number];
/** The fields each operation takes besides its own name. */
const FIELDS: Record<Operation, readonly string[]> = {
  merge: ['key', 'set', 'remove'],
  create: ['properties'],
  update: ['key', 'set', 'remove'],
  delete: ['key'],
  link: ['from', 'to', 'properties'],
  unlink: ['from', 'to'],
};

type Scalar = string | number | boolean;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A property value as Neo4j stores it: integral numbers as integers (so `LIMIT $n` and equality work), others as they are. */
function toValue(value: unknown, at: number, path: string): unknown {
  const scalar = (item: unknown): item is Scalar => typeof item === 'string' || typeof item === 'boolean' || (typeof item === 'number' && Number.isFinite(item));
  const convert = (item: Scalar): unknown => (typeof item === 'number' && Number.isSafeInteger(item) ? neo4j.int(item) : item);
  if (scalar(value)) return convert(value);
  if (Array.isArray(value) && value.every(scalar) && new Set(value.map((item) => typeof item)).size <= 1) return value.map(convert);
  throw new GraphMutationError(at, `${path} must be a string, a number, a boolean, or an array of one of those, got ${JSON.stringify(value)?.slice(0, 60)}`);
}

/** A map of checked property names to Neo4j values. */
function properties(raw: unknown, at: number, path: string, options: { nonEmpty: boolean }): Record<string, unknown> {
  if (!isRecord(raw)) throw new GraphMutationError(at, `${path} must be an object of property → value`);
  const entries = Object.entries(raw);
  if (options.nonEmpty && entries.length === 0) throw new GraphMutationError(at, `${path} must name at least one property`);
  if (entries.length > MAX_PROPERTIES) throw new GraphMutationError(at, `${path} names ${entries.length} properties; at most ${MAX_PROPERTIES}`);
  const out: Record<string, unknown> = {};
  for (const [name, value] of entries) {
    const why = propertyRefusal(name);
    if (why !== undefined) throw new GraphMutationError(at, `${path}.${name} ${why}`);
    out[name] = toValue(value, at, `${path}.${name}`);
  }
  return out;
}

function propertyNames(raw: unknown, at: number, path: string): string[] {
  if (!Array.isArray(raw) || raw.length > MAX_PROPERTIES) throw new GraphMutationError(at, `${path} must be an array of at most ${MAX_PROPERTIES} property names`);
  return raw.map((name, i) => {
    const why = typeof name === 'string' ? propertyRefusal(name) : 'must be a string';
    if (why !== undefined) throw new GraphMutationError(at, `${path}[${i}] ${why}`);
    return name as string;
  });
}

/** A name the overlay's manifest declares (and the kernel allows), checked before it is put into Cypher. */
function declared(name: unknown, allowed: readonly string[], refusal: (name: string) => string | undefined, at: number, what: string): string {
  if (typeof name !== 'string') throw new GraphMutationError(at, `the ${what} must be a string`);
  const why = refusal(name);
  if (why !== undefined) throw new GraphMutationError(at, `the ${what} "${name}" ${why}`);
  if (!allowed.includes(name)) throw new GraphMutationError(at, `the ${what} "${name}" is not in the manifest's graph.writes.${what === 'label' ? 'labels' : 'relationships'} (${allowed.join(', ') || 'none'})`);
  return name;
}

/** `(n:`Label` {k: $p.k, …, forge_owner: $owner})`: a node of the overlay's own, by label and key. */
function nodePattern(variable: string, label: string, key: Record<string, unknown>, param: string): string {
  const fields = [...Object.keys(key).map((name) => `\`${name}\`: $${param}.\`${name}\``), `${OWNER_PROPERTY}: $owner`];
  return `(${variable}:\`${label}\` {${fields.join(', ')}})`;
}

function setAndRemove(variable: string, set: Record<string, unknown> | undefined, remove: readonly string[]): string {
  return [set === undefined ? '' : ` SET ${variable} += $set`, ...remove.map((name) => ` REMOVE ${variable}.\`${name}\``)].join('');
}

/**
 * Parses `db_write`'s argument (a JSON array of mutations) and compiles it to statements for one write transaction.
 * Throws {@link GraphMutationError} for anything malformed or outside the overlay's declared labels and types.
 */
export function compileMutations(json: string, owner: string, writes: GraphWrites): CompiledMutation[] {
  if (jsonNestsDeeperThan(json)) throw new GraphMutationError(null, `its argument nests arrays and objects deeper than ${MAX_JSON_NESTING} levels`);
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new GraphMutationError(null, 'its argument is not JSON (the SDK\'s Mutations builds it)');
  }
  if (!Array.isArray(raw) || raw.length === 0) throw new GraphMutationError(null, 'its argument must be a non-empty array of mutations');
  if (raw.length > MAX_MUTATIONS) throw new GraphMutationError(null, `it carries ${raw.length} mutations; at most ${MAX_MUTATIONS} a call`);
  return raw.map((mutation, at) => compileOne(mutation, at, owner, writes));
}

function compileOne(mutation: unknown, at: number, owner: string, writes: GraphWrites): CompiledMutation {
  if (!isRecord(mutation)) throw new GraphMutationError(at, 'a mutation must be an object');
  const operations = OPERATIONS.filter((op) => op in mutation);
  if (operations.length !== 1) throw new GraphMutationError(at, `a mutation names exactly one of ${OPERATIONS.join(', ')}`);
  const op = operations[0]!;
  for (const field of Object.keys(mutation)) {
    if (field !== op && !FIELDS[op].includes(field)) throw new GraphMutationError(at, `"${op}" takes ${FIELDS[op].join(', ')}, not "${field}"`);
  }
  const label = (name: unknown) => declared(name, writes.labels, labelRefusal, at, 'label');
  const endpoint = (raw: unknown, side: 'from' | 'to') => {
    if (!isRecord(raw) || Object.keys(raw).some((k) => k !== 'label' && k !== 'key')) throw new GraphMutationError(at, `${side} must be { label, key }`);
    return { label: label(raw.label), key: properties(raw.key, at, `${side}.key`, { nonEmpty: true }) };
  };
  const set = mutation.set === undefined ? undefined : properties(mutation.set, at, 'set', { nonEmpty: false });
  const remove = mutation.remove === undefined ? [] : propertyNames(mutation.remove, at, 'remove');
  switch (op) {
    case 'merge': {
      const key = properties(mutation.key, at, 'key', { nonEmpty: true });
      return { cypher: `MERGE ${nodePattern('n', label(mutation.merge), key, 'key')}${setAndRemove('n', set, remove)}`, params: { key, set: set ?? {}, owner } };
    }
    case 'create': {
      const props = properties(mutation.properties ?? {}, at, 'properties', { nonEmpty: false });
      return { cypher: `CREATE (n:\`${label(mutation.create)}\`) SET n += $props, n.${OWNER_PROPERTY} = $owner`, params: { props, owner } };
    }
    case 'update': {
      if (set === undefined && remove.length === 0) throw new GraphMutationError(at, '"update" needs set or remove');
      const key = properties(mutation.key, at, 'key', { nonEmpty: true });
      return { cypher: `MATCH ${nodePattern('n', label(mutation.update), key, 'key')}${setAndRemove('n', set, remove)}`, params: { key, set: set ?? {}, owner } };
    }
    case 'delete': {
      const key = properties(mutation.key, at, 'key', { nonEmpty: true });
      return { cypher: `MATCH ${nodePattern('n', label(mutation.delete), key, 'key')} DETACH DELETE n`, params: { key, owner } };
    }
    case 'link':
    case 'unlink': {
      const type = declared(mutation[op], writes.relationships, relationshipRefusal, at, 'relationship type');
      const from = endpoint(mutation.from, 'from');
      const to = endpoint(mutation.to, 'to');
      const match = `MATCH ${nodePattern('a', from.label, from.key, 'from')} MATCH ${nodePattern('b', to.label, to.key, 'to')}`;
      if (op === 'unlink') return { cypher: `${match} MATCH (a)-[r:\`${type}\`]->(b) DELETE r`, params: { from: from.key, to: to.key, owner } };
      const props = properties(mutation.properties ?? {}, at, 'properties', { nonEmpty: false });
      return { cypher: `${match} MERGE (a)-[r:\`${type}\`]->(b) SET r += $props`, params: { from: from.key, to: to.key, props, owner } };
    }
  }
}
