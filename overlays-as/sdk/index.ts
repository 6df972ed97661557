// The Forge Kernel overlay SDK for AssemblyScript: host bindings (the graph's in graph.ts), JSON helpers and result
// helpers.
// Every host function needs its capability in the overlay's manifest (and granted by the service that loads it);
// only the functions an overlay actually calls are imported, so unused ones need no capability.
import { Value, parse, parseError } from "./json";

export { Value, Kind, parse, quote } from "./json";
export { Mutations, dbRead, dbWrite } from "./graph";

@external("forge", "log") declare function hostLog(level: i32, message: string): void;
@external("forge", "event_publish") declare function hostPublish(type: string, payload: string): i32;

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
