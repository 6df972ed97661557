import { copy } from '../store/store.ts';
import { checkAppend, checkFeed, checkFromSeq, checkRetention, JournalInputError, JOURNAL_FORMAT, meets, retentionVictims, streamType, type AppendOptions, type Expected, type FedAppend, type Journal, type JournalEntry, type NewEntry, type RetentionPolicy, type StreamHead, type StreamType } from './journal.ts';

/** Settled streams the memory journal keeps at most, unless told otherwise (the oldest go first). */
export const DEFAULT_MEMORY_STREAMS = 1_000;
/** Appends the memory journal's feed keeps (a projector further behind skips the oldest). */
const FEED_KEPT = 100_000;

interface MemoryStream {
  head: StreamHead;
  entries: JournalEntry[];
}

/**
 * The journal in this process's memory (the embedded default): it survives nothing, and serves replay, `journal
 * show` and the inspector while the process lives. Entries are kept as given (the run's data is frozen already) and
 * copied on the way out; settled streams beyond `maxStreams` are dropped, oldest first.
 */
export class MemoryJournal implements Journal {
  readonly kind = 'memory' as const;
  readonly #streams = new Map<string, MemoryStream>();
  readonly #maxStreams: number;
  #settled = 0;
  /** Appends in order, for `feed` (the oldest beyond FEED_KEPT go), kept once someone reads the feed. */
  #feed: { position: number; stream: string; entries: JournalEntry[] }[] = [];
  #feeding = false;
  #position = 0;

  constructor(options: { maxStreams?: number } = {}) {
    const { maxStreams = DEFAULT_MEMORY_STREAMS } = options;
    if (typeof maxStreams !== 'number' || !Number.isInteger(maxStreams) || maxStreams < 1) throw new JournalInputError(`journal.maxStreams must be a positive whole number, got ${JSON.stringify(maxStreams)}.`);
    this.#maxStreams = maxStreams;
  }

  async open(): Promise<void> {
    // Nothing to open.
  }

  append(stream: string, expected: Expected, entries: readonly NewEntry[], options: AppendOptions): Promise<number | undefined> {
    return settle(() => this.#append(stream, expected, entries, options));
  }

  #append(stream: string, expected: Expected, entries: readonly NewEntry[], options: AppendOptions): number | undefined {
    checkAppend(stream, expected, entries, options);
    const current = this.#streams.get(stream);
    if (options.dedupeKey !== undefined && current?.head.lastKey === options.dedupeKey) return current.head.seq;
    if (!meets(current?.head, expected)) return undefined;
    const now = Date.now();
    const target = current ?? { head: { stream, type: streamType(stream), seq: 0, status: options.status, settled: false, createdAt: now, updatedAt: now, bytes: 0, lastKey: null }, entries: [] };
    let seq = target.head.seq;
    const appended: JournalEntry[] = [];
    for (const entry of entries) appended.push({ ...entry, v: JOURNAL_FORMAT, stream, seq: ++seq });
    target.entries.push(...appended);
    this.#position++;
    if (this.#feeding) {
      this.#feed.push({ position: this.#position, stream, entries: appended });
      if (this.#feed.length > FEED_KEPT * 1.25) this.#feed = this.#feed.slice(-FEED_KEPT);
    }
    const wasSettled = target.head.settled;
    target.head = { ...target.head, seq, status: options.status, settled: options.settled === true, updatedAt: now, lastKey: options.dedupeKey ?? null };
    if (current === undefined) this.#streams.set(stream, target);
    if (target.head.settled && !wasSettled) this.#settled++;
    if (this.#settled > this.#maxStreams) this.#evict();
    return seq;
  }

  read(stream: string, fromSeq = 1): Promise<JournalEntry[]> {
    return settle(() => this.#read(stream, fromSeq));
  }

  #read(stream: string, fromSeq = 1): JournalEntry[] {
    streamType(stream);
    checkFromSeq(fromSeq);
    const entries = this.#streams.get(stream)?.entries ?? [];
    return copy(entries.slice(Math.max(0, fromSeq - 1)));
  }

  head(stream: string): Promise<StreamHead | undefined> {
    return settle(() => this.#head(stream));
  }

  #head(stream: string): StreamHead | undefined {
    streamType(stream);
    const head = this.#streams.get(stream)?.head;
    return head === undefined ? undefined : { ...head };
  }

  list(filter: { statuses?: readonly string[]; type?: StreamType; limit?: number } = {}): Promise<StreamHead[]> {
    return settle(() => this.#list(filter));
  }

  #list(filter: { statuses?: readonly string[]; type?: StreamType; limit?: number } = {}): StreamHead[] {
    const heads: StreamHead[] = [];
    for (const { head } of this.#streams.values()) {
      if (filter.type !== undefined && head.type !== filter.type) continue;
      if (filter.statuses !== undefined && !filter.statuses.includes(head.status)) continue;
      heads.push({ ...head });
    }
    heads.sort((a, b) => b.updatedAt - a.updatedAt);
    return filter.limit === undefined ? heads : heads.slice(0, filter.limit);
  }

  feed(after: number, limit: number): Promise<FedAppend[]> {
    return settle(() => {
      checkFeed(after, limit);
      // The feed is kept from its first reader on (a kernel nobody projects keeps no second copy of its appends).
      this.#feeding = true;
      // Positions are consecutive: the first one after `after` is found by arithmetic.
      const start = Math.max(0, after + 1 - (this.#feed[0]?.position ?? after + 1));
      return copy(this.#feed.slice(start, start + limit));
    });
  }

  lastPosition(): Promise<number> {
    return Promise.resolve(this.#position);
  }

  prune(policy: RetentionPolicy): Promise<number> {
    return settle(() => this.#prune(policy));
  }

  #prune(policy: RetentionPolicy): number {
    const victims = retentionVictims(
      [...this.#streams.values()].map((s) => s.head),
      checkRetention(policy),
    );
    for (const stream of victims) this.#drop(stream);
    return victims.length;
  }

  async close(): Promise<void> {
    // Nothing to release.
  }

  #drop(stream: string): void {
    const gone = this.#streams.get(stream);
    if (gone === undefined) return;
    this.#streams.delete(stream);
    if (gone.head.settled) this.#settled--;
  }

  /** Drops the oldest settled streams down to the limit (a Map iterates in insertion order: oldest first). */
  #evict(): void {
    for (const [stream, { head }] of this.#streams) {
      if (this.#settled <= this.#maxStreams) return;
      if (head.settled) this.#drop(stream);
    }
  }
}

/** Runs `work` now and settles a promise with its result or its error (every journal method reports through its promise). */
function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
}
