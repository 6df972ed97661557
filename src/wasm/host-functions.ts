import type { Capability } from './abi.ts';
import { InvalidEventError } from './errors.ts';

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

/** What a host function knows about the call it serves. */
export interface HostCallContext {
  overlayId: string;
  overlayName: string;
  exportName: string;
  /** The calling overlay's limits for graph queries (from its manifest). */
  database: { timeoutMs: number; rowCap: number };
  signal: AbortSignal;
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
  { name: 'db_write', capability: 'DATABASE_WRITE', async: true, params: ['string', 'string'], result: 'string' },
]);

/** Every host function a kernel can offer, with the capability each needs (what `forge-kernel build` checks). */
export const KERNEL_HOST_FUNCTIONS: readonly HostFunctionSignature[] = Object.freeze([...BUILTIN_HOST_FUNCTIONS, ...GRAPH_HOST_FUNCTIONS]);

/** Log levels an overlay passes to `log` (index = the i32 it passes). */
export const OVERLAY_LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type OverlayLogLevel = (typeof OVERLAY_LOG_LEVELS)[number];

/** Bounds on what one call may emit (events and log lines), so an overlay cannot flood the kernel. */
export const EFFECT_LIMITS = Object.freeze({
  eventsPerCall: 100,
  /** Largest event payload (JSON text, UTF-16 code units). */
  payloadChars: 64 * 1024,
  logLinesPerCall: 1_000,
  logLineChars: 8 * 1024,
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

/**
 * The log lines and events of one call, held until the call ends: a call that fails publishes nothing (its logs
 * are still reported, they explain the failure). Plain data, so a strict worker can return it in its reply.
 */
export class CallEffects {
  readonly events: OverlayEvent[] = [];
  readonly logs: OverlayLogLine[] = [];
  droppedLogLines = 0;

  log(level: number, message: string): void {
    if (this.logs.length >= EFFECT_LIMITS.logLinesPerCall) {
      this.droppedLogLines++;
      return;
    }
    const name = OVERLAY_LOG_LEVELS[level] ?? 'info';
    this.logs.push({ level: name, message: message.length > EFFECT_LIMITS.logLineChars ? `${message.slice(0, EFFECT_LIMITS.logLineChars)}…` : message });
  }

  /** Validates and buffers an event; throws {@link InvalidEventError} (failing the call) when it is malformed. */
  publish(type: string, payloadJson: string): number {
    if (!EVENT_TYPE.test(type)) {
      throw new InvalidEventError(`Event type ${JSON.stringify(type.slice(0, 80))} is not "domain.action" (lower-case words joined by dots).`, { type: type.slice(0, 80) });
    }
    if (payloadJson.length > EFFECT_LIMITS.payloadChars) {
      throw new InvalidEventError(`The payload of "${type}" is ${payloadJson.length} characters; the limit is ${EFFECT_LIMITS.payloadChars}.`, { type });
    }
    if (this.events.length >= EFFECT_LIMITS.eventsPerCall) {
      throw new InvalidEventError(`One call may publish at most ${EFFECT_LIMITS.eventsPerCall} events.`, { type });
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
