import { crc32 } from 'node:zlib';
import { ForgeError } from '../errors.ts';
import type { HostCallRecord } from '../wasm/host-functions.ts';

/**
 * The journal: per run (and per chain) an append-only sequence of typed, versioned entries, the source of truth a
 * restore folds. Appends are conditional on the stream's last sequence number (one writer per stream, on every
 * backend) and idempotent by a dedupe key (a retried append whose acknowledgement was lost lands once).
 */
export interface Journal {
  readonly kind: 'memory' | 'sqlite' | 'jetstream';
  /** Opens the backend (creates files and tables, checks what is there); idempotent. */
  open(): Promise<void>;
  /**
   * Appends `entries` to `stream` only if the stream is still as `expected` says: its last sequence number (0: the
   * stream must not exist), or `{ after }` the dedupe key of its last append (null: the stream must not exist) — a
   * writer chaining appends on its own keys needs no answer in between. Resolves with the new last sequence number
   * once durable, or undefined when another writer got there first. An append whose `dedupeKey` equals the stream's
   * last append's resolves with that append's result instead (a retry lands once).
   */
  append(stream: string, expected: Expected, entries: readonly NewEntry[], options: AppendOptions): Promise<number | undefined>;
  /** The stream's entries from `fromSeq` (1-based) on, in order; [] when it does not exist. */
  read(stream: string, fromSeq?: number): Promise<JournalEntry[]>;
  /** The stream's head (last sequence number and status), or undefined. */
  head(stream: string): Promise<StreamHead | undefined>;
  /** Stream heads, newest first, optionally only with one of `statuses` or of one `type`. */
  list(filter?: { statuses?: readonly string[]; type?: StreamType; limit?: number }): Promise<StreamHead[]>;
  /** Drops streams that settled before `olderThan` (ms since the epoch), oldest first, beyond `keepBytes` in all. */
  prune(policy: RetentionPolicy): Promise<number>;
  /**
   * Appends after `position` in the journal's one global order, oldest first, at most `limit` of them (what a
   * projector follows: positions only grow). A backend may give an append's entries as separate items, each with
   * its own position. Absent on a journal that keeps no global order. (The memory journal keeps its feed from the
   * first call on.)
   */
  feed?(after: number, limit: number): Promise<FedAppend[]>;
  /** The position of the journal's last append (0 when empty). */
  lastPosition?(): Promise<number>;
  close(): Promise<void>;
}

/** An append as the journal's feed gives it: its place in the global order, its stream, and its entries. */
export interface FedAppend {
  position: number;
  stream: string;
  entries: JournalEntry[];
  /** Set when (part of) the append does not read back: its entries are left out, and the feed goes on past it. */
  damaged?: string;
}

/** Checks a feed request's arguments. */
export function checkFeed(after: unknown, limit: unknown): void {
  if (typeof after !== 'number' || !Number.isInteger(after) || after < 0) throw new JournalInputError(`A feed starts after a position ≥ 0, got ${JSON.stringify(after)}.`);
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1) throw new JournalInputError(`A feed's limit is a whole number ≥ 1, got ${JSON.stringify(limit)}.`);
}

export type StreamType = 'run' | 'chain';

/** What an append expects of its stream: the last sequence number, or the dedupe key of the last append. */
export type Expected = number | { after: string | null };

export interface AppendOptions {
  /** The stream's status after this append (what `list` filters on). */
  status: string;
  /** Whether the stream's work is over after this append (settled streams are what retention may drop). */
  settled?: boolean;
  dedupeKey?: string;
  /**
   * May be committed with later appends (group commit, within the backend's commit interval) instead of at once: for
   * progress nobody is told of. Its promise still resolves only once it is durable.
   */
  lazy?: boolean;
}

export interface RetentionPolicy {
  /** Settled streams older than this (ms since they settled) are dropped. */
  maxAgeMs?: number;
  /** Settled streams are dropped, oldest first, until what remains is at most this many bytes. */
  maxBytes?: number;
  now?: number;
}

export interface StreamHead {
  stream: string;
  type: StreamType;
  seq: number;
  status: string;
  settled: boolean;
  createdAt: number;
  updatedAt: number;
  /** Bytes the stream's entries take (encoded). */
  bytes: number;
  /** The dedupe key of the stream's last append (what an `{ after }` append names), or null. */
  lastKey: string | null;
}

/** Version of the entry format (`v` of each entry). */
export const JOURNAL_FORMAT = 1;

/** An overlay as a run recorded it: enough to find (or reload) the same module for a replay. */
export interface RecordedOverlay {
  name: string;
  version: string;
  sha256: string;
  mode?: string;
  grant?: string[];
}

/** What each kind of entry carries. */
export interface EntryBodies {
  /** A run began: the pipeline actor's input, and what it will run (overlay names, versions, sha256s). */
  'run.started': { input: Record<string, unknown>; overlays: RecordedOverlay[]; kernel: string };
  /** An event the run's actor received (a phase's outcome, pause, resume, decision, cancel, halt): the fold replays it. */
  'run.event': { event: Record<string, unknown> & { type: string } };
  /** One overlay call of a phase (each attempt): what it was given and what it answered, with its fuel. */
  'run.call': { phase: string; overlay: string; attempt: number; input: unknown; output?: unknown; error?: { code: string; message: string }; fuelUsed: number; durationMs: number; host?: HostCallRecord[]; cached?: boolean };
  /** A process took the run up (restored or revived it): its first write, which only one copy can make. */
  'run.driven': { by: string };
  /**
   * The run ended: how, and its error; a completed run also carries its audit entry's content (what the audit
   * projection writes, even once retention has dropped the rest of the run).
   */
  'run.settled': { status: string; error: unknown; audit?: { capsuleId: string; decision: string; detail: unknown } };
  'chain.started': { chain: Record<string, unknown> };
  'chain.hop': { hop: Record<string, unknown> };
  /** A live chain's record written again (its counts, at a stop): a restore starts from the last one. */
  'chain.saved': { chain: Record<string, unknown> };
  /**
   * An overlay call a chain's event caused (each delivery): the event it handled, what it was given and answered,
   * its fuel and host calls, and the overlay as it was (what a replay of the chain re-executes).
   */
  'chain.call': { overlay: string; version: string; sha256: string; event: string; attempt: number; input: unknown; output?: unknown; error?: { code: string; message: string }; fuelUsed: number; durationMs: number; host?: HostCallRecord[] };
  'chain.ended': { status: string; chain: Record<string, unknown> };
}
export type EntryKind = keyof EntryBodies;
export const ENTRY_KINDS: readonly EntryKind[] = ['run.started', 'run.event', 'run.call', 'run.driven', 'run.settled', 'chain.started', 'chain.hop', 'chain.saved', 'chain.call', 'chain.ended'];

export type NewEntry = { [K in EntryKind]: { kind: K; at: number; body: EntryBodies[K] } }[EntryKind];
export type JournalEntry = NewEntry & { v: number; stream: string; seq: number };

/** A journal entry cannot be read: corrupt bytes, a gap, or a format this kernel does not know. */
export class JournalEntryError extends ForgeError {
  constructor(code: 'JOURNAL_CORRUPT' | 'JOURNAL_UNSUPPORTED', stream: string, seq: number, problem: string) {
    super(code, `Journal entry ${seq} of ${stream}: ${problem}`, { details: { stream, seq } });
  }
}

/** The journal cannot be opened or written (read-only directory, disk full, …): nothing new is acknowledged. */
export class JournalUnavailableError extends ForgeError {
  constructor(message: string, cause?: unknown) {
    super('JOURNAL_UNAVAILABLE', message, cause === undefined ? {} : { cause });
  }
}

/** A malformed append or journal option. */
export class JournalInputError extends ForgeError {
  constructor(message: string) {
    super('INVALID_JOURNAL_INPUT', message);
  }
}

const STREAM_ID = /^(run|csc|chain)_[A-Za-z0-9_-]{1,64}$/;

/** The stream's type, from its id (a run's `run_…`, a cascade chain's `csc_…`); throws on any other id. */
export function streamType(stream: unknown): StreamType {
  if (typeof stream !== 'string' || !STREAM_ID.test(stream)) throw new JournalInputError(`A journal stream is a run or chain id (run_… / csc_…), got ${JSON.stringify(stream)}.`);
  return stream.startsWith('run_') ? 'run' : 'chain';
}

/** Checks an append's arguments (every backend, before it writes anything). */
export function checkAppend(stream: unknown, expected: unknown, entries: unknown, options: unknown): void {
  streamType(stream);
  if (typeof expected === 'object' && expected !== null) {
    const { after } = expected as { after?: unknown };
    if (after !== null && (typeof after !== 'string' || after === '')) throw new JournalInputError(`expected.after must be the dedupe key of the stream's last append, or null, got ${JSON.stringify(after)}.`);
    if (typeof (options as { dedupeKey?: unknown } | null)?.dedupeKey !== 'string') throw new JournalInputError('An append chained { after } a key needs its own dedupeKey (the next append names it).');
  } else if (typeof expected !== 'number' || !Number.isInteger(expected) || expected < 0) throw new JournalInputError(`expected must be a sequence number ≥ 0 or { after: <key> | null }, got ${JSON.stringify(expected)}.`);
  if (!Array.isArray(entries) || entries.length === 0) throw new JournalInputError('An append needs at least one entry.');
  for (const [index, entry] of entries.entries()) {
    const { kind, at, body } = (entry ?? {}) as { kind?: unknown; at?: unknown; body?: unknown };
    if (!ENTRY_KINDS.includes(kind as EntryKind)) throw new JournalInputError(`entries[${index}].kind must be one of ${ENTRY_KINDS.join(', ')}, got ${JSON.stringify(kind)}.`);
    if (typeof at !== 'number' || !Number.isFinite(at)) throw new JournalInputError(`entries[${index}].at must be a time in ms.`);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new JournalInputError(`entries[${index}].body must be an object.`);
  }
  const { status, dedupeKey } = (options ?? {}) as { status?: unknown; dedupeKey?: unknown };
  if (typeof status !== 'string' || status === '') throw new JournalInputError('An append names the stream\'s status after it.');
  if (dedupeKey !== undefined && (typeof dedupeKey !== 'string' || dedupeKey === '')) throw new JournalInputError('dedupeKey must be a non-empty string.');
}

/** Whether a stream's head (undefined: none) is what an append expects. */
export function meets(head: { seq: number; lastKey: string | null } | undefined, expected: Expected): boolean {
  if (typeof expected === 'number') return (head?.seq ?? 0) === expected;
  return expected.after === null ? head === undefined || head.seq === 0 : head?.lastKey === expected.after;
}

/**
 * The stored form of an entry: its JSON text and a checksum of it (bit rot and torn writes show as a mismatch).
 * `body`: the body already encoded as JSON, when the caller has it.
 */
export function encodeEntry(stream: string, seq: number, entry: NewEntry, body?: string): { text: string; crc: number } {
  const text = `{"v":${JOURNAL_FORMAT},"stream":${JSON.stringify(stream)},"seq":${seq},"kind":${JSON.stringify(entry.kind)},"at":${JSON.stringify(entry.at)},"body":${body ?? JSON.stringify(entry.body)}}`;
  return { text, crc: crc32(text) };
}

/** Checks a read's first sequence number (a whole number ≥ 1). */
export function checkFromSeq(fromSeq: unknown): void {
  if (typeof fromSeq !== 'number' || !Number.isInteger(fromSeq) || fromSeq < 1) throw new JournalInputError(`fromSeq must be a whole number ≥ 1, got ${JSON.stringify(fromSeq)}.`);
}

/** Reads a stored entry back, checking its checksum, its place in the stream and its format. */
export function decodeEntry(stream: string, seq: number, text: string, crc: number | undefined): JournalEntry {
  if (crc !== undefined && crc32(text) !== crc) throw new JournalEntryError('JOURNAL_CORRUPT', stream, seq, 'its checksum does not match (the entry is damaged).');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new JournalEntryError('JOURNAL_CORRUPT', stream, seq, 'it is not JSON.');
  }
  const entry = parsed as Partial<JournalEntry> | null;
  if (typeof entry !== 'object' || entry === null) throw new JournalEntryError('JOURNAL_CORRUPT', stream, seq, 'it is not an object.');
  if (entry.v !== JOURNAL_FORMAT) throw new JournalEntryError('JOURNAL_UNSUPPORTED', stream, seq, `format version ${JSON.stringify(entry.v)} is not one this kernel reads (${JOURNAL_FORMAT}).`);
  if (entry.stream !== stream || entry.seq !== seq) throw new JournalEntryError('JOURNAL_CORRUPT', stream, seq, `it says it is entry ${JSON.stringify(entry.seq)} of ${JSON.stringify(entry.stream)}.`);
  if (!ENTRY_KINDS.includes(entry.kind as EntryKind)) throw new JournalEntryError('JOURNAL_UNSUPPORTED', stream, seq, `kind ${JSON.stringify(entry.kind)} is unknown.`);
  if (typeof entry.at !== 'number' || typeof entry.body !== 'object' || entry.body === null) throw new JournalEntryError('JOURNAL_CORRUPT', stream, seq, 'it has no time or no body.');
  return entry as JournalEntry;
}

/** Which settled streams a retention policy drops: by age, then oldest first beyond the byte budget. */
export function retentionVictims(heads: readonly StreamHead[], policy: RetentionPolicy): string[] {
  const now = policy.now ?? Date.now();
  const settled = heads.filter((h) => h.settled).sort((a, b) => a.updatedAt - b.updatedAt);
  const victims = new Set<string>();
  if (policy.maxAgeMs !== undefined) for (const h of settled) if (now - h.updatedAt > policy.maxAgeMs) victims.add(h.stream);
  if (policy.maxBytes !== undefined) {
    let total = heads.reduce((sum, h) => sum + (victims.has(h.stream) ? 0 : h.bytes), 0);
    for (const h of settled) {
      if (total <= policy.maxBytes) break;
      if (victims.has(h.stream)) continue;
      victims.add(h.stream);
      total -= h.bytes;
    }
  }
  return [...victims];
}

export function checkRetention(policy: unknown): RetentionPolicy {
  if (typeof policy !== 'object' || policy === null) throw new JournalInputError('A retention policy is { maxAgeMs?, maxBytes? }.');
  const { maxAgeMs, maxBytes } = policy as RetentionPolicy;
  for (const [name, value] of [['maxAgeMs', maxAgeMs], ['maxBytes', maxBytes]] as const) {
    if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0)) throw new JournalInputError(`retention.${name} must be a number ≥ 0.`);
  }
  return policy;
}

/** A stream's entries as JSON Lines (one entry per line), what `forge-kernel journal export` writes. */
export function toJsonLines(entries: readonly JournalEntry[]): string {
  return entries.map((entry) => `${JSON.stringify(entry)}\n`).join('');
}

/**
 * Reads an export back: one stream's entries, checked line by line (format, order, kind). A bad line is a
 * JournalEntryError naming the stream and the sequence number it should have had.
 */
export function fromJsonLines(text: string): { stream: string; entries: JournalEntry[] } {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  if (lines.length === 0) throw new JournalInputError('The export holds no entries.');
  let stream: string | undefined;
  const entries = lines.map((line, index) => {
    if (stream === undefined) {
      try {
        const first = JSON.parse(line) as { stream?: unknown };
        stream = typeof first.stream === 'string' ? first.stream : undefined;
      } catch {
        // Reported below with the line's place.
      }
      if (stream === undefined) throw new JournalEntryError('JOURNAL_CORRUPT', '(export)', 1, 'the first line is not a journal entry.');
      streamType(stream);
    }
    return decodeEntry(stream, index + 1, line, undefined);
  });
  return { stream: stream!, entries };
}
