import { hostname } from 'node:os';
import { AckPolicy, DeliverPolicy, jetstream, JetStreamApiError, jetstreamManager, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, headers as natsHeaders, nanos, type NatsConnection } from '@nats-io/transport-node';
import { nanoid } from 'nanoid';
import { ForgeError, isForgeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Store } from '../store/store.ts';
import { BusStoppedError, checkSubscription, HandlerTimeoutError, type Bus, type DeadLetter, type Handler, type SubscribeSpec } from './bus.ts';
import { createEvent, deepFreeze, handledEvent, handling, matches, PRIORITIES, priorityRank, type BusEvent, type PublishInput } from './event.ts';
import { LatencyWindow } from './latency.ts';

/** Header naming the one subscriber group a re-published dead letter is for. */
const RETRY_FOR = 'Forge-Retry-For';
/** Messages each priority consumer of a subscription buffers ahead of its handler. */
const PREFETCH = 64;

export interface NatsBusOptions {
  /** NATS server URLs, e.g. `nats://127.0.0.1:14222` (several for a cluster). */
  servers: string | string[];
  /** The JetStream stream holding the events (created when missing). */
  stream?: string;
  /** Subjects are `<prefix>.<priority rank>.<event type>`. */
  subjectPrefix?: string;
  /** Stream replicas: 3 on a 3-node cluster keeps acknowledged events through the loss of a node. */
  replicas?: number;
  /** How long a published id is remembered for deduplication (ms). */
  duplicateWindowMs?: number;
  /** Deliveries a subscriber group may have unacknowledged at once: the backpressure on publishers' events. */
  maxAckPending?: number;
  maxHops?: number;
  handlerTimeoutMs?: number;
  /** Deliveries before an event goes to the dead-letter queue (also the consumers' max_deliver). */
  maxAttempts?: number;
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** This process in the cluster (default `<host>-<pid>-<random>`): names broadcast consumers. */
  processId?: string;
  store?: Store;
  logger?: Logger;
}

type ResolvedOptions = Required<Omit<NatsBusOptions, 'store' | 'logger' | 'servers'>> & Pick<NatsBusOptions, 'store' | 'logger'>;

interface Subscription {
  id: string;
  group: string;
  spec: SubscribeSpec & { broadcast?: boolean };
  handler: Handler;
  feeds: ConsumerMessages[];
  consumers: string[];
  mailbox: JsMsg[][];
  busy: boolean;
  active: boolean;
}


/**
 * Finds or creates the event stream. A stream of that name must carry this bus's subjects, and no other stream may
 * already hold them (JetStream refuses overlapping subjects, error 10065): both are NATS_STREAM_CONFLICT naming the
 * streams and the way out, instead of the server's bare message or publishes that no stream takes.
 */
async function ensureStream(jsm: JetStreamManager, options: ResolvedOptions): Promise<void> {
  const subject = `${options.subjectPrefix}.>`;
  const conflict = (what: string, cause?: unknown): ForgeError =>
    new ForgeError('NATS_STREAM_CONFLICT', `bus: ${what}. Give this kernel's bus its own { stream, subjectPrefix } pair, or the pair the existing stream uses.`, { cause });
  let existing: string[] | undefined;
  try {
    existing = (await jsm.streams.info(options.stream)).config.subjects ?? [];
  } catch (error) {
    if (!(error instanceof JetStreamApiError) || error.code !== STREAM_NOT_FOUND) throw error;
  }
  if (existing !== undefined) {
    if (!existing.some((held) => subjectCovers(held, subject))) throw conflict(`stream "${options.stream}" exists for subjects ${JSON.stringify(existing)}, not "${subject}"`);
    return;
  }
  try {
    await jsm.streams.add({ name: options.stream, subjects: [subject], num_replicas: options.replicas, duplicate_window: nanos(options.duplicateWindowMs) });
  } catch (error) {
    if (!(error instanceof JetStreamApiError) || error.code !== SUBJECTS_OVERLAP) throw error;
    const holders: string[] = [];
    for await (const name of jsm.streams.names(subject)) holders.push(name);
    throw conflict(`subjects "${subject}" are already held by stream ${holders.map((h) => `"${h}"`).join(', ') || '(another stream)'}, so stream "${options.stream}" cannot be created`, error);
  }
}

/** Whether NATS subject filter `held` (tokens, `*`, a final `>`) takes every subject that `wanted` takes. */
function subjectCovers(held: string, wanted: string): boolean {
  const h = held.split('.');
  const w = wanted.split('.');
  for (let i = 0; i < h.length; i++) {
    if (h[i] === '>') return i < w.length;
    if (i >= w.length || (h[i] !== '*' && h[i] !== w[i]) || (h[i] === '*' && w[i] === '>')) return false;
  }
  return h.length === w.length;
}

/** JetStream API error codes (nats-server's errors.json): stream not found; subjects overlap with another stream. */
const STREAM_NOT_FOUND = 10059;
const SUBJECTS_OVERLAP = 10065;

/** A durable consumer name from a group name (letters, digits, `_` and `-` only). */
function consumerName(...parts: string[]): string {
  return parts.map((p) => p.replace(/[^A-Za-z0-9_-]/g, '_')).join('__');
}

/**
 * The bus over NATS JetStream, for kernels running as several processes or hosts. Events go to subjects
 * `<prefix>.<rank>.<type>` in one stream; publishing sets `Nats-Msg-Id` to the event id, so an id published twice
 * within the duplicate window is stored once. A subscription is a group: processes subscribing under the same name
 * share durable pull consumers, so each event reaches one of them (load-balanced); `broadcast: true` gives every
 * process its own consumers, so each gets every event. Priorities: one consumer per priority rank the subscription
 * accepts, and the subscription's handler always takes the highest-ranked message it holds next. Delivery is at
 * least once with explicit acks; a failed delivery is negatively acknowledged with the bus's backoff and
 * redelivered; its last attempt goes to the kernel's dead-letter queue. `maxAckPending` bounds what a group holds
 * unacknowledged, which is the backpressure. nats-server 2.9 allows one filter subject per consumer: a subscription
 * to several types or patterns filters per rank on the server and by type in the process.
 */
export class NatsBus implements Bus {
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #options: ResolvedOptions;
  readonly #subscriptions = new Map<string, Subscription>();
  readonly #deadLetters = new Map<string, DeadLetter & { group: string }>();
  readonly #latency = new LatencyWindow(1_024);
  readonly #counts = { published: 0, delivered: 0, failed: 0, retried: 0, deadLettered: 0, dropped: 0 };
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #opening = new Set<Promise<void>>();
  #stopping = false;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, options: ResolvedOptions) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#js = jetstream(nc);
    this.#options = options;
  }

  /** Connects, and creates the event stream when it is missing. */
  static async connect(options: NatsBusOptions): Promise<NatsBus> {
    if (typeof options !== 'object' || options === null || (typeof options.servers !== 'string' && !Array.isArray(options.servers))) {
      throw new ForgeError('INVALID_CONFIG', "bus: { transport: 'nats', servers: 'nats://host:port' } needs servers (npm run services:start prints NATS_URL).");
    }
    const resolved = {
      stream: 'FORGE_EVENTS',
      subjectPrefix: 'forge.ev',
      replicas: 1,
      duplicateWindowMs: 120_000,
      maxAckPending: 256,
      maxHops: 10,
      handlerTimeoutMs: 5_000,
      maxAttempts: 3,
      retryDelayMs: 100,
      maxRetryDelayMs: 10_000,
      processId: `${hostname()}-${process.pid}-${nanoid(6)}`,
      ...Object.fromEntries(Object.entries(options).filter(([k, v]) => v !== undefined && k !== 'servers')),
    } as ResolvedOptions;
    let nc: NatsConnection;
    try {
      // No async stack traces: each request would build (and throw away) an Error with a stack, a fifth of a busy
      // cluster process's time.
      nc = await connect({ servers: options.servers, name: `forge-kernel ${resolved.processId}`, timeout: 5_000, noAsyncTraces: true });
    } catch (error) {
      throw new ForgeError('NATS_UNAVAILABLE', `Cannot connect to NATS at ${String(options.servers)}: ${(error as Error).message}. Is it running (npm run services:start)?`, { cause: error });
    }
    try {
      const jsm = await jetstreamManager(nc);
      await ensureStream(jsm, resolved);
      return new NatsBus(nc, jsm, resolved);
    } catch (error) {
      await nc.close().catch(() => undefined);
      throw error;
    }
  }

  /** The cluster this bus belongs to: the kernels sharing its event stream. Names the cluster's key-value buckets. */
  get clusterName(): string {
    return this.#options.stream;
  }

  /** This process's id in the cluster. */
  get processId(): string {
    return this.#options.processId;
  }

  /** The connection, for other cluster services (membership, key-value buckets). */
  get connection(): NatsConnection {
    return this.#nc;
  }

  subscribe(spec: SubscribeSpec & { broadcast?: boolean }, handler: Handler): () => void {
    checkSubscription(spec, handler);
    if (this.#stopping) throw new BusStoppedError();
    const id = `sub_${nanoid(10)}`;
    const group = spec.name ?? id;
    const subscription: Subscription = { id, group, spec, handler, feeds: [], consumers: [], mailbox: PRIORITIES.map(() => []), busy: false, active: true };
    this.#subscriptions.set(id, subscription);
    const ready = this.#openWithRetry(subscription);
    this.#opening.add(ready);
    void ready.finally(() => this.#opening.delete(ready));
    return () => {
      if (!subscription.active) return;
      subscription.active = false;
      this.#subscriptions.delete(id);
      for (const feed of subscription.feeds) void feed.close();
      // Messages held but not handled go back to the group at once (another process takes them).
      for (const queue of subscription.mailbox) for (const m of queue.splice(0)) m.nak();
    };
  }

  /** Resolves once every subscription made so far consumes (its consumers exist: later events reach it). */
  async ready(): Promise<void> {
    while (this.#opening.size > 0) await Promise.allSettled([...this.#opening]);
  }

  /** Opens the subscription, retrying while JetStream is unavailable (a cluster electing a leader, a restart). */
  async #openWithRetry(subscription: Subscription): Promise<void> {
    for (let attempt = 1; subscription.active && !this.#stopping; attempt++) {
      try {
        await this.#open(subscription);
        return;
      } catch (err) {
        this.#options.logger?.warn({ err, group: subscription.group, attempt }, 'a NATS subscription could not start yet: retrying');
        await new Promise((r) => setTimeout(r, Math.min(5_000, 200 * attempt)));
      }
    }
  }

  /** Creates (or joins) the subscription's consumers, one per accepted priority rank, and starts consuming. */
  async #open(subscription: Subscription): Promise<void> {
    const { spec } = subscription;
    const only = [...(spec.types ?? []), ...(spec.patterns ?? [])];
    const filterTail = only.length === 1 ? (only[0] === '*' ? '>' : only[0]!) : '>';
    const minRank = priorityRank(spec.minPriority ?? 'low');
    for (let rank = minRank; rank < PRIORITIES.length; rank++) {
      if (subscription.consumers.includes(consumerName(subscription.group, ...(spec.broadcast === true ? [this.#options.processId] : []), `p${rank}`))) continue;
      const name = consumerName(subscription.group, ...(spec.broadcast === true ? [this.#options.processId] : []), `p${rank}`);
      const config = {
        durable_name: name,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.New,
        filter_subject: `${this.#options.subjectPrefix}.${rank}.${filterTail}`,
        max_deliver: spec.maxAttempts ?? this.#options.maxAttempts,
        max_ack_pending: this.#options.maxAckPending,
        ack_wait: nanos((spec.timeoutMs ?? this.#options.handlerTimeoutMs) + 5_000),
        ...(spec.broadcast === true ? { inactive_threshold: nanos(60_000) } : {}),
      };
      try {
        await this.#jsm.consumers.info(this.#options.stream, name);
      } catch {
        await this.#jsm.consumers.add(this.#options.stream, config);
      }
      if (!subscription.active) return;
      const consumer = await this.#js.consumers.get(this.#options.stream, name);
      const feed = await consumer.consume({ max_messages: PREFETCH });
      subscription.feeds.push(feed);
      subscription.consumers.push(name);
      void (async () => {
        for await (const m of feed) {
          if (!subscription.active) {
            m.nak();
            continue;
          }
          subscription.mailbox[rank]!.push(m);
          this.#pump(subscription);
        }
      })();
    }
  }

  async publish<P>(input: PublishInput<P>): Promise<BusEvent<P>> {
    if (this.#stopping) throw new BusStoppedError();
    const event = createEvent(input, { parent: handledEvent(), maxHops: this.#options.maxHops, newId: () => `evt_${nanoid(12)}` });
    await this.#js.publish(this.#subject(event), JSON.stringify(event), { msgID: event.id });
    this.#counts.published++;
    return event;
  }

  #subject(event: BusEvent): string {
    return `${this.#options.subjectPrefix}.${priorityRank(event.priority)}.${event.type}`;
  }

  /** Any process may subscribe to anything: a NATS bus always has potential listeners. */
  listens(): boolean {
    return true;
  }

  registerSchema(): void {
    throw new ForgeError('NOT_SUPPORTED', 'JSON Schemas are checked by the in-process bus only; validate payloads before publishing on NATS.');
  }

  /** Handles the subscription's highest-ranked held message, one at a time. */
  #pump(subscription: Subscription): void {
    if (subscription.busy || !subscription.active) return;
    let m: JsMsg | undefined;
    for (let rank = subscription.mailbox.length - 1; rank >= 0 && m === undefined; rank--) m = subscription.mailbox[rank]!.shift();
    if (m === undefined) return;
    subscription.busy = true;
    const done = this.#deliver(subscription, m).finally(() => {
      subscription.busy = false;
      this.#pump(subscription);
    });
    this.#track(done);
  }

  async #deliver(subscription: Subscription, m: JsMsg): Promise<void> {
    const { spec } = subscription;
    let event: BusEvent;
    try {
      event = deepFreeze(m.json<BusEvent>());
    } catch {
      m.term('not a Forge Kernel event');
      return;
    }
    const retryFor = m.headers?.get(RETRY_FOR);
    const typed = (spec.types ?? []).includes(event.type) || (spec.patterns ?? []).some((p) => matches(p, event.type));
    const targeted = event.targets === undefined || (spec.target !== undefined && event.targets.includes(spec.target));
    if (!typed || !targeted || (retryFor !== undefined && retryFor !== '' && retryFor !== subscription.group)) {
      m.ack();
      return;
    }
    try {
      if (spec.filter !== undefined && !spec.filter(event)) {
        m.ack();
        return;
      }
    } catch (error) {
      this.#deadLetter(event, subscription, error, 0);
      m.term('filter failed');
      return;
    }
    if (spec.accepts !== undefined && !spec.accepts()) {
      // Not taking events here (the overlay is deactivated in this process): hand it back so another member of the
      // group takes it; once every attempt has come back, nobody takes it and it is skipped (not a dead letter).
      if (m.info.deliveryCount < (spec.maxAttempts ?? this.#options.maxAttempts) && !this.#stopping) m.nak(this.#options.retryDelayMs);
      else m.ack();
      return;
    }
    const timeoutMs = spec.timeoutMs ?? this.#options.handlerTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        handling(event, () => Promise.resolve().then(() => subscription.handler(event))),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new HandlerTimeoutError(subscription.group, timeoutMs)), timeoutMs))),
      ]);
      m.ack();
      this.#counts.delivered++;
      this.#latency.add(Math.max(0, Date.now() - event.timestamp));
    } catch (error) {
      this.#counts.failed++;
      const attempts = m.info.deliveryCount;
      if (attempts >= (spec.maxAttempts ?? this.#options.maxAttempts) || this.#stopping) {
        this.#deadLetter(event, subscription, error, attempts);
        m.term('dead-lettered');
      } else {
        this.#counts.retried++;
        const base = Math.min(this.#options.maxRetryDelayMs, this.#options.retryDelayMs * 2 ** (attempts - 1));
        m.nak(Math.round(base * (0.5 + Math.random() / 2)));
      }
    } finally {
      clearTimeout(timer);
    }
  }

  #deadLetter(event: BusEvent, subscription: Subscription, error: unknown, attempts: number): void {
    this.#counts.deadLettered++;
    const letter = {
      id: `dl_${nanoid(12)}`,
      event,
      subscriber: subscription.group,
      group: subscription.group,
      error: { code: isForgeError(error) ? error.code : attempts === 0 ? 'FILTER_FAILED' : 'HANDLER_FAILED', message: error instanceof Error ? error.message : String(error) },
      attempts,
      at: Date.now(),
    };
    this.#deadLetters.set(letter.id, letter);
    this.#options.store?.saveDeadLetter(letter).catch((err: unknown) => this.#options.logger?.error({ err, deadLetter: letter.id }, 'could not persist a dead letter'));
    this.#options.logger?.warn({ event: event.type, eventId: event.id, subscriber: subscription.group, correlationId: event.correlationId, code: letter.error.code }, 'event dead-lettered');
  }

  deadLetters(): DeadLetter[] {
    return [...this.#deadLetters.values()].map((letter) => ({ id: letter.id, event: letter.event, subscriber: letter.subscriber, error: letter.error, attempts: letter.attempts, at: letter.at }));
  }

  /** Publishes a dead letter's event again, for its subscriber group only (the other groups skip it). */
  async retryDeadLetter(id: string): Promise<void> {
    const letter = this.#deadLetters.get(id);
    if (letter === undefined) throw new ForgeError('NOT_FOUND', `No dead letter "${id}".`);
    if (this.#stopping) throw new BusStoppedError();
    const h = natsHeaders();
    h.set(RETRY_FOR, letter.group);
    await this.#js.publish(this.#subject(letter.event), JSON.stringify(letter.event), { msgID: `${letter.event.id}.retry.${nanoid(6)}`, headers: h });
    this.#deadLetters.delete(id);
    await this.#options.store?.removeDeadLetter(id);
  }

  metrics(): ReturnType<Bus['metrics']> {
    let held = 0;
    for (const s of this.#subscriptions.values()) for (const q of s.mailbox) held += q.length;
    return { ...this.#counts, queueDepth: held + this.#inFlight.size, subscribers: this.#subscriptions.size, latencyMs: this.#latency.percentiles() };
  }

  #track(work: Promise<unknown>): void {
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work));
  }

  /**
   * Stops consuming, lets deliveries in progress finish (up to the deadline), hands the messages held but not
   * handled back to NATS (another process of the group takes them), and drains the connection.
   */
  async stop(deadlineMs = 5_000): Promise<{ undelivered: { eventId: string; type: string; subscriber: string }[] }> {
    this.#stopping = true;
    for (const s of this.#subscriptions.values()) for (const feed of s.feeds) void feed.close();
    const until = Date.now() + deadlineMs;
    while (this.#inFlight.size > 0 && Date.now() < until) await Promise.race([Promise.allSettled([...this.#inFlight]), new Promise((r) => setTimeout(r, 20))]);
    const undelivered: { eventId: string; type: string; subscriber: string }[] = [];
    for (const s of this.#subscriptions.values()) {
      s.active = false;
      for (const queue of s.mailbox) {
        for (const m of queue.splice(0)) {
          undelivered.push({ eventId: m.headers?.get('Nats-Msg-Id') ?? String(m.seq), type: m.subject, subscriber: s.group });
          m.nak();
        }
      }
    }
    // Draining flushes acks; a cluster that lost the node it was talking to may never confirm, so it is bounded.
    const drained = this.#nc.drain().catch(() => undefined);
    const timer = setTimeout(() => void this.#nc.close().catch(() => undefined), Math.max(500, until - Date.now()));
    await drained;
    clearTimeout(timer);
    return { undelivered };
  }
}
