// The graph: reads are Cypher with parameters (the server plans them, the kernel checks the plan); writes are
// structured mutations the kernel compiles itself, limited to the labels and relationship types the manifest's
// `graph.writes` declares.
import { Value, parse } from "./json";

@external("forge", "db_read") declare function hostDbRead(cypher: string, params: string): string;
@external("forge", "db_write") declare function hostDbWrite(mutations: string): string;

/**
 * A batch of graph mutations for `dbWrite`, built by chaining: `new Mutations().merge(...).link(...)`. A key is an
 * object of at least one property that finds the node; property values are strings, numbers, booleans or arrays of
 * one of those. The batch runs in one transaction, in order.
 */
export class Mutations {
  private list: Value = Value.array();

  /** A batch of the JSON array `list` (a parsed input, say), sent as it is: the kernel checks it, not the SDK. */
  static from(list: Value): Mutations {
    const batch = new Mutations();
    batch.list = list;
    return batch;
  }

  /** The node `label` with `key`, created when missing; then sets `set` and removes the properties `remove` on it. */
  merge(label: string, key: Value, set: Value | null = null, remove: Array<string> | null = null): Mutations {
    return this.add(withChanges(Value.object().setString("merge", label).set("key", key), set, remove));
  }

  /** A new node `label` with `properties`. */
  create(label: string, properties: Value): Mutations {
    return this.add(Value.object().setString("create", label).set("properties", properties));
  }

  /** Sets `set` and removes the properties `remove` on the node `label` with `key` (nothing when it does not exist). */
  update(label: string, key: Value, set: Value | null, remove: Array<string> | null = null): Mutations {
    return this.add(withChanges(Value.object().setString("update", label).set("key", key), set, remove));
  }

  /** Removes the properties `names` from the node `label` with `key`: an update that only removes. */
  remove(label: string, key: Value, names: Array<string>): Mutations {
    return this.update(label, key, null, names);
  }

  /** Deletes the node `label` with `key` and its relationships. */
  delete(label: string, key: Value): Mutations {
    return this.add(Value.object().setString("delete", label).set("key", key));
  }

  /** A relationship `type` from one node to another (each by label and key), with `properties`; made once. */
  link(type: string, fromLabel: string, fromKey: Value, toLabel: string, toKey: Value, properties: Value | null = null): Mutations {
    const mutation = Value.object().setString("link", type).set("from", node(fromLabel, fromKey)).set("to", node(toLabel, toKey));
    if (properties !== null) mutation.set("properties", properties);
    return this.add(mutation);
  }

  /** Deletes the relationships `type` from one node to another (each by label and key). */
  unlink(type: string, fromLabel: string, fromKey: Value, toLabel: string, toKey: Value): Mutations {
    return this.add(Value.object().setString("unlink", type).set("from", node(fromLabel, fromKey)).set("to", node(toLabel, toKey)));
  }

  /** The JSON text `db_write` takes. */
  toString(): string {
    return this.list.toString();
  }

  private add(mutation: Value): Mutations {
    this.list.push(mutation);
    return this;
  }
}

function node(label: string, key: Value): Value {
  return Value.object().setString("label", label).set("key", key);
}

function withChanges(mutation: Value, set: Value | null, remove: Array<string> | null): Value {
  if (set !== null) mutation.set("set", set);
  if (remove !== null) mutation.set("remove", Value.strings(remove));
  return mutation;
}

/**
 * A read-only Cypher query on the graph (capability DATABASE_READ): `{"rows":[…],"truncated":bool}`. Parameters
 * only, no string building; the kernel refuses a query whose plan writes or reaches outside the graph.
 */
export function dbRead(cypher: string, params: Value): Value {
  return parseOrNull(hostDbRead(cypher, params.toString()));
}

/**
 * Runs a batch of mutations in one transaction (capability DATABASE_WRITE) and returns its counters:
 * `{"nodesCreated","nodesDeleted","relationshipsCreated","relationshipsDeleted","propertiesSet"}`.
 */
export function dbWrite(mutations: Mutations): Value {
  return parseOrNull(hostDbWrite(mutations.toString()));
}

function parseOrNull(text: string): Value {
  const v = parse(text);
  return v === null ? Value.null() : v;
}
