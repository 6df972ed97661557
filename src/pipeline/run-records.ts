import { randomUUID } from 'node:crypto';
import { createActor, type Snapshot } from 'xstate';
import { pipelineMachine, type PipelineEvent, type PipelineInput } from '../../actors/pipeline.ts';
import { JournalEntryError, type Expected, type Journal, type JournalEntry, type NewEntry } from '../journal/journal.ts';
import type { Logger } from '../logger.ts';
import type { RunSnapshot, Store } from '../store/store.ts';
import { RUN_SNAPSHOT_VERSION, type StoredVersion } from './run.ts';

/** How a run's record says it ended; such a run is never driven again. */
export const ENDED_STATUSES: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled']);
/** Statuses of runs that are not over: what a restore or a takeover looks at. */
const OPEN_STATUSES = ['queued', 'running', 'paused', 'awaitingDecision'] as const;

/**
 * Where runs are kept so they outlive a process, and what makes one writer per run: either the store's snapshots
 * (compare and set on a version) or the journal (appends conditional on the run's last sequence number).
 * `entries` are what happened since the last save (the journal keeps them; the store keeps the snapshot).
 */
export interface RunRecords {
  readonly kind: 'store' | 'journal';
  /** Whether every process of a cluster reads and writes these records (Neo4j, a JetStream journal). */
  readonly shared: boolean;
  /** `token`: the append's key (the same on every retry of one write, so a retry of a write that landed is recognised). */
  save(runId: string, status: string, snapshot: Snapshot<unknown>, entries: readonly NewEntry[], token?: string): Promise<StoredVersion>;
  replace(runId: string, expected: StoredVersion, status: string, snapshot: Snapshot<unknown>, entries: readonly NewEntry[], token?: string): Promise<StoredVersion | undefined>;
  load(runId: string): Promise<RunSnapshot | undefined>;
  /** Runs not over (queued, running, paused, awaiting a decision); `skip` leaves out runs by id and status before they are read, where that saves reading them. */
  list(skip?: (runId: string, status: string) => boolean): Promise<RunSnapshot[]>;
  /** Removes an ended run's record if it is still `expected` (the store); the journal keeps it for replay. */
  remove(runId: string, expected?: StoredVersion): Promise<boolean>;
  /**
   * Progress nobody waits for (a phase's checkpoint), appended after `expected` without waiting for it to land: the
   * version it will have is known at once, so the run goes on and the next save chains on it. `landed` says whether it
   * landed (false: another writer got there first). Only where a group commit pays (a journal on disk).
   */
  checkpoint?: (runId: string, expected: StoredVersion, status: string, entries: readonly NewEntry[]) => { next: StoredVersion; landed: Promise<boolean> };
}

/** Whether two versions of a run's record are the same write. */
export function sameVersion(a: StoredVersion, b: StoredVersion): boolean {
  return a.status === b.status && (a.token !== undefined || b.token !== undefined ? a.token === b.token : a.updatedAt === b.updatedAt);
}

/** Runs as snapshots in the store, versioned by the time written (with a random fraction). */
export class StoreRunRecords implements RunRecords {
  readonly kind = 'store' as const;
  readonly shared: boolean;
  readonly #store: Store;
  #lastStamp = 0;

  constructor(store: Store) {
    this.#store = store;
    this.shared = store.kind !== 'memory';
  }

  async save(runId: string, status: string, snapshot: Snapshot<unknown>): Promise<StoredVersion> {
    const updatedAt = this.#stamp();
    await this.#store.saveRunSnapshot({ runId, version: RUN_SNAPSHOT_VERSION, status, snapshot, updatedAt });
    return { status, updatedAt };
  }

  async replace(runId: string, expected: StoredVersion, status: string, snapshot: Snapshot<unknown>): Promise<StoredVersion | undefined> {
    const updatedAt = this.#stamp();
    return (await this.#store.replaceRunSnapshot(expected, { runId, version: RUN_SNAPSHOT_VERSION, status, snapshot, updatedAt })) ? { status, updatedAt } : undefined;
  }

  load(runId: string): Promise<RunSnapshot | undefined> {
    return this.#store.loadRunSnapshot(runId);
  }

  list(): Promise<RunSnapshot[]> {
    return this.#store.listRunSnapshots();
  }

  remove(runId: string, expected?: StoredVersion): Promise<boolean> {
    return this.#store.deleteRunSnapshot(runId, expected);
  }

  /**
   * A snapshot's version: the time in ms with a random fraction, growing within this process. The fraction makes two
   * processes writing in the same millisecond (or with skewed clocks) write different versions, so a stale copy's
   * compare and set cannot match another's write by accident.
   */
  #stamp(): number {
    this.#lastStamp = Math.max(Date.now() + Math.random() * 0.999, this.#lastStamp + 0.001);
    return this.#lastStamp;
  }
}

/**
 * Runs as journal streams: a save appends what happened, conditional on the run's last sequence number (its
 * version), and a run is restored by folding its entries through the pipeline machine. Nothing is removed when a
 * run ends (its journal is its history, for replay); retention drops settled runs.
 */
export class JournalRunRecords implements RunRecords {
  readonly kind = 'journal' as const;
  readonly shared: boolean;
  readonly journal: Journal;
  readonly #logger: Logger;

  constructor(journal: Journal, logger: Logger) {
    this.journal = journal;
    this.#logger = logger;
    this.shared = journal.kind === 'jetstream';
  }

  async save(runId: string, status: string, _snapshot: Snapshot<unknown>, entries: readonly NewEntry[], token = newToken()): Promise<StoredVersion> {
    const seq = await this.journal.append(runId, { after: null }, entries, { status, settled: ENDED_STATUSES.has(status), dedupeKey: token });
    if (seq === undefined) throw new JournalEntryError('JOURNAL_CORRUPT', runId, 1, 'the run\'s journal exists already (run ids are unique): refusing to write a second start.');
    return { status, updatedAt: seq, token };
  }

  async replace(runId: string, expected: StoredVersion, status: string, _snapshot: Snapshot<unknown>, entries: readonly NewEntry[], token = newToken()): Promise<StoredVersion | undefined> {
    if (entries.length === 0) {
      const head = await this.journal.head(runId);
      const current = head !== undefined && (expected.token === undefined ? head.seq === expected.updatedAt : head.lastKey === expected.token);
      return current ? expected : undefined;
    }
    const seq = await this.journal.append(runId, expectation(expected), entries, { status, settled: ENDED_STATUSES.has(status), dedupeKey: token });
    return seq === undefined ? undefined : { status, updatedAt: seq, token };
  }

  checkpoint = (runId: string, expected: StoredVersion, status: string, entries: readonly NewEntry[]): { next: StoredVersion; landed: Promise<boolean> } => {
    const token = newToken();
    const landed = this.journal.append(runId, expectation(expected), entries, { status, dedupeKey: token, lazy: true }).then((seq) => seq !== undefined);
    return { next: { status, updatedAt: expected.updatedAt + entries.length, token }, landed };
  };

  async load(runId: string): Promise<RunSnapshot | undefined> {
    // The head (status, last sequence number) and the entries are read apart: read again if an append came between,
    // and give up on a journal whose head and entries disagree for good (entries lost).
    for (let attempt = 1; ; attempt++) {
      const head = await this.journal.head(runId);
      if (head === undefined) return undefined;
      const entries = await this.journal.read(runId);
      const last = entries.at(-1)?.seq ?? 0;
      if (last !== head.seq) {
        if (attempt >= 3) throw new JournalEntryError('JOURNAL_CORRUPT', runId, last + 1, `the run's journal should hold ${head.seq} entries and holds ${last}.`);
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      return { runId, version: RUN_SNAPSHOT_VERSION, status: head.status, snapshot: foldRun(runId, entries), updatedAt: head.seq, ...(head.lastKey === null ? {} : { token: head.lastKey }) };
    }
  }

  /** The open runs; one whose journal cannot be read is logged and left out (the others go on). */
  async list(skip?: (runId: string, status: string) => boolean): Promise<RunSnapshot[]> {
    const records: RunSnapshot[] = [];
    for (const head of await this.journal.list({ type: 'run', statuses: OPEN_STATUSES })) {
      if (skip?.(head.stream, head.status) === true) continue;
      try {
        const record = await this.load(head.stream);
        if (record !== undefined) records.push(record);
      } catch (error) {
        this.#logger.error({ err: error, runId: head.stream }, 'a run\'s journal cannot be read: the run is left where it is');
      }
    }
    return records;
  }

  remove(): Promise<boolean> {
    return Promise.resolve(true);
  }
}

/** A fresh append key: what the run's next append names as the one it comes after. */
function newToken(): string {
  return randomUUID();
}

/** What an append after `version` expects: the key of that append, or (a record without one) its sequence number. */
function expectation(version: StoredVersion): Expected {
  return version.token === undefined ? version.updatedAt : { after: version.token };
}

/** A clock whose timers never fire: a fold only replays what happened (timers are re-armed when the run goes on). */
const STILL_CLOCK = { setTimeout: () => 0, clearTimeout: () => undefined };

/**
 * A run's state from its journal: its actor started from the recorded input, then every recorded event replayed in
 * order. Throws a JournalEntryError naming the entry when the journal does not describe a run.
 */
export function foldRun(runId: string, entries: readonly JournalEntry[]): Snapshot<unknown> {
  const first = entries[0];
  if (first?.kind !== 'run.started') throw new JournalEntryError('JOURNAL_CORRUPT', runId, 1, 'a run\'s journal begins with run.started.');
  const input = first.body.input as unknown as PipelineInput;
  if (typeof input !== 'object' || input === null || input.runId !== runId) throw new JournalEntryError('JOURNAL_CORRUPT', runId, 1, 'run.started does not hold this run\'s input.');
  const actor = createActor(pipelineMachine, { input, clock: STILL_CLOCK });
  actor.start();
  try {
    for (const entry of entries) {
      if (entry.kind !== 'run.event') continue;
      const recorded = entry.body.event as unknown as PipelineEvent & { dataDelta?: true };
      if (typeof recorded !== 'object' || recorded === null || typeof recorded.type !== 'string') throw new JournalEntryError('JOURNAL_CORRUPT', runId, entry.seq, 'run.event holds no event.');
      // A phase's event is journaled with what it changed in the run's data: merged back onto the data so far.
      const event = recorded.dataDelta === true && 'data' in recorded ? { ...recorded, data: { ...actor.getSnapshot().context.data, ...recorded.data } } : recorded;
      actor.send(event);
    }
    return actor.getPersistedSnapshot();
  } finally {
    actor.stop();
  }
}
