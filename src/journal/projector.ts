import type { PipelineContext } from '../../actors/pipeline.ts';
import type { Logger } from '../logger.ts';
import { fuelByOverlay } from '../pipeline/config.ts';
import { foldRun } from '../pipeline/run-records.ts';
import type { ChainRecord, HopRecord, Store } from '../store/store.ts';
import { auditEntry, auditFromSummary, type AuditSummary } from '../pipeline/audit.ts';
import { ForgeError } from '../errors.ts';
import { JournalUnavailableError, type FedAppend, type Journal } from './journal.ts';

/** A flush slower than this shows in the status (ms). */
const SLOW_FLUSH_MS = 1_000;

type FeedJournal = Journal & Required<Pick<Journal, 'feed' | 'lastPosition'>>;
type PositionStore = Store & Required<Pick<Store, 'loadProjection' | 'saveProjection'>>;

export interface ProjectionStatus {
  name: string;
  /** The journal position projected up to. */
  position: number;
  /** The journal's last position, as of the last look. */
  last: number;
  /** Feed items between the two (0: caught up). */
  behind: number;
  /** How long the oldest item not projected yet has waited (ms; 0 when caught up). */
  lagMs: number;
  /** Audit entries written since this process started projecting. */
  projected: number;
  /** `standby`: another process of the cluster projects (its figures are not this process's). */
  role: 'projecting' | 'standby';
  /** The last failure (the store down, …) while it lasts; null once a pass succeeds. */
  error: string | null;
}

export interface ProjectorOptions {
  journal: Journal;
  store: Store;
  logger: Logger;
  /** The projection's name (its position is kept under it in the store). Default `audit`. */
  name?: string;
  /** How often it looks for new appends once caught up (ms, default 200). */
  intervalMs?: number;
  /** Feed items per pass (default 500). */
  batch?: number;
  /**
   * In a cluster: whether this process is the one projecting now (a lease it keeps while it lives); the others stand
   * by, and one of them takes over when it goes. Without it, this process projects.
   */
  leader?: () => Promise<boolean>;
}

/**
 * Writes the store (Neo4j) behind the journal: it follows the journal's feed from the position it stored, writes an
 * audit entry for each run the journal says completed and each cascade chain's record and hops, and stores its new
 * position once those writes are durable. Runs and chains never wait for the store: when it is down they go on, the
 * projector waits (retrying), and it catches up when the store is back — from its stored position after a crash,
 * writing nothing twice (audit entries are keyed by run, chains by id, hops by chain and index). Its lag is
 * `status()`.
 */
export class JournalProjector {
  readonly #journal: FeedJournal;
  readonly #store: PositionStore;
  readonly #logger: Logger;
  readonly #name: string;
  readonly #intervalMs: number;
  readonly #batch: number;
  readonly #leader: (() => Promise<boolean>) | undefined;
  #standby = false;
  #position = 0;
  /** Whether the stored position has been read (and checked against the journal). */
  #loaded = false;
  #last = 0;
  #oldestWaiting: number | null = null;
  #projected = 0;
  #error: string | null = null;
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<void> | undefined;
  #stopped = true;
  readonly #caughtUp: (() => void)[] = [];

  constructor(options: ProjectorOptions) {
    const { journal, store } = options;
    if (journal.feed === undefined || journal.lastPosition === undefined) throw new ForgeError('INVALID_CONFIG', 'The audit projection needs a journal with a feed.');
    if (store.loadProjection === undefined || store.saveProjection === undefined) throw new ForgeError('INVALID_CONFIG', 'The audit projection needs a store that keeps projection positions.');
    this.#journal = journal as FeedJournal;
    this.#store = store as PositionStore;
    this.#logger = options.logger;
    this.#name = options.name ?? 'audit';
    this.#intervalMs = options.intervalMs ?? 200;
    this.#batch = options.batch ?? 500;
    this.#leader = options.leader;
  }

  /** Starts following the journal from the stored position (a store that cannot say yet is asked again later). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stops after the pass under way, if it ends within `waitMs` (a pass stuck on a store that is down is left). */
  async stop(waitMs = 2_000): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    for (const resolve of this.#caughtUp.splice(0)) resolve();
    const pass = this.#pass;
    if (pass === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([pass, new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
  }

  status(): ProjectionStatus {
    const behind = Math.max(0, this.#last - this.#position);
    return { name: this.#name, position: this.#position, last: this.#last, behind, lagMs: behind === 0 || this.#oldestWaiting === null ? 0 : Math.max(0, Date.now() - this.#oldestWaiting), projected: this.#projected, error: this.#error, role: this.#standby ? 'standby' : 'projecting' };
  }

  /** Resolves once everything journaled before this call is projected (for tests and orderly handovers). */
  async caughtUp(): Promise<void> {
    const target = await this.#journal.lastPosition();
    while (!this.#loaded || this.#position < target) {
      if (this.#stopped) throw new ForgeError('PROJECTION_STOPPED', `The audit projection is not running (at ${this.#position} of ${target}).`);
      if (this.#standby) throw new ForgeError('PROJECTION_STANDBY', 'Another process of the cluster projects the audit trail: this one stands by.');
      await new Promise<void>((resolve) => {
        this.#caughtUp.push(resolve);
        this.#schedule(0);
      });
    }
  }

  #schedule(delayMs: number): void {
    if (this.#stopped || this.#pass !== undefined) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#pass = this.#run().then((full) => {
        this.#pass = undefined;
        for (const resolve of this.#caughtUp.splice(0)) resolve();
        // A full batch means more is waiting: on at once; otherwise look again after the interval.
        this.#schedule(full ? 0 : this.#intervalMs);
      });
    }, delayMs);
    this.#timer.unref();
  }

  /** One pass; true when it took a full batch (more may be waiting). */
  async #run(): Promise<boolean> {
    try {
      if (this.#leader !== undefined) {
        this.#standby = !(await this.#leader());
        if (this.#standby) {
          // Another process projects: when it goes, its lease lapses and this one reads the stored position afresh.
          this.#loaded = false;
          return false;
        }
      }
      if (!this.#loaded) {
        const stored = await this.#store.loadProjection(this.#name);
        const last = await this.#journal.lastPosition();
        // A position past the journal's end belongs to another journal (a new file, a recreated stream): from the start.
        if (stored > last) this.#logger.warn({ projection: this.#name, stored, last }, 'the stored projection position is past the journal\'s end (another journal?): projecting it from the start');
        this.#position = stored > last ? 0 : stored;
        this.#loaded = true;
      }
      // The end is read before the feed: once the feed is read to its end, the position may move up to it (positions
      // left by pruned appends are never fed).
      const end = await this.#journal.lastPosition();
      const items = await this.#journal.feed(this.#position, this.#batch);
      const full = items.length === this.#batch;
      this.#last = Math.max(end, items.at(-1)?.position ?? 0);
      this.#oldestWaiting = items[0]?.entries[0]?.at ?? (items.length > 0 ? Date.now() : null);
      let wrote = 0;
      let audits = 0;
      for (const item of items) {
        const done = await this.#project(item);
        wrote += done.writes;
        audits += done.audits;
      }
      // The position moves only once what it covers is durable: a crash before this replays the batch (idempotently).
      if (wrote > 0) await this.#flushed(wrote);
      const next = Math.max(items.at(-1)?.position ?? 0, full ? 0 : end);
      if (next > this.#position) {
        await this.#store.saveProjection(this.#name, next);
        this.#position = next;
        this.#projected += audits;
        const [following] = full ? await this.#journal.feed(next, 1) : [];
        this.#oldestWaiting = following?.entries[0]?.at ?? null;
      }
      if (this.#error !== null) this.#logger.info({ projection: this.#name, position: this.#position }, 'the audit projection is writing again');
      this.#error = null;
      return full;
    } catch (error) {
      if (this.#error === null) this.#logger.warn({ err: error, projection: this.#name, position: this.#position }, 'the audit projection cannot write to the store: runs go on, and it catches up once the store is back');
      this.#error = (error as Error).message;
      return false;
    }
  }

  /**
   * Waits for the store to take the batch's entries (its write-behind retries through an outage for as long as it
   * lasts); meanwhile the status says what it waits for.
   */
  async #flushed(entries: number): Promise<void> {
    const slow = setTimeout(() => {
      this.#error = `the store is not taking writes: ${entries} audit entr${entries === 1 ? 'y waits' : 'ies wait'}`;
      this.#logger.warn({ projection: this.#name, position: this.#position, entries }, 'the audit projection waits for the store: runs go on, and it catches up once the store is back');
    }, SLOW_FLUSH_MS);
    try {
      await this.#store.flush();
    } finally {
      clearTimeout(slow);
    }
  }

  /** Writes what one feed item asks for; returns the writes it buffered in the store (flushed before the position moves). */
  async #project(item: FedAppend): Promise<{ writes: number; audits: number }> {
    if (item.damaged !== undefined) {
      this.#logger.error({ stream: item.stream, position: item.position, problem: item.damaged }, 'a journal append the projection follows does not read back: skipped');
      return { writes: 0, audits: 0 };
    }
    let wrote = 0;
    let audits = 0;
    for (const entry of item.entries) {
      // A chain's record (its start, a checkpoint of its counts, its end) and its hops.
      if (entry.kind === 'chain.started' || entry.kind === 'chain.saved' || entry.kind === 'chain.ended') {
        await this.#store.saveChain(entry.body.chain as unknown as ChainRecord);
        continue;
      }
      if (entry.kind === 'chain.hop') {
        this.#store.appendHop(entry.body.hop as unknown as HopRecord);
        wrote++;
        continue;
      }
      if (entry.kind !== 'run.settled' || entry.body.status !== 'completed') continue;
      const summary = entry.body.audit as AuditSummary | undefined;
      if (summary !== undefined) {
        this.#store.appendAudit(auditFromSummary(item.stream, summary, entry.at));
        wrote++;
        audits++;
        continue;
      }
      // A settle journaled before it carried its summary: the run's journal is folded for it.
      try {
        const context = (foldRun(item.stream, await this.#journal.read(item.stream)) as unknown as { context: PipelineContext }).context;
        this.#store.appendAudit(auditEntry(item.stream, { data: context.data, decision: context.decision, warnings: context.warnings, fuel: fuelByOverlay(context.outcomes) }, entry.at));
        wrote++;
        audits++;
      } catch (error) {
        // A run whose journal cannot be folded (damaged, or pruned meanwhile) has no audit entry to write.
        if (error instanceof JournalUnavailableError) throw error;
        this.#logger.error({ err: error, runId: item.stream }, 'a completed run\'s journal cannot be folded: no audit entry projected for it');
      }
    }
    return { writes: wrote, audits };
  }
}
