import { Ajv, type ValidateFunction } from 'ajv';
import { nanoid } from 'nanoid';
import { ForgeError, isForgeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Store } from '../store/store.ts';
import { createEvent, handledEvent, handling, HopLimitError, InvalidEventInputError, isEventPattern, isEventType, matches, PRIORITIES, priorityRank, type BusEvent, type Priority, type PublishInput } from './event.ts';

export { HopLimitError };
import { LatencyWindow } from './latency.ts';

/** The queue was full for longer than the publisher may wait. */
export class QueueFullError extends ForgeError {
  constructor(capacity: number, waitedMs: number) {
    const why = waitedMs === 0 ? `and as many publishers already wait for a slot, so this one was refused at once` : `and stayed full for ${waitedMs} ms`;
    super('QUEUE_FULL', `The event queue is full (${capacity} events awaiting delivery) ${why}: slow down, or add or fix the slow subscribers.`, { details: { capacity, waitedMs } });
  }
}

export class SubscriptionError extends ForgeError {
  constructor(code: 'INVALID_SUBSCRIPTION' | 'SUBSCRIBER_LIMIT', message: string) {
    super(code, message);
  }
}

export class BusStoppedError extends ForgeError {
  constructor() {
    super('BUS_STOPPED', 'The bus is stopping or stopped and takes no more events.');
  }
}

export class HandlerTimeoutError extends ForgeError {
  constructor(subscriber: string, timeoutMs: number) {
    super('HANDLER_TIMEOUT', `Subscriber "${subscriber}" did not finish within ${timeoutMs} ms.`, { details: { subscriber, timeoutMs } });
  }
}

export interface SubscribeSpec {
  /** A name for logs, metrics and dead letters (default: a generated id). */
  name?: string;
  types?: readonly string[];
  patterns?: readonly string[];
  minPriority?: Priority;
  filter?: (event: BusEvent) => boolean;
  /**
   * Whether the subscriber takes events now (an overlay that is not active does not). The in-process bus skips it
   * (no delivery, no retry, no dead letter); across processes the event is handed back to the group, so another
   * member that accepts takes it, and skipped once no member has after the attempt limit.
   */
  accepts?: () => boolean;
  /** The subscriber's address for targeted events. */
  target?: string;
  /** Per-delivery deadline (ms). */
  timeoutMs?: number;
  /** Attempts before a delivery is dead-lettered. */
  maxAttempts?: number;
}

export type Handler = (event: BusEvent) => unknown;

export interface BusOptions {
  /** Events awaiting delivery at most (each holds a slot until every delivery of it is settled). */
  capacity?: number;
  /** How long publish waits for a free slot before QUEUE_FULL (ms). */
  publishTimeoutMs?: number;
  maxSubscribers?: number;
  maxHops?: number;
  handlerTimeoutMs?: number;
  maxAttempts?: number;
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
  deadLetterCapacity?: number;
  store?: Store;
  logger?: Logger;
  random?: () => number;
}

export interface DeadLetter {
  id: string;
  event: BusEvent;
  subscriber: string;
  error: { code: string; message: string };
  attempts: number;
  at: number;
}

interface Delivery {
  event: BusEvent;
  attempt: number;
  enqueuedAt: number;
  slot: Slot;
}

interface Slot {
  pending: number;
}

interface Subscriber {
  id: string;
  name: string;
  spec: SubscribeSpec;
  handler: Handler;
  minRank: number;
  /** One FIFO per priority rank: critical first, FIFO within a priority. */
  mailbox: Delivery[][];
  busy: boolean;
  active: boolean;
  /** Deliveries in a row without a turn of the event loop. */
  streak: number;
}

/** Deliveries to one subscriber in a row before it lets the event loop turn (timers, I/O). */
const DELIVERIES_PER_TURN = 64;

/**
 * What the kernel and its users rely on of a bus. The in-process `EventBus` implements it; a NATS JetStream
 * transport implements the same interface for deployments of several kernel processes.
 */
export interface Bus {
  subscribe(spec: SubscribeSpec, handler: Handler): () => void;
  publish<P>(input: PublishInput<P>): Promise<BusEvent<P>>;
  /** True when some subscriber's types or patterns match `type` (filters, priorities and targets aside). */
  listens(type: string): boolean;
  registerSchema(type: string, schema: object): void;
  deadLetters(): DeadLetter[];
  retryDeadLetter(id: string): Promise<void>;
  metrics(): ReturnType<EventBus['metrics']>;
  stop(deadlineMs?: number): Promise<{ undelivered: { eventId: string; type: string; subscriber: string }[] }>;
}

/** Refuses a subscription without a handler, to nothing, to malformed types or patterns, or with an unknown priority. */
export function checkSubscription(spec: SubscribeSpec, handler: unknown): void {
  if (typeof handler !== 'function') throw new SubscriptionError('INVALID_SUBSCRIPTION', 'A subscription needs a handler function.');
  const types = spec.types ?? [];
  const patterns = spec.patterns ?? [];
  if (types.length === 0 && patterns.length === 0) throw new SubscriptionError('INVALID_SUBSCRIPTION', 'A subscription must name event types or patterns: subscribing to nothing would receive nothing.');
  for (const t of types) if (!isEventType(t)) throw new SubscriptionError('INVALID_SUBSCRIPTION', `"${String(t)}" is not an event type (domain.action).`);
  for (const p of patterns) if (!isEventPattern(p)) throw new SubscriptionError('INVALID_SUBSCRIPTION', `"${String(p)}" is not a pattern (domain.*, *.action or *).`);
  if (spec.minPriority !== undefined && !PRIORITIES.includes(spec.minPriority)) throw new SubscriptionError('INVALID_SUBSCRIPTION', `minPriority must be one of ${PRIORITIES.join(', ')}.`);
}


/**
 * The in-process event bus: a bounded queue with backpressure, per-subscriber mailboxes ordered by priority
 * (critical first, FIFO within one), at-least-once delivery where a slow or failing subscriber delays only itself,
 * retries with exponential backoff and jitter off the hot path, a bounded dead-letter queue (persisted through the
 * store) that can be listed and retried per subscriber, a hop limit against feedback loops, optional JSON Schemas,
 * metrics, and a draining stop.
 */
export class EventBus implements Bus {
  readonly #options: Required<Omit<BusOptions, 'store' | 'logger'>> & Pick<BusOptions, 'store' | 'logger'>;
  readonly #subscribers = new Map<string, Subscriber>();
  readonly #deadLetters = new Map<string, DeadLetter>();
  readonly #schemas = new Map<string, ValidateFunction>();
  readonly #ajv = new Ajv({ allErrors: false });
  readonly #waitingForSlot = new Set<() => void>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #latency = new LatencyWindow(1_024);
  #inFlight = 0;
  #stopping = false;
  readonly #counts = { published: 0, delivered: 0, failed: 0, retried: 0, deadLettered: 0, dropped: 0 };

  constructor(options: BusOptions = {}) {
    this.#options = {
      capacity: 10_000,
      publishTimeoutMs: 1_000,
      maxSubscribers: 10_000,
      maxHops: 10,
      handlerTimeoutMs: 5_000,
      maxAttempts: 3,
      retryDelayMs: 100,
      maxRetryDelayMs: 10_000,
      deadLetterCapacity: 1_000,
      random: Math.random,
      ...options,
    };
  }

  /** Adds a subscriber; returns the function that removes it. Refuses a subscription to nothing. */
  subscribe(spec: SubscribeSpec, handler: Handler): () => void {
    checkSubscription(spec, handler);
    if (this.#subscribers.size >= this.#options.maxSubscribers) {
      throw new SubscriptionError('SUBSCRIBER_LIMIT', `The bus has ${this.#options.maxSubscribers} subscribers, its limit: unsubscribe unused ones or raise maxSubscribers.`);
    }
    const id = `sub_${nanoid(10)}`;
    const subscriber: Subscriber = { id, name: spec.name ?? id, spec, handler, minRank: priorityRank(spec.minPriority ?? 'low'), mailbox: PRIORITIES.map(() => []), busy: false, active: true, streak: 0 };
    this.#subscribers.set(id, subscriber);
    return () => {
      if (!subscriber.active) return;
      subscriber.active = false;
      this.#subscribers.delete(id);
      for (const queue of subscriber.mailbox) for (const delivery of queue.splice(0)) this.#settle(delivery.slot, 'dropped');
    };
  }

  listens(type: string): boolean {
    for (const { spec } of this.#subscribers.values()) if ((spec.types ?? []).includes(type) || (spec.patterns ?? []).some((p) => matches(p, type))) return true;
    return false;
  }

  /** Validates every later event of `type` against a JSON Schema at publish. */
  registerSchema(type: string, schema: object): void {
    if (!isEventType(type)) throw new InvalidEventInputError(`${JSON.stringify(type)} is not an event type (domain.action).`);
    this.#schemas.set(type, this.#ajv.compile(schema));
  }

  /**
   * Publishes an event. Inside a handler the new event inherits the handled event's correlation id, has it as its
   * cause, and is one hop deeper; past the hop limit it is refused. Waits for room when the queue is full, up to
   * the publish timeout.
   */
  async publish<P>(input: PublishInput<P>): Promise<BusEvent<P>> {
    if (this.#stopping) throw new BusStoppedError();
    const event = createEvent(input, {
      parent: handledEvent(),
      maxHops: this.#options.maxHops,
      newId: () => `evt_${nanoid(12)}`,
      validate: (type, payload) => {
        const validate = this.#schemas.get(type);
        if (validate !== undefined && !validate(payload)) throw new InvalidEventInputError(`The payload of "${type}" does not match its schema: ${this.#ajv.errorsText(validate.errors)}.`, { type });
      },
    });
    const priority = event.priority;
    await this.#acquireSlot();
    this.#counts.published++;
    const slot: Slot = { pending: 0 };
    for (const subscriber of this.#subscribers.values()) {
      let wanted: boolean;
      try {
        wanted = this.#wants(subscriber, event);
      } catch (error) {
        // A filter that throws loses only its own delivery, and not silently: it is dead-lettered.
        this.#deadLetter(event, subscriber, error, 0);
        continue;
      }
      if (!wanted) continue;
      slot.pending++;
      subscriber.mailbox[priorityRank(priority)]!.push({ event, attempt: 1, enqueuedAt: performance.now(), slot });
    }
    if (slot.pending === 0) this.#releaseSlot();
    else for (const subscriber of this.#subscribers.values()) this.#pump(subscriber);
    return event;
  }

  #wants(subscriber: Subscriber, event: BusEvent): boolean {
    const { spec } = subscriber;
    if (priorityRank(event.priority) < subscriber.minRank) return false;
    if (event.targets !== undefined && (spec.target === undefined || !event.targets.includes(spec.target))) return false;
    const typed = (spec.types ?? []).includes(event.type) || (spec.patterns ?? []).some((p) => matches(p, event.type));
    return typed && (spec.filter === undefined || spec.filter(event)) && (spec.accepts === undefined || spec.accepts());
  }

  /**
   * A slot in the queue: at once when there is room, else after waiting (FIFO) up to the publish timeout. Waiting
   * publishers are a Set (a timed-out one leaves in O(1)), and at most as many as the queue holds: past that, a
   * publish is refused at once, so refusing stays cheap however many publishers pile up.
   */
  #acquireSlot(): Promise<void> {
    if (this.#inFlight < this.#options.capacity) {
      this.#inFlight++;
      return Promise.resolve();
    }
    if (this.#waitingForSlot.size >= this.#options.capacity) return Promise.reject(new QueueFullError(this.#options.capacity, 0));
    const waitedMs = this.#options.publishTimeoutMs;
    return new Promise<void>((resolve, reject) => {
      const grant = (): void => {
        clearTimeout(timer);
        this.#inFlight++;
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waitingForSlot.delete(grant);
        reject(new QueueFullError(this.#options.capacity, waitedMs));
      }, waitedMs);
      this.#waitingForSlot.add(grant);
    });
  }

  #releaseSlot(): void {
    this.#inFlight--;
    const next = this.#waitingForSlot.values().next();
    if (next.done === true) return;
    this.#waitingForSlot.delete(next.value);
    next.value();
  }

  #settle(slot: Slot, outcome: 'delivered' | 'dead' | 'dropped'): void {
    if (outcome === 'dropped') this.#counts.dropped++;
    slot.pending--;
    if (slot.pending === 0) this.#releaseSlot();
  }

  /** Delivers the subscriber's next delivery, highest priority first, one at a time per subscriber. */
  #pump(subscriber: Subscriber): void {
    if (subscriber.busy || !subscriber.active) return;
    let delivery: Delivery | undefined;
    for (let rank = subscriber.mailbox.length - 1; rank >= 0 && delivery === undefined; rank--) delivery = subscriber.mailbox[rank]!.shift();
    if (delivery === undefined) return;
    subscriber.busy = true;
    const timeoutMs = subscriber.spec.timeoutMs ?? this.#options.handlerTimeoutMs;
    const chosen = delivery;
    let timer: NodeJS.Timeout | undefined;
    const run = Promise.race([
      handling(chosen.event, () => Promise.resolve().then(() => subscriber.handler(chosen.event))),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new HandlerTimeoutError(subscriber.name, timeoutMs)), timeoutMs))),
    ]);
    run.then(
      () => {
        clearTimeout(timer);
        this.#counts.delivered++;
        this.#latency.add(performance.now() - chosen.enqueuedAt);
        this.#settle(chosen.slot, 'delivered');
        this.#next(subscriber);
      },
      (error: unknown) => {
        clearTimeout(timer);
        this.#counts.failed++;
        const maxAttempts = subscriber.spec.maxAttempts ?? this.#options.maxAttempts;
        if (chosen.attempt < maxAttempts && subscriber.active && !this.#stopping) {
          this.#counts.retried++;
          this.#retryLater(subscriber, { ...chosen, attempt: chosen.attempt + 1 });
        } else {
          this.#deadLetter(chosen.event, subscriber, error, chosen.attempt);
          this.#settle(chosen.slot, 'dead');
        }
        this.#next(subscriber);
      },
    );
  }

  /**
   * Goes on to the subscriber's next delivery: at once, except every {@link DELIVERIES_PER_TURN}th in a row, which
   * waits for the next turn of the event loop, so a backlog of handlers that never wait on I/O cannot keep timers
   * (handler timeouts, retries, the kernel's deadlines) from firing.
   */
  #next(subscriber: Subscriber): void {
    subscriber.busy = false;
    if (++subscriber.streak < DELIVERIES_PER_TURN) {
      this.#pump(subscriber);
      return;
    }
    subscriber.streak = 0;
    subscriber.busy = true;
    setImmediate(() => {
      subscriber.busy = false;
      this.#pump(subscriber);
    });
  }

  /** Re-queues a failed delivery after a backoff (a timer: the hot path never waits for it). */
  #retryLater(subscriber: Subscriber, delivery: Delivery): void {
    const base = Math.min(this.#options.maxRetryDelayMs, this.#options.retryDelayMs * 2 ** (delivery.attempt - 2));
    const delay = Math.round(base * (0.5 + this.#options.random() / 2));
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!subscriber.active) {
        this.#settle(delivery.slot, 'dropped');
        return;
      }
      subscriber.mailbox[priorityRank(delivery.event.priority)]!.push(delivery);
      this.#pump(subscriber);
    }, delay);
    this.#timers.add(timer);
  }

  #deadLetter(event: BusEvent, subscriber: Subscriber, error: unknown, attempts: number): void {
    this.#counts.deadLettered++;
    const letter: DeadLetter = {
      id: `dl_${nanoid(12)}`,
      event,
      subscriber: subscriber.id,
      error: { code: isForgeError(error) ? error.code : attempts === 0 ? 'FILTER_FAILED' : 'HANDLER_FAILED', message: error instanceof Error ? error.message : String(error) },
      attempts,
      at: Date.now(),
    };
    this.#deadLetters.set(letter.id, letter);
    if (this.#deadLetters.size > this.#options.deadLetterCapacity) {
      const oldest = this.#deadLetters.keys().next().value;
      if (oldest !== undefined) this.#deadLetters.delete(oldest);
      this.#options.logger?.warn({ capacity: this.#options.deadLetterCapacity }, 'dead-letter queue full: the oldest letter was evicted (it stays in the store)');
    }
    this.#options.store?.saveDeadLetter(letter).catch((err: unknown) => this.#options.logger?.error({ err, deadLetter: letter.id }, 'could not persist a dead letter'));
    this.#options.logger?.warn({ event: event.type, eventId: event.id, subscriber: subscriber.name, correlationId: event.correlationId, code: letter.error.code }, 'event dead-lettered');
  }

  /** The dead letters, oldest first; listing removes nothing. */
  deadLetters(): DeadLetter[] {
    return [...this.#deadLetters.values()];
  }

  /** Delivers a dead letter again, to the subscriber that failed it only; resolves once it is queued. */
  async retryDeadLetter(id: string): Promise<void> {
    const letter = this.#deadLetters.get(id);
    if (letter === undefined) throw new ForgeError('NOT_FOUND', `No dead letter "${id}".`);
    const subscriber = this.#subscribers.get(letter.subscriber);
    if (subscriber === undefined) throw new ForgeError('NOT_FOUND', `The subscriber of dead letter "${id}" is gone.`);
    if (this.#stopping) throw new BusStoppedError();
    await this.#acquireSlot();
    this.#deadLetters.delete(id);
    await this.#options.store?.removeDeadLetter(id);
    const slot: Slot = { pending: 1 };
    subscriber.mailbox[priorityRank(letter.event.priority)]!.push({ event: letter.event, attempt: 1, enqueuedAt: performance.now(), slot });
    this.#pump(subscriber);
  }

  metrics(): { published: number; delivered: number; failed: number; retried: number; deadLettered: number; dropped: number; queueDepth: number; subscribers: number; latencyMs: { p50: number; p95: number; p99: number } } {
    return { ...this.#counts, queueDepth: this.#inFlight, subscribers: this.#subscribers.size, latencyMs: this.#latency.percentiles() };
  }

  /**
   * Stops intake, then waits until every accepted event is settled or the deadline passes; reports what it could
   * not deliver (those deliveries stay undelivered; nothing is pretended).
   */
  async stop(deadlineMs = 5_000): Promise<{ undelivered: { eventId: string; type: string; subscriber: string }[] }> {
    this.#stopping = true;
    const until = Date.now() + deadlineMs;
    while (this.#inFlight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const undelivered: { eventId: string; type: string; subscriber: string }[] = [];
    for (const subscriber of this.#subscribers.values()) {
      for (const queue of subscriber.mailbox) for (const d of queue) undelivered.push({ eventId: d.event.id, type: d.event.type, subscriber: subscriber.name });
    }
    return { undelivered };
  }
}
