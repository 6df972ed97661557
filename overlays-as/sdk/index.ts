// The Forge Kernel overlay SDK for AssemblyScript: host bindings, JSON helpers and result helpers.
// Every host function needs its capability in the overlay's manifest (and granted by the service that loads it);
// only the functions an overlay actually calls are imported, so unused ones need no capability.
import { Value, parse, parseError } from "./json";

export { Value, Kind, parse, quote } from "./json";

@external("forge", "log") declare function hostLog(level: i32, message: string): void;
@external("forge", "event_publish") declare function hostPublish(type: string, payload: string): i32;
@external("forge", "db_read") declare function hostDbRead(cypher: string, params: string): string;
@external("forge", "db_write") declare function hostDbWrite(cypher: string, params: string): string;

/** Log lines, bound by the kernel to this overlay (capability LOGGING). */
export namespace log {
  export function debug(message: string): void { hostLog(0, message); }
  export function info(message: string): void { hostLog(1, message); }
  export function warn(message: string): void { hostLog(2, message); }
  export function error(message: string): void { hostLog(3, message); }
}

/**
 * Publishes an event (capability EVENT_PUBLISH). `type` is "domain.action"; the kernel sets the source to this
 * overlay and delivers the event only if the call succeeds.
 */
export function publish(type: string, payload: Value): void {
  hostPublish(type, payload.toString());
}

/** A read-only Cypher query on the graph (capability DATABASE_READ); parameters only, no string building. */
export function dbRead(cypher: string, params: Value): Value {
  return parseOrNull(hostDbRead(cypher, params.toString()));
}

/** A Cypher write on the graph (capability DATABASE_WRITE). */
export function dbWrite(cypher: string, params: Value): Value {
  return parseOrNull(hostDbWrite(cypher, params.toString()));
}

function parseOrNull(text: string): Value {
  const v = parse(text);
  return v === null ? Value.null() : v;
}

/** Parses the call's input; aborts the call (a typed OVERLAY_TRAP) when it is not JSON. */
export function input(text: string): Value {
  const v = parse(text);
  if (v === null) abort("input is not JSON: " + parseError);
  return v!;
}

/** A successful result: `{"ok":true,"data":…}`. */
export function ok(data: Value): string {
  return '{"ok":true,"data":' + data.toString() + "}";
}

/** A failed result (the overlay refuses the input): `{"ok":false,"error":{"message":…}}`. */
export function fail(message: string): string {
  return Value.object().set("ok", Value.fromBool(false)).set("error", Value.object().setString("message", message)).toString();
}
