import { jsonNestsDeeperThan, MAX_JSON_NESTING } from '../json-nesting.ts';
import type { OverlayManifest } from '../manifest.ts';
import type { Capability } from './abi.ts';
import { InvalidEventError, ReservedEventTypeError } from './errors.ts';

/** How a host-function parameter or result crosses the boundary: a wasm i32, or an AssemblyScript string. */
export type HostValueType = 'i32' | 'string';

/** The shape of a host function as the overlay imports it (`forge.<name>`); serializable to a strict worker. */
export interface HostFunctionSignature {
  name: string;
  /** The capability an overlay must be granted to import it. */
  capability: Capability;
  /** Async functions suspend the overlay (JSPI in relaxed mode, a blocking worker hop in strict mode). */
  async: boolean;
  params: readonly HostValueType[];
  result: HostValueType | 'void';
}

/** Whose call it is: the caller's trust and correlation, and the pipeline run and capsule it serves (null outside a run). */
export interface CallCaller {
  trust: number;
  correlationId: string | null;
  runId: string | null;
  capsuleId: string | null;
}

/** What a host function knows about the call it serves. */
export interface HostCallContext {
  overlayId: string;
  overlayName: string;
  exportName: string;
  caller: CallCaller;
  /** The capabilities in force for the overlay (declared in its manifest and granted by the service). */
  capabilities: readonly Capability[];
  /** The calling overlay's limits for graph queries, and what it may write (from its manifest). */
  database: OverlayManifest['database'];
  graph: OverlayManifest['graph'];
  signal: AbortSignal;
  /** The call's host calls are recorded on it (a journaled run), or played back from it (a replay). */
  tape?: HostTape;
}

/** One host call of an overlay call as a journal keeps it: what was asked, and what the host answered. */
export interface HostCallRecord {
  fn: string;
  args: (string | number)[];
  result?: unknown;
  error?: { code: string; message: string };
}

/**
 * A call's host calls: `record` hears each kernel host call as it completes; `replay` answers each in place of the
 * host function (which then does not run), throwing when the overlay asks for something other than what it asked.
 */
export interface HostTape {
  record?: (call: HostCallRecord) => void;
  replay?: (fn: string, args: readonly (string | number)[]) => unknown;
}

/** Calls a kernel host function for an overlay, through the call's tape when it has one (see HostTape). */
export function invokeHost(fn: HostFunction, context: HostCallContext, args: readonly (string | number)[]): unknown {
  const tape = context.tape;
  if (tape === undefined) return fn.invoke(context, args);
  if (tape.replay !== undefined) return tape.replay(fn.name, args);
  const record = tape.record;
  if (record === undefined) return fn.invoke(context, args);
  const failed = (error: unknown): never => {
    const { code, message } = error as { code?: unknown; message?: unknown };
    record({ fn: fn.name, args: [...args], error: { code: typeof code === 'string' ? code : 'UNEXPECTED', message: String(message) } });
    throw error;
  };
  let result: unknown;
  try {
    result = fn.invoke(context, args);
  } catch (error) {
    return failed(error);
  }
  if (!(result instanceof Promise)) {
    record({ fn: fn.name, args: [...args], result: result ?? null });
    return result;
  }
  return result.then((value: unknown) => {
    record({ fn: fn.name, args: [...args], result: value ?? null });
    return value;
  }, failed);
}

/**
 * A host function implemented by the embedding kernel (e.g. `db_read`, arriving with the graph store). It runs on
 * the kernel's thread in both engines; its arguments arrive lifted (strings as JS strings).
 */
export interface HostFunction extends HostFunctionSignature {
  invoke(context: HostCallContext, args: readonly (string | number)[]): unknown;
}

/** The host functions every engine implements itself, buffered per call (see {@link CallEffects}). */
export const BUILTIN_HOST_FUNCTIONS: readonly HostFunctionSignature[] = Object.freeze([
  { name: 'log', capability: 'LOGGING', async: false, params: ['i32', 'string'], result: 'void' },
  { name: 'event_publish', capability: 'EVENT_PUBLISH', async: false, params: ['string', 'string'], result: 'i32' },
]);

/** The graph host functions' shapes; the kernel implements them when it has a graph (`src/store/graph-host.ts`). */
export const GRAPH_HOST_FUNCTIONS: readonly HostFunctionSignature[] = Object.freeze([
  { name: 'db_read', capability: 'DATABASE_READ', async: true, params: ['string', 'string'], result: 'string' },
  { name: 'db_write', capability: 'DATABASE_WRITE', async: true, params: ['string'], result: 'string' },
]);

/** Every host function a kernel can offer, with the capability each needs (what `forge-kernel build` checks). */
export const KERNEL_HOST_FUNCTIONS: readonly HostFunctionSignature[] = Object.freeze([...BUILTIN_HOST_FUNCTIONS, ...GRAPH_HOST_FUNCTIONS]);

/** Log levels an overlay passes to `log` (index = the i32 it passes). */
export const OVERLAY_LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type OverlayLogLevel = (typeof OVERLAY_LOG_LEVELS)[number];

/**
 * Bounds on what one call may emit (events and log lines) and hand to the host, so an overlay cannot flood the kernel
 * or make it read more than these: strings are measured by their header before a byte of them is read.
 */
export const EFFECT_LIMITS = Object.freeze({
  eventsPerCall: 100,
  /** Largest event payload (JSON text, UTF-16 code units). */
  payloadChars: 64 * 1024,
  /** All event payloads of one call together (code units). */
  payloadCharsPerCall: 1024 * 1024,
  /** Longest event type (code units). */
  eventTypeChars: 256,
  logLinesPerCall: 1_000,
  /** A longer log line is cut here (only this much of it is read). */
  logLineChars: 8 * 1024,
  /** All log lines of one call together (code units); lines past it are dropped and counted. */
  logCharsPerCall: 256 * 1024,
  /** A string argument of a kernel host function (e.g. db_read's query and parameters), code units. */
  hostArgumentChars: 1024 * 1024,
  /** An abort message or file name, and a trace message, are cut here. */
  diagnosticChars: 1024,
});

/** An event an overlay published during a call; the kernel stamps source, ids and correlation when it publishes. */
export interface OverlayEvent {
  type: string;
  payload: unknown;
}

export interface OverlayLogLine {
  level: OverlayLogLevel;
  message: string;
}

const EVENT_TYPE = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;
/** The kernel's own event namespaces: an overlay cannot speak for the kernel (e.g. publish `pipeline.completed`). */
export const RESERVED_EVENT_DOMAINS: readonly string[] = Object.freeze(['pipeline', 'cascade', 'overlay', 'kernel', 'system']);

/**
 * The log lines and events of one call, held until the call ends: a call that fails publishes nothing (its logs
 * are still reported, they explain the failure). Plain data, so a strict worker can return it in its reply.
 */
export class CallEffects {
  readonly events: OverlayEvent[] = [];
  readonly logs: OverlayLogLine[] = [];
  droppedLogLines = 0;
  #logChars = 0;
  #payloadChars = 0;

  /** Whether one more log line fits (the caller then need not read it). */
  acceptsLog(): boolean {
    if (this.logs.length < EFFECT_LIMITS.logLinesPerCall && this.#logChars < EFFECT_LIMITS.logCharsPerCall) return true;
    this.droppedLogLines++;
    return false;
  }

  /** Adds a log line; `truncated` when the caller read only its first {@link EFFECT_LIMITS.logLineChars} code units. */
  log(level: number, message: string, truncated = false): void {
    if (!this.acceptsLog()) return;
    const name = OVERLAY_LOG_LEVELS[level] ?? 'info';
    const cut = truncated || message.length > EFFECT_LIMITS.logLineChars;
    const text = cut ? `${message.slice(0, EFFECT_LIMITS.logLineChars)}…` : message;
    this.#logChars += text.length;
    this.logs.push({ level: name, message: text });
  }

  /** Refuses an event by its sizes alone (before its payload is read): too large, or one too many for the call. */
  checkPublish(type: string, payloadChars: number): void {
    if (payloadChars > EFFECT_LIMITS.payloadChars) {
      throw new InvalidEventError(`The payload of "${type}" is ${payloadChars} characters; the limit is ${EFFECT_LIMITS.payloadChars}.`, { type });
    }
    if (this.events.length >= EFFECT_LIMITS.eventsPerCall) {
      throw new InvalidEventError(`One call may publish at most ${EFFECT_LIMITS.eventsPerCall} events.`, { type });
    }
    if (this.#payloadChars + payloadChars > EFFECT_LIMITS.payloadCharsPerCall) {
      throw new InvalidEventError(`The events of one call may hold at most ${EFFECT_LIMITS.payloadCharsPerCall} payload characters together.`, { type });
    }
  }

  /** Validates and buffers an event; throws {@link InvalidEventError} (failing the call) when it is malformed. */
  publish(type: string, payloadJson: string): number {
    if (!EVENT_TYPE.test(type)) {
      throw new InvalidEventError(`Event type ${JSON.stringify(type.slice(0, 80))} is not "domain.action" (lower-case words joined by dots).`, { type: type.slice(0, 80) });
    }
    if (RESERVED_EVENT_DOMAINS.includes(type.slice(0, type.indexOf('.')))) throw new ReservedEventTypeError(type);
    this.checkPublish(type, payloadJson.length);
    this.#payloadChars += payloadJson.length;
    if (jsonNestsDeeperThan(payloadJson)) {
      throw new InvalidEventError(`The payload of "${type}" nests arrays and objects deeper than ${MAX_JSON_NESTING} levels, which the kernel does not take: flatten it.`, { type, maxNesting: MAX_JSON_NESTING });
    }
    let payload: unknown;
    try {
      payload = JSON.parse(payloadJson);
    } catch {
      throw new InvalidEventError(`The payload of "${type}" is not JSON.`, { type });
    }
    this.events.push({ type, payload });
    return 0;
  }
}
