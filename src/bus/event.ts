import { AsyncLocalStorage } from 'node:async_hooks';
import { ForgeError } from '../errors.ts';

/**
 * The event a subscriber is handling, in its async context, shared by both transports: a publish from a handler is
 * one hop deeper than the event handled, with its correlation and as its cause.
 */
const handled = new AsyncLocalStorage<BusEvent>();

/** Runs a subscriber's handler for `event` (publishes inside it are the event's consequences). */
export function handling<T>(event: BusEvent, handler: () => T): T {
  return handled.run(event, handler);
}

/** The event whose handler the caller runs in, if any. */
export function handledEvent(): BusEvent | undefined {
  return handled.getStore();
}

/**
 * Runs `work` outside any event's handling: what it publishes, now or later in its async continuations, starts from
 * hop 0 (the kernel's own work, e.g. a pipeline run started or resumed from a subscriber, is not that subscriber's
 * consequence and must not inherit its hops).
 */
export function detached<T>(work: () => T): T {
  return handled.exit(work);
}

/** Priorities, compared as ranks (the Python kernel compared the strings, so `high` never reached defaults). */
export const PRIORITIES = ['low', 'normal', 'high', 'critical'] as const;
export type Priority = (typeof PRIORITIES)[number];

export function priorityRank(priority: Priority): number {
  return PRIORITIES.indexOf(priority);
}

/** An event on the bus. The payload is frozen: no subscriber can change what another receives. */
export interface BusEvent<P = unknown> {
  id: string;
  /** `domain.action`, lower case. */
  type: string;
  source: string;
  payload: P;
  timestamp: number;
  correlationId: string;
  /** The event whose handling published this one (null for a root event). */
  causationId: string | null;
  /** How many handlers deep this event was published (0 for a root event). */
  hops: number;
  priority: Priority;
  /** When set, only subscribers with one of these targets receive it. */
  targets?: readonly string[];
}

/** What a publisher gives; the bus fills in the rest. */
export interface PublishInput<P = unknown> {
  type: string;
  payload?: P;
  source?: string;
  priority?: Priority;
  correlationId?: string;
  targets?: readonly string[];
  /**
   * The event's id, for idempotent publishing: a transport that deduplicates (NATS JetStream's `Nats-Msg-Id`)
   * delivers an id published twice once. Generated when absent.
   */
  id?: string;
}

export class InvalidEventInputError extends ForgeError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('INVALID_EVENT', message, { details });
  }
}

const EVENT_TYPE = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;
const PATTERN = /^(\*|[a-z][a-z0-9_]*)(\.(\*|[a-z][a-z0-9_]*))+$/;

export function isEventType(value: unknown): value is string {
  return typeof value === 'string' && EVENT_TYPE.test(value);
}

export function isEventPattern(value: unknown): value is string {
  return typeof value === 'string' && (PATTERN.test(value) || value === '*');
}

/** Exact types, `domain.*` and `*.action` patterns (`*` alone matches everything). */
export function matches(pattern: string, type: string): boolean {
  if (pattern === type || pattern === '*') return true;
  const p = pattern.split('.');
  const t = type.split('.');
  return p.length === t.length && p.every((part, i) => part === '*' || part === t[i]);
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    // for…in over own keys: no array of values is made (this runs on every phase of every pipeline run).
    for (const key in value) if (Object.hasOwn(value, key)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}

/** A frozen, JSON-only copy of a payload (functions, cycles and symbols are refused). */
export function freezePayload(payload: unknown): unknown {
  if (payload === undefined) return null;
  let json: string | undefined;
  try {
    json = JSON.stringify(payload);
  } catch (error) {
    throw new InvalidEventInputError(`The payload is not JSON-serializable: ${(error as Error).message}.`);
  }
  if (json === undefined) throw new InvalidEventInputError('The payload must be a JSON value.');
  return deepFreeze(JSON.parse(json) as unknown);
}

const EVENT_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * Validates a publish and builds the frozen event: the payload copied and frozen, the hop count, correlation and
 * cause inherited from the event being handled (`parent`), refused past `maxHops`. Both transports use it.
 */
export function createEvent<P>(input: PublishInput<P>, options: { parent: BusEvent | undefined; maxHops: number; newId: () => string; validate?: (type: string, payload: unknown) => void }): BusEvent<P> {
  if (typeof input !== 'object' || input === null) throw new InvalidEventInputError('publish needs { type, payload?, … }.');
  if (!isEventType(input.type)) throw new InvalidEventInputError(`"${String(input.type)}" is not an event type (lower-case domain.action).`, { type: input.type });
  const priority = input.priority ?? 'normal';
  if (!PRIORITIES.includes(priority)) throw new InvalidEventInputError(`priority must be one of ${PRIORITIES.join(', ')}.`, { priority });
  if (input.targets !== undefined && (!Array.isArray(input.targets) || input.targets.some((t) => typeof t !== 'string'))) throw new InvalidEventInputError('targets must be an array of subscriber targets.');
  if (input.id !== undefined && (typeof input.id !== 'string' || !EVENT_ID.test(input.id))) throw new InvalidEventInputError('id must be 1–128 letters, digits or _ . : -', { id: input.id });
  const payload = freezePayload(input.payload) as P;
  options.validate?.(input.type, payload);
  const { parent } = options;
  const hops = parent === undefined ? 0 : parent.hops + 1;
  if (hops > options.maxHops) throw new HopLimitError(input.type, hops, options.maxHops);
  const id = input.id ?? options.newId();
  return Object.freeze({
    id,
    type: input.type,
    source: input.source ?? parent?.source ?? 'kernel',
    payload,
    timestamp: Date.now(),
    correlationId: input.correlationId ?? parent?.correlationId ?? id,
    causationId: parent?.id ?? null,
    hops,
    priority,
    ...(input.targets === undefined ? {} : { targets: Object.freeze([...(input.targets as readonly string[])]) }),
  });
}

export class HopLimitError extends ForgeError {
  constructor(type: string, hops: number, max: number) {
    super('HOP_LIMIT', `Event "${type}" would be ${hops} handlers deep; the limit is ${max}: a feedback loop between subscribers?`, { details: { type, hops, max } });
  }
}
