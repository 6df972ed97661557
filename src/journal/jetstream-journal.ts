import { JetStreamApiError, jetstream, jetstreamManager, RetentionPolicy as StreamRetention, StorageType, type JetStreamClient, type JetStreamManager, type MsgRequest } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import {
  checkAppend,
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

/** A stream's head as this journal keeps it: what `StreamHead` says, and the NATS sequence number of its last message. */
interface Head extends StreamHead {
  natsSeq: number;
}

/** What each message's first line says of the stream after it (the entries follow, one per line: `crc\ttext`). */
interface HeadLine {
  seq: number;
  first: number;
  status: string;
  settled: boolean;
  key: string | null;
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
  /** The last append queued per stream: appends to one stream go out one after another. */
  readonly #tails = new Map<string, Promise<unknown>>();
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
      nc = await connect({ servers: [...servers], timeout: timeoutMs, name: `forge-journal-${this.#options.name}` });
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
    try {
      checkAppend(stream, expected, entries, options);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    // Each entry's body is encoded now: the caller may change its objects once append returns.
    const bodies = entries.map((entry) => JSON.stringify(entry.body));
    const previous = this.#tails.get(stream) ?? Promise.resolve();
    const next = previous.then(() => this.#append(stream, expected, entries, bodies, options));
    const tail = next.catch(() => undefined);
    this.#tails.set(stream, tail);
    void tail.then(() => {
      if (this.#tails.get(stream) === tail) this.#tails.delete(stream);
    });
    return next;
  }

  async #append(stream: string, expected: Expected, entries: readonly NewEntry[], bodies: readonly string[], options: AppendOptions): Promise<number | undefined> {
    const { js } = this.#ready();
    let head = this.#heads.get(stream);
    let fresh = false;
    if (head === undefined) {
      head = await this.#fetchHead(stream);
      fresh = true;
    }
    for (let attempt = 0; attempt < 4; attempt++) {
      if (options.dedupeKey !== undefined && head?.lastKey === options.dedupeKey) return head.seq;
      if (!meets(head, expected)) {
        // What this process knew may be behind another process's appends: ask once before refusing.
        if (fresh) return undefined;
        head = await this.#fetchHead(stream);
        fresh = true;
        continue;
      }
      const now = Date.now();
      const first = (head?.seq ?? 0) + 1;
      let seq = first - 1;
      const lines = entries.map((entry, index) => {
        const { text, crc } = encodeEntry(stream, ++seq, entry, bodies[index]);
        return `${crc}\t${text}`;
      });
      const bytes = (head?.bytes ?? 0) + lines.reduce((sum, line) => sum + line.length, 0);
      const line: HeadLine = { seq, first, status: options.status, settled: options.settled === true, key: options.dedupeKey ?? null, createdAt: head?.createdAt ?? now, updatedAt: now, bytes };
      const payload = `${JSON.stringify(line)}\n${lines.join('\n')}`;
      try {
        const ack = await js.publish(this.#subject(stream), payload, {
          expect: { lastSubjectSequence: head?.natsSeq ?? 0 },
          ...(options.dedupeKey === undefined ? {} : { msgID: `${stream}:${options.dedupeKey}` }),
          timeout: this.#options.timeoutMs,
        });
        if (ack.duplicate) {
          // JetStream had this append already (a retry whose answer was lost): its result is the stream's head if
          // nothing came after it.
          head = await this.#fetchHead(stream);
          return head?.natsSeq === ack.seq ? head.seq : undefined;
        }
        this.#remember({ stream, type: streamType(stream), seq, status: line.status, settled: line.settled, createdAt: line.createdAt, updatedAt: now, bytes, lastKey: line.key, natsSeq: ack.seq });
        return seq;
      } catch (error) {
        if (error instanceof JetStreamApiError && (error.code === 10071 || error.code === 10164)) {
          // Another writer appended since: see whether this append (a retry) is the one that landed, or whether the
          // stream is still as expected.
          head = await this.#fetchHead(stream);
          fresh = true;
          continue;
        }
        throw new JournalUnavailableError(`The JetStream journal could not append to ${stream}: ${(error as Error).message}`, error);
      }
    }
    return undefined;
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
      .filter((stream) => filter.type === undefined || (stream.startsWith('run_') ? 'run' : 'chain') === filter.type);
    const heads: StreamHead[] = [];
    for (let i = 0; i < streams.length; i += LIST_PARALLELISM) {
      const batch = await Promise.all(streams.slice(i, i + LIST_PARALLELISM).map((stream): Promise<Head | undefined> => {
        const settled = this.#settled.get(stream);
        return settled === undefined ? this.#fetchHead(stream) : Promise.resolve(settled);
      }));
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
    await Promise.all([...this.#tails.values()]);
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
    return { stream, type: streamType(stream), seq: line.seq, status: line.status, settled: line.settled, createdAt: line.createdAt, updatedAt: line.updatedAt, bytes: line.bytes, lastKey: line.key, natsSeq };
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
    typeof line.bytes === 'number';
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

function publicHead(head: Head): StreamHead {
  return { stream: head.stream, type: head.type, seq: head.seq, status: head.status, settled: head.settled, createdAt: head.createdAt, updatedAt: head.updatedAt, bytes: head.bytes, lastKey: head.lastKey };
}
