import { JetStreamApiError, jetstream, jetstreamManager, RetentionPolicy as StreamRetention, StorageType, type JetStreamClient, type JetStreamManager, type MsgRequest } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import {
  checkAppend,
  checkFeed,
  checkFromSeq,
  checkRetention,
  decodeEntry,
  encodeEntry,
  JournalEntryError,
  JournalInputError,
  JournalUnavailableError,
  meets,
  retentionVictims,
  streamType,
  type AppendOptions,
  type Expected,
  type FedAppend,
  type Journal,
  type JournalEntry,
  type NewEntry,
  type RetentionPolicy,
  type StreamHead,
  type StreamType,
} from './journal.ts';

export interface JetStreamJournalOptions {
  /** The NATS servers (`nats://host:port`, or a list). */
  servers: string | readonly string[];
  /**
   * The journal's name: its JetStream stream is `FORGE_JOURNAL_<name>`, one subject per run or chain under
   * `forge.journal.<name>.`. Kernels naming the same journal share it (a cluster). Default `default`.
   */
  name?: string;
  /** JetStream replicas of the stream (1, or 3 / 5 on a NATS cluster). Default 1. Used when the stream is created. */
  replicas?: number;
  /** How long a JetStream request may take before the journal reports itself unavailable (ms, default 10 000). */
  timeoutMs?: number;
  logger?: Logger;
}

/**
 * A stream's head as this journal keeps it: what `StreamHead` says, the NATS sequence number of its last message,
 * and the keys of the appends that message holds (with the sequence number each ended at).
 */
interface Head extends StreamHead {
  natsSeq: number;
  keys: [string, number][];
}

/** An append waiting for its turn on its stream. */
interface Pending {
  expected: Expected;
  entries: readonly NewEntry[];
  /** Each entry's body, as JSON. */
  bodies: readonly string[];
  options: AppendOptions;
  resolve: (seq: number | undefined) => void;
  reject: (error: unknown) => void;
}

/** What each message's first line says of the stream after it (the entries follow, one per line: `crc\ttext`). */
interface HeadLine {
  seq: number;
  first: number;
  status: string;
  settled: boolean;
  key: string | null;
  /** The keys of every append the message holds, when it holds more than one (chained appends sent together). */
  keys?: [string, number][];
  createdAt: number;
  updatedAt: number;
  bytes: number;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const DEFAULT_TIMEOUT_MS = 10_000;
/** Heads of streams not being written here, fetched at once by `list` at most. */
const LIST_PARALLELISM = 32;
/** Settled heads remembered (a settled stream never changes: `list` need not fetch it again). */
const SETTLED_CACHE = 20_000;
/** Chained appends sent as one message hold at most this much entry text (NATS's default max payload is 1 MiB). */
const MERGE_BYTES = 256 * 1024;

/**
 * The journal in NATS JetStream, for a cluster: one stream, one subject per run or chain; every kernel naming the
 * same journal reads and writes it. An append is one message holding its entries, published with JetStream's
 * expected-last-subject-sequence (one writer per run, decided by the server) and a message id (a retried append
 * lands once, within the stream's duplicate window). The message's first line carries the stream's head, so a head is
 * one "last message for subject" request. Appends to one stream are sent in order from this process; appends to
 * different streams go out together.
 */
export class JetStreamJournal implements Journal {
  readonly kind = 'jetstream' as const;
  readonly #options: { servers: readonly string[]; name: string; replicas: number; timeoutMs: number; logger?: Logger };
  readonly #streamName: string;
  readonly #prefix: string;
  #nc: NatsConnection | undefined;
  #js: JetStreamClient | undefined;
  #jsm: JetStreamManager | undefined;
  #opening: Promise<void> | undefined;
  /** Heads this process wrote or read last, per stream: a hint (checked by the server on every append). */
  readonly #heads = new Map<string, Head>();
  /** Appends waiting per stream: appends to one stream go out one after another (chained ones together). */
  readonly #queues = new Map<string, Pending[]>();
  readonly #draining = new Set<Promise<void>>();
  readonly #settled = new Map<string, Head>();

  constructor(options: JetStreamJournalOptions) {
    const { servers, name = 'default', replicas = 1, timeoutMs = DEFAULT_TIMEOUT_MS, logger } = (options as JetStreamJournalOptions | undefined) ?? ({} as Partial<JetStreamJournalOptions>);
    const list = typeof servers === 'string' ? [servers] : servers;
    if (!Array.isArray(list) || list.length === 0 || list.some((s) => typeof s !== 'string' || s === '')) throw new JournalInputError(`journal.servers must be a NATS URL or a list of them, got ${JSON.stringify(servers)}.`);
    if (typeof name !== 'string' || !NAME.test(name)) throw new JournalInputError(`journal.name must be 1–64 letters, digits, "_" or "-", got ${JSON.stringify(name)}.`);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) throw new JournalInputError(`journal.replicas must be a whole number from 1 to 5, got ${JSON.stringify(replicas)}.`);
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 100) throw new JournalInputError(`journal.timeoutMs must be at least 100, got ${JSON.stringify(timeoutMs)}.`);
    this.#options = { servers: list, name, replicas, timeoutMs, ...(logger === undefined ? {} : { logger }) };
    this.#streamName = `FORGE_JOURNAL_${name}`;
    this.#prefix = `forge.journal.${name}.`;
  }

  /** The JetStream stream holding this journal. */
  get streamName(): string {
    return this.#streamName;
  }

  open(): Promise<void> {
    this.#opening ??= this.#open().catch((error: unknown) => {
      this.#opening = undefined;
      throw error;
    });
    return this.#opening;
  }

  async #open(): Promise<void> {
    const { servers, timeoutMs, replicas } = this.#options;
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: [...servers], timeout: timeoutMs, name: `forge-journal-${this.#options.name}`, noAsyncTraces: true });
    } catch (error) {
      throw new JournalUnavailableError(`The JetStream journal cannot reach NATS at ${servers.join(', ')}: ${(error as Error).message}`, error);
    }
    try {
      const jsm = await jetstreamManager(nc, { timeout: timeoutMs }).catch((error: unknown) => {
        throw new JournalUnavailableError(`NATS at ${servers.join(', ')} has no JetStream (start nats-server with -js): the journal cannot be kept there. ${(error as Error).message}`, error);
      });
      const subjects = [`${this.#prefix}*`];
      try {
        const info = await jsm.streams.info(this.#streamName);
        if (!info.config.subjects.includes(subjects[0]!)) throw new JournalUnavailableError(`JetStream stream ${this.#streamName} exists with subjects ${JSON.stringify(info.config.subjects)}, not ${subjects[0]}: it is not this journal's.`);
      } catch (error) {
        if (!(error instanceof JetStreamApiError) || error.code !== 10059) throw error;
        await jsm.streams.add({ name: this.#streamName, subjects, storage: StorageType.File, retention: StreamRetention.Limits, num_replicas: replicas, max_msgs_per_subject: -1 });
      }
      this.#nc = nc;
      this.#jsm = jsm;
      this.#js = jetstream(nc, { timeout: timeoutMs });
    } catch (error) {
      await nc.close().catch(() => undefined);
      if (error instanceof JournalUnavailableError) throw error;
      throw new JournalUnavailableError(`The JetStream journal ${this.#streamName} cannot be opened: ${(error as Error).message}`, error);
    }
  }

  append(stream: string, expected: Expected, entries: readonly NewEntry[], options: AppendOptions): Promise<number | undefined> {
    let bodies: string[];
    try {
      checkAppend(stream, expected, entries, options);
      // Each entry's body is encoded now: the caller may change its objects once append returns.
      bodies = entries.map((entry, index) => {
        try {
          return JSON.stringify(entry.body);
        } catch (error) {
          throw new JournalInputError(`entries[${index}].body cannot be written as JSON: ${(error as Error).message}`);
        }
      });
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return new Promise((resolve, reject) => {
      const queue = this.#queues.get(stream);
      const pending: Pending = { expected, entries, bodies, options, resolve, reject };
      if (queue !== undefined) queue.push(pending);
      else {
        this.#queues.set(stream, [pending]);
        const drained = this.#drain(stream);
        this.#draining.add(drained);
        void drained.finally(() => this.#draining.delete(drained));
      }
    });
  }

  /**
   * Sends a stream's queued appends in order. Appends queued behind one in flight that chain on it (`{ after }` its
   * key) go out together as one message: a run's checkpoints made while the previous one travels cost one round trip.
   */
  async #drain(stream: string): Promise<void> {
    const queue = this.#queues.get(stream)!;
    while (queue.length > 0) {
      const batch = [queue.shift()!];
      let size = batch[0]!.bodies.reduce((sum, body) => sum + body.length, 0);
      for (let next = queue[0]; next !== undefined && chainsOn(batch.at(-1), next); next = queue[0]) {
        const more = next.bodies.reduce((sum, body) => sum + body.length, 0);
        if (size + more > MERGE_BYTES) break;
        size += more;
        batch.push(queue.shift()!);
      }
      try {
        const results = await this.#appendBatch(stream, batch);
        batch.forEach((pending, index) => pending.resolve(results[index]));
      } catch (error) {
        for (const pending of batch) pending.reject(error);
        // Whether the failed append landed is unknown: appends queued on it are not sent (one that landed after all
        // would put them behind it), and fail with it; their writer starts over from what the journal holds.
        let failed = batch.at(-1);
        while (queue[0] !== undefined && chainsOn(failed, queue[0])) {
          failed = queue.shift()!;
          failed.reject(error);
        }
      }
    }
    this.#queues.delete(stream);
  }

  /** Appends a batch of chained appends as one message; each one's result, in order. */
  async #appendBatch(stream: string, all: readonly Pending[]): Promise<(number | undefined)[]> {
    const { js } = this.#ready();
    const results: (number | undefined)[] = [];
    let batch = all;
    let head = this.#heads.get(stream);
    let fresh = false;
    if (head === undefined) {
      head = await this.#fetchHead(stream);
      fresh = true;
    }
    for (let attempt = 0; attempt < 4; attempt++) {
      // An append that is the stream's last already (a retry whose answer was lost) resolves with its result; what
      // this process remembers is checked with the server first (another process may have appended since).
      if (batch[0]!.options.dedupeKey !== undefined && head?.lastKey === batch[0]!.options.dedupeKey) {
        if (!fresh) {
          head = await this.#fetchHead(stream);
          fresh = true;
          continue;
        }
        results.push(head.seq);
        batch = batch.slice(1);
        if (batch.length === 0) return results;
      }
      if (!meets(head, batch[0]!.expected)) {
        // What this process knew may be behind another process's appends: ask once before refusing. The appends
        // chained on a refused one are refused with it (their key is never written).
        if (fresh) return [...results, ...batch.map(() => undefined)];
        head = await this.#fetchHead(stream);
        fresh = true;
        continue;
      }
      const now = Date.now();
      const first = (head?.seq ?? 0) + 1;
      let seq = first - 1;
      const lines: string[] = [];
      const keys: [string, number][] = [];
      const ends: number[] = [];
      for (const pending of batch) {
        pending.entries.forEach((entry, index) => {
          const { text, crc } = encodeEntry(stream, ++seq, entry, pending.bodies[index]);
          lines.push(`${crc}\t${text}`);
        });
        ends.push(seq);
        if (pending.options.dedupeKey !== undefined) keys.push([pending.options.dedupeKey, seq]);
      }
      const last = batch.at(-1)!.options;
      const bytes = (head?.bytes ?? 0) + lines.reduce((sum, line) => sum + line.length, 0);
      const line: HeadLine = { seq, first, status: last.status, settled: last.settled === true, key: last.dedupeKey ?? null, ...(keys.length > 1 ? { keys } : {}), createdAt: head?.createdAt ?? now, updatedAt: now, bytes };
      const payload = `${JSON.stringify(line)}\n${lines.join('\n')}`;
      const limit = this.#nc?.info?.max_payload;
      if (limit !== undefined && Buffer.byteLength(payload) > limit) throw new JournalInputError(`An append to ${stream} takes ${Buffer.byteLength(payload)} bytes, more than this NATS server's max_payload (${limit}).`);
      try {
        const ack = await js.publish(this.#subject(stream), payload, {
          expect: { lastSubjectSequence: head?.natsSeq ?? 0 },
          ...(last.dedupeKey === undefined ? {} : { msgID: `${stream}:${last.dedupeKey}` }),
          timeout: this.#options.timeoutMs,
        });
        if (ack.duplicate) {
          // JetStream had this append already (a retry whose answer was lost): it is settled above if it is still
          // the stream's last message, and refused if anything came after it.
          head = await this.#fetchHead(stream);
          fresh = true;
          if (head?.natsSeq !== ack.seq) return [...results, ...batch.map(() => undefined)];
          continue;
        }
        this.#remember(this.#headOf(stream, line, ack.seq));
        return [...results, ...ends];
      } catch (error) {
        if (error instanceof JetStreamApiError && (error.code === 10071 || error.code === 10164)) {
          // Another writer appended since: see whether these appends (retries) are what landed, or whether the
          // stream is still as expected.
          head = await this.#fetchHead(stream);
          fresh = true;
          continue;
        }
        // No answer (a timeout, a lost connection): the message may have been stored. If the stream's last message
        // is this batch, it landed.
        const landed = await this.#fetchHead(stream).catch(() => undefined);
        const mine = landed?.keys.length === keys.length && keys.every(([key, end], index) => landed.keys[index]![0] === key && landed.keys[index]![1] === end);
        if (mine && keys.length > 0 && landed !== undefined && landed.seq === seq) return [...results, ...ends];
        throw new JournalUnavailableError(`The JetStream journal could not append to ${stream}: ${(error as Error).message}`, error);
      }
    }
    return [...results, ...batch.map(() => undefined)];
  }

  async read(stream: string, fromSeq = 1): Promise<JournalEntry[]> {
    streamType(stream);
    checkFromSeq(fromSeq);
    const { jsm } = this.#ready();
    const subject = this.#subject(stream);
    const entries: JournalEntry[] = [];
    let cursor = 1;
    let expectedSeq = 1;
    let last: Head | undefined;
    for (;;) {
      const message = await this.#request(() => jsm.streams.getMessage(this.#streamName, nextBySubject(cursor, subject)), stream);
      if (message === null) break;
      const { line, rows } = this.#parse(stream, message.string(), message.seq);
      if (line.first !== expectedSeq) throw new JournalEntryError('JOURNAL_CORRUPT', stream, expectedSeq, `the journal skips to entry ${line.first} (entries are missing).`);
      rows.forEach((row, index) => {
        const seq = line.first + index;
        if (seq >= fromSeq) entries.push(decodeEntry(stream, seq, row.text, row.crc));
      });
      expectedSeq = line.seq + 1;
      last = this.#headOf(stream, line, message.seq);
      cursor = message.seq + 1;
    }
    if (last !== undefined) this.#remember(last);
    return entries;
  }

  async feed(after: number, limit: number): Promise<FedAppend[]> {
    checkFeed(after, limit);
    const { jsm } = this.#ready();
    const appends: FedAppend[] = [];
    let cursor = after + 1;
    while (appends.length < limit) {
      const message = await this.#request(() => jsm.streams.getMessage(this.#streamName, nextBySubject(cursor, `${this.#prefix}*`)), '(feed)');
      if (message === null) break;
      const stream = message.subject.slice(this.#prefix.length);
      try {
        const { line, rows } = this.#parse(stream, message.string(), message.seq);
        appends.push({ position: message.seq, stream, entries: rows.map((row, index) => decodeEntry(stream, line.first + index, row.text, row.crc)) });
      } catch (error) {
        appends.push({ position: message.seq, stream, entries: [], damaged: (error as Error).message });
      }
      cursor = message.seq + 1;
    }
    return appends;
  }

  async lastPosition(): Promise<number> {
    const { jsm } = this.#ready();
    return (await this.#request(() => jsm.streams.info(this.#streamName), '(position)')).state.last_seq;
  }

  async head(stream: string): Promise<StreamHead | undefined> {
    streamType(stream);
    this.#ready();
    const head = await this.#fetchHead(stream);
    return head === undefined ? undefined : publicHead(head);
  }

  async list(filter: { statuses?: readonly string[]; type?: StreamType; limit?: number } = {}): Promise<StreamHead[]> {
    const { jsm } = this.#ready();
    const info = await this.#request(() => jsm.streams.info(this.#streamName, { subjects_filter: `${this.#prefix}*` }), '(list)');
    const streams = Object.keys(info.state.subjects ?? {})
      .map((subject) => subject.slice(this.#prefix.length))
      .filter((stream) => {
        // A subject that is no run or chain id was published by something else: not a journal stream.
        try {
          return filter.type === undefined || streamType(stream) === filter.type;
        } catch {
          return false;
        }
      });
    const heads: StreamHead[] = [];
    for (let i = 0; i < streams.length; i += LIST_PARALLELISM) {
      const batch = await Promise.all(
        streams.slice(i, i + LIST_PARALLELISM).map((stream): Promise<Head | undefined> => {
          const settled = this.#settled.get(stream);
          if (settled !== undefined) return Promise.resolve(settled);
          // A stream whose last message does not read is logged and left out: the others are listed.
          return this.#fetchHead(stream).catch((error: unknown) => {
            if (error instanceof JournalUnavailableError) throw error;
            this.#options.logger?.error({ err: error, stream }, 'a journal stream\'s last message does not read: left out of the list');
            return undefined;
          });
        }),
      );
      for (const head of batch) {
        if (head === undefined) continue;
        if (filter.statuses !== undefined && !filter.statuses.includes(head.status)) continue;
        heads.push(publicHead(head));
      }
    }
    heads.sort((a, b) => b.updatedAt - a.updatedAt);
    return filter.limit === undefined ? heads : heads.slice(0, filter.limit);
  }

  async prune(policy: RetentionPolicy): Promise<number> {
    const checked = checkRetention(policy);
    const { jsm } = this.#ready();
    const victims = retentionVictims(await this.list(), checked);
    for (const stream of victims) {
      await this.#request(() => jsm.streams.purge(this.#streamName, { filter: this.#subject(stream) }), stream);
      this.#heads.delete(stream);
      this.#settled.delete(stream);
    }
    return victims.length;
  }

  async close(): Promise<void> {
    // Appends under way finish first (their callers are told how they went).
    while (this.#draining.size > 0) await Promise.all([...this.#draining]);
    const nc = this.#nc;
    this.#nc = undefined;
    this.#js = undefined;
    this.#jsm = undefined;
    this.#opening = undefined;
    await nc?.drain().catch(() => nc.close());
  }

  #ready(): { js: JetStreamClient; jsm: JetStreamManager } {
    if (this.#js === undefined || this.#jsm === undefined) throw new JournalUnavailableError('The JetStream journal is not open (open() it first, or it was closed).');
    return { js: this.#js, jsm: this.#jsm };
  }

  #subject(stream: string): string {
    return `${this.#prefix}${stream}`;
  }

  /** The stream's head, from its last message (one request). */
  async #fetchHead(stream: string): Promise<Head | undefined> {
    const { jsm } = this.#ready();
    const message = await this.#request(() => jsm.streams.getMessage(this.#streamName, { last_by_subj: this.#subject(stream) }), stream);
    if (message === null) {
      this.#heads.delete(stream);
      return undefined;
    }
    const text = message.string();
    const end = text.indexOf('\n');
    const head = this.#headOf(stream, parseHeadLine(stream, end === -1 ? text : text.slice(0, end), message.seq), message.seq);
    this.#remember(head);
    return head;
  }

  #headOf(stream: string, line: HeadLine, natsSeq: number): Head {
    const keys = line.keys ?? (line.key === null ? [] : [[line.key, line.seq] as [string, number]]);
    return { stream, type: streamType(stream), seq: line.seq, status: line.status, settled: line.settled, createdAt: line.createdAt, updatedAt: line.updatedAt, bytes: line.bytes, lastKey: line.key, natsSeq, keys };
  }

  #remember(head: Head): void {
    if (head.settled) {
      // A settled stream is not written again: its head is kept for `list`, bounded, oldest first out.
      this.#heads.delete(head.stream);
      this.#settled.delete(head.stream);
      this.#settled.set(head.stream, head);
      if (this.#settled.size > SETTLED_CACHE) this.#settled.delete(this.#settled.keys().next().value!);
      return;
    }
    this.#heads.set(head.stream, head);
  }

  /** A message's head line and entry rows. */
  #parse(stream: string, text: string, natsSeq: number): { line: HeadLine; rows: { crc: number; text: string }[] } {
    const lines = text.split('\n');
    const line = parseHeadLine(stream, lines[0]!, natsSeq);
    const rows = lines.slice(1).map((row, index) => {
      const tab = row.indexOf('\t');
      const crc = Number(row.slice(0, tab));
      if (tab < 1 || !Number.isInteger(crc)) throw new JournalEntryError('JOURNAL_CORRUPT', stream, line.first + index, 'its stored form has no checksum.');
      return { crc, text: row.slice(tab + 1) };
    });
    if (rows.length !== line.seq - line.first + 1) throw new JournalEntryError('JOURNAL_CORRUPT', stream, line.first, `a message says it holds entries ${line.first}–${line.seq} and holds ${rows.length}.`);
    return { line, rows };
  }

  /** A JetStream request, its failure reported as the journal being unavailable. */
  async #request<T>(work: () => Promise<T>, stream: string): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw new JournalUnavailableError(`The JetStream journal could not be read (${stream}): ${(error as Error).message}`, error);
    }
  }
}

function parseHeadLine(stream: string, text: string, natsSeq: number): HeadLine {
  let line: Partial<HeadLine> | null;
  try {
    line = JSON.parse(text) as Partial<HeadLine> | null;
  } catch {
    line = null;
  }
  const ok =
    line !== null &&
    typeof line === 'object' &&
    Number.isInteger(line.seq) &&
    Number.isInteger(line.first) &&
    line.first! >= 1 &&
    line.seq! >= line.first! &&
    typeof line.status === 'string' &&
    typeof line.settled === 'boolean' &&
    (line.key === null || typeof line.key === 'string') &&
    typeof line.createdAt === 'number' &&
    typeof line.updatedAt === 'number' &&
    typeof line.bytes === 'number' &&
    (line.keys === undefined ||
      (Array.isArray(line.keys) &&
        line.keys.every((k) => Array.isArray(k) && typeof k[0] === 'string' && Number.isInteger(k[1]) && k[1] >= line.first! && k[1] <= line.seq!) &&
        line.keys.at(-1)?.[0] === line.key));
  if (!ok) throw new JournalEntryError('JOURNAL_CORRUPT', stream, typeof line?.first === 'number' ? line.first : 0, `JetStream message ${natsSeq} is not a journal append.`);
  return line as HeadLine;
}

/**
 * The first message of `subject` at or after `seq`: STREAM.MSG.GET takes `next_by_subj` since NATS 2.9 (this
 * client's types only name it for direct gets).
 */
function nextBySubject(seq: number, subject: string): MsgRequest {
  return { seq, next_by_subj: subject } as MsgRequest;
}

/** Whether `next` chains on `previous` (`{ after }` its key), so both can go out as one message. */
function chainsOn(previous: Pending, next: Pending): boolean {
  const key = previous.options.dedupeKey;
  return key !== undefined && typeof next.expected === 'object' && next.expected.after === key;
}

function publicHead(head: Head): StreamHead {
  return { stream: head.stream, type: head.type, seq: head.seq, status: head.status, settled: head.settled, createdAt: head.createdAt, updatedAt: head.updatedAt, bytes: head.bytes, lastKey: head.lastKey };
}
