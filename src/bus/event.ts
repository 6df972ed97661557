import { ForgeError } from '../errors.ts';

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
    for (const child of Object.values(value as Record<string, unknown>)) deepFreeze(child);
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
