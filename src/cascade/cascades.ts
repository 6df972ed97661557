import { randomUUID } from 'node:crypto';
import { nanoid } from 'nanoid';
import { createActor, type Actor, type ActorOptions } from 'xstate';
import { cascadeMachine, type CascadeCounter, type CascadeInput } from '../../actors/cascade.ts';
import { ForgeError } from '../errors.ts';
import type { ActorCatalog } from '../inspect/catalog.ts';
import { JournalUnavailableError, type EntryBodies, type Journal, type NewEntry } from '../journal/journal.ts';
import type { Logger } from '../logger.ts';
import type { ChainRecord, Store } from '../store/store.ts';

/** Hops a chain may take when its start names no limit. */
export const DEFAULT_MAX_HOPS = 5;
/** How long a chain lives when its start names no TTL (ms). */
export const DEFAULT_CHAIN_TTL_MS = 60_000;
/** Live chains at most, by default: past it `start` is refused. */
export const DEFAULT_MAX_LIVE_CHAINS = 10_000;

/** Ended chains `get` still answers for (the most recent). */
const ENDED_CHAINS_KEPT = 1_000;

export class CascadeError extends ForgeError {
  constructor(code: 'CASCADE_CYCLE' | 'CASCADE_HOP_LIMIT' | 'CASCADE_NOT_ACTIVE' | 'CASCADE_NOT_FOUND' | 'CASCADE_LIMIT' | 'INVALID_INPUT', message: string, details: Record<string, unknown> = {}) {
    super(code, message, { details });
  }
}

export interface CascadeOptions {
  store: Store;
  logger: Logger;
  maxLiveChains?: number;
  /** Where the chain actors are listed for the inspector. */
  catalog?: ActorCatalog;
  /** The clock of the chains' TTL timers (tests pass a SimulatedClock). */
  clock?: ActorOptions<typeof cascadeMachine>['clock'];
  /** The time source for timestamps and deadlines (default Date.now). */
  now?: () => number;
  /** Chains are also journaled here (started, each hop, ended), for `forge-kernel journal show <chainId>`. */
  journal?: Journal;
  /**
   * The journal is the chains' record and the store a projection of it (written behind by the kernel's projector):
   * a chain's start waits for its journal, not the store; hops and ends are journaled only; `restore()` folds the
   * journal. Needs `journal`.
   */
  storeBehind?: boolean;
}

/** What callers see of a chain: its stored record (a live chain always has a deadline). */
export type CascadeView = ChainRecord & { expiresAt: number };

/**
 * The live cascade chains, each an actor (flat root actors, one per chain). `propagate` validates before it
 * mutates: a cycle or a hop past the limit is refused with a typed error and the chain is unchanged. Chains and
 * hops are persisted through the store; `restore()` reloads active chains with their TTL re-armed.
 */
export class CascadeManager {
  readonly #chains = new Map<string, Actor<typeof cascadeMachine>>();
  /** Chains that ended lately, by id, oldest first: `get` still answers for them. */
  readonly #ended = new Map<string, CascadeView>();
  /** One child logger per chain, made once: a pino child per log line would cost more than the hop. */
  readonly #loggers = new WeakMap<Actor<typeof cascadeMachine>, Logger>();
  readonly #options: CascadeOptions;
  readonly #now: () => number;
  /** Per journaled chain, its appends in order: each resolves with the key of the chain's last append. */
  readonly #journalWrites = new Map<string, Promise<string | null>>();

  constructor(options: CascadeOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Starts a chain from `source` (an overlay or the kernel) for an insight type. */
  async start(source: string, insightType: string, options: { maxHops?: number; ttlMs?: number; correlationId?: string } = {}): Promise<CascadeView> {
    if (typeof source !== 'string' || source === '' || typeof insightType !== 'string' || insightType === '') {
      throw new CascadeError('INVALID_INPUT', 'A cascade needs a source and an insight type.');
    }
    const maxHops = options.maxHops ?? DEFAULT_MAX_HOPS;
    const ttlMs = options.ttlMs ?? DEFAULT_CHAIN_TTL_MS;
    if (!Number.isInteger(maxHops) || maxHops < 1 || !Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new CascadeError('INVALID_INPUT', 'maxHops must be a whole number ≥ 1 and ttlMs a positive number.', { maxHops, ttlMs });
    }
    // Completed and expired chains leave the map, so its size is the live count (O(1) per start).
    const live = this.#chains.size;
    if (live >= (this.#options.maxLiveChains ?? DEFAULT_MAX_LIVE_CHAINS)) {
      throw new CascadeError('CASCADE_LIMIT', `${live} cascade chains are live, the limit: complete some or raise maxLiveChains.`, { live });
    }
    const id = `csc_${nanoid(12)}`;
    const actor = this.#spawn({ id, source, insightType, correlationId: options.correlationId ?? id, maxHops, createdAt: this.#now(), ttlMs });
    const journaled = this.#journal(id, { kind: 'chain.started', at: this.#now(), body: { chain: { ...this.#record(actor) } } }, 'active');
    if (this.#behind) {
      // The chain's journal is its record: the start is acknowledged once journaled (Neo4j follows behind).
      if ((await journaled) === null) {
        this.#forget(id);
        throw new JournalUnavailableError(`Cascade ${id} could not be journaled: it was not started.`);
      }
    } else await this.#persist(actor);
    this.#log(actor).info({ insightType, maxHops, ttlMs }, 'cascade started');
    return this.#view(actor);
  }

  /** Extends a chain by one hop to `to`; refuses (changing nothing) a cycle, a hop past the limit, or a closed chain. */
  propagate(chainId: string, to: string): Promise<CascadeView> {
    // The executor turns a refusal thrown by the checks into a rejection.
    return new Promise((resolve) => resolve(this.#propagate(chainId, to)));
  }

  #propagate(chainId: string, to: string): CascadeView {
    const actor = this.#require(chainId);
    const { value, context } = actor.getSnapshot();
    if (typeof to !== 'string' || to === '') throw new CascadeError('INVALID_INPUT', 'propagate needs the overlay the chain reaches.');
    if (value !== 'active') throw new CascadeError('CASCADE_NOT_ACTIVE', `Cascade ${chainId} is ${value}.`, { chainId, status: value });
    if (context.visited.includes(to)) {
      this.#stop(actor, 'cycle');
      throw new CascadeError('CASCADE_CYCLE', `Cascade ${chainId} already reached "${to}" (${context.visited.join(' → ')}): propagating again would loop, so the chain stopped.`, { chainId, to, visited: context.visited, status: 'stopped' });
    }
    if (context.hops >= context.maxHops) {
      this.#stop(actor, 'hop-limit');
      throw new CascadeError('CASCADE_HOP_LIMIT', `Cascade ${chainId} took its ${context.maxHops} hops, so the chain stopped.`, { chainId, hops: context.hops, maxHops: context.maxHops, status: 'stopped' });
    }
    const from = context.visited[context.visited.length - 1] ?? context.source;
    actor.send({ type: 'PROPAGATE', to, at: this.#now() });
    const after = actor.getSnapshot().context;
    // A hop is one write-behind record; the chain's node is written on start, completion and expiry, and a restore
    // rebuilds hops and visited overlays from the hop records.
    const hop = { chainId, index: after.hops, from, to, eventType: after.insightType, at: this.#now() };
    if (!this.#behind) this.#options.store.appendHop(hop);
    void this.#journal(chainId, { kind: 'chain.hop', at: hop.at, body: { hop: { ...hop } } }, 'active');
    this.#log(actor).debug({ from, to, hops: after.hops }, 'cascade hop');
    return this.#view(actor);
  }

  /**
   * Stops a live chain a guard refused elsewhere (the cluster's shared guard) for a cycle or its spent hop budget;
   * a chain that is not live here is left alone.
   */
  halt(chainId: string, reason: 'cycle' | 'hop-limit'): void {
    const actor = this.#chains.get(chainId);
    if (actor?.getSnapshot().value === 'active') this.#stop(actor, reason);
  }

  /** Ends a chain its guard refused (a cycle, the hop budget): it stops now, not at its TTL, and says why. */
  #stop(actor: Actor<typeof cascadeMachine>, reason: 'cycle' | 'hop-limit'): void {
    actor.send({ type: 'STOP', reason });
    this.#log(actor).info({ hops: actor.getSnapshot().context.hops, reason }, 'cascade stopped by its guard');
    this.#forget(actor.getSnapshot().context.id);
    void this.#persist(actor).catch((err: unknown) => this.#options.logger.error({ err, cascadeId: actor.getSnapshot().context.id }, 'could not persist a stopped chain'));
  }

  /**
   * Journals an overlay call a chain caused (for a replay of the chain), with the chain's status now (a call that
   * ends after its chain keeps the chain ended); no-op for chains this process does not know.
   */
  recordCall(chainId: string, call: EntryBodies['chain.call']): void {
    const status = this.#chains.get(chainId)?.getSnapshot().value ?? this.#ended.get(chainId)?.status;
    if (status === undefined) return;
    void this.#journal(chainId, { kind: 'chain.call', at: this.#now(), body: call }, status);
  }

  /** Counts an insight, an action (an overlay call the chain caused) or an error in a live chain; no-op for others. */
  count(chainId: string, what: CascadeCounter): void {
    const actor = this.#chains.get(chainId);
    if (actor?.getSnapshot().value === 'active') actor.send({ type: 'COUNT', what });
  }

  async complete(chainId: string): Promise<CascadeView> {
    const actor = this.#require(chainId);
    if (actor.getSnapshot().value !== 'active') throw new CascadeError('CASCADE_NOT_ACTIVE', `Cascade ${chainId} is ${actor.getSnapshot().value}.`, { chainId });
    actor.send({ type: 'COMPLETE' });
    await this.#persist(actor);
    this.#log(actor).info({ hops: actor.getSnapshot().context.hops }, 'cascade completed');
    this.#forget(chainId);
    return this.#view(actor);
  }

  /** A live chain, or one that ended lately (completed, expired, stopped: the last 1,000), as it ended. */
  get(chainId: string): CascadeView | undefined {
    const actor = this.#chains.get(chainId);
    return actor === undefined ? this.#ended.get(chainId) : this.#view(actor);
  }

  active(): CascadeView[] {
    return [...this.#chains.values()].filter((a) => a.getSnapshot().value === 'active').map((a) => this.#view(a));
  }

  /** Reloads the active chains from the store (hops from their hop records), re-arming each TTL from its deadline. */
  async restore(): Promise<number> {
    const records = this.#behind ? await this.#fromJournal() : await this.#fromStore();
    for (const record of records) {
      if (this.#chains.has(record.id)) continue;
      const actor = this.#spawn({
        id: record.id,
        source: record.source,
        insightType: record.insightType,
        correlationId: record.correlationId,
        maxHops: record.maxHops,
        createdAt: record.createdAt,
        ttlMs: (record.expiresAt ?? record.createdAt) - record.createdAt,
        hops: record.hops,
        visited: record.visited,
        insights: record.insights,
        actions: record.actions,
        errors: record.errors,
      });
      actor.send({ type: 'REARM', now: this.#now() });
    }
    return records.length;
  }

  /** The active chains as the store holds them, hops from their hop records. */
  async #fromStore(): Promise<ChainRecord[]> {
    await this.#options.store.flush();
    const records: ChainRecord[] = [];
    for (const stored of await this.#options.store.loadChains({ status: 'active' })) {
      const hops = await this.#options.store.loadHops(stored.id);
      records.push({ ...stored, hops: hops.length, visited: [stored.source, ...hops.map((h) => h.to)] });
    }
    return records;
  }

  /**
   * The active chains as their journals tell them: the last record written (its start, or a checkpoint of its
   * counts), then the hops after it. A chain whose journal does not read is logged and left.
   */
  async #fromJournal(): Promise<ChainRecord[]> {
    const journal = this.#options.journal!;
    const records: ChainRecord[] = [];
    for (const head of await journal.list({ type: 'chain', statuses: ['active'] })) {
      try {
        let record: ChainRecord | undefined;
        for (const entry of await journal.read(head.stream)) {
          if (entry.kind === 'chain.started' || entry.kind === 'chain.saved') record = { ...(entry.body.chain as unknown as ChainRecord) };
          else if (entry.kind === 'chain.hop' && record !== undefined) {
            const hop = entry.body.hop as { index?: unknown; to?: unknown };
            if (typeof hop.index === 'number' && hop.index > record.hops && typeof hop.to === 'string') record = { ...record, hops: hop.index, visited: [...record.visited, hop.to] };
          }
        }
        if (record?.status === 'active') records.push(record);
      } catch (err) {
        this.#options.logger.error({ err, cascadeId: head.stream }, 'a chain\'s journal cannot be read: the chain is not restored');
      }
    }
    return records;
  }

  /** Writes the chains' current state (hop counts) to the store — or its journal — ; the kernel calls it on stop. */
  async persistAll(): Promise<void> {
    await Promise.all([...this.#chains.values()].map((actor) => this.#persist(actor)));
  }

  /** Stops every chain actor (their state is already in the store). */
  stop(): void {
    for (const [id, actor] of this.#chains) {
      this.#options.catalog?.remove(id);
      actor.stop();
    }
    this.#chains.clear();
  }

  #forget(chainId: string): void {
    const actor = this.#chains.get(chainId);
    if (actor !== undefined) {
      this.#ended.set(chainId, this.#view(actor));
      if (this.#ended.size > ENDED_CHAINS_KEPT) this.#ended.delete(this.#ended.keys().next().value!);
    }
    this.#chains.delete(chainId);
    this.#options.catalog?.remove(chainId);
  }

  #spawn(input: CascadeInput): Actor<typeof cascadeMachine> {
    const actor = createActor(cascadeMachine, { input, ...(this.#options.clock === undefined ? {} : { clock: this.#options.clock }) });
    actor.on('expired', () => {
      this.#log(actor).info({ hops: actor.getSnapshot().context.hops }, 'cascade expired');
      this.#forget(input.id);
      void this.#persist(actor).catch((err: unknown) => this.#options.logger.error({ err, cascadeId: input.id }, 'could not persist an expired chain'));
    });
    this.#chains.set(input.id, actor);
    this.#options.catalog?.add({
      id: input.id,
      kind: 'cascade',
      label: `${input.insightType} from ${input.source}`,
      actor,
      correlationId: input.correlationId,
      details: () => {
        const { context } = actor.getSnapshot();
        return { source: context.source, insightType: context.insightType, hops: context.hops, maxHops: context.maxHops, visited: context.visited, expiresAt: context.expiresAt, insights: context.insights, actions: context.actions, errors: context.errors, endReason: context.endReason };
      },
    });
    actor.start();
    return actor;
  }

  #require(chainId: string): Actor<typeof cascadeMachine> {
    const actor = this.#chains.get(chainId);
    if (actor === undefined) throw new CascadeError('CASCADE_NOT_FOUND', `No live cascade "${chainId}".`, { chainId });
    return actor;
  }

  #record(actor: Actor<typeof cascadeMachine>): ChainRecord {
    const { value, context } = actor.getSnapshot();
    return {
      id: context.id,
      source: context.source,
      insightType: context.insightType,
      status: value,
      hops: context.hops,
      maxHops: context.maxHops,
      visited: context.visited,
      createdAt: context.createdAt,
      expiresAt: context.expiresAt,
      correlationId: context.correlationId,
      insights: context.insights,
      actions: context.actions,
      errors: context.errors,
      endReason: context.endReason,
    };
  }

  #persist(actor: Actor<typeof cascadeMachine>): Promise<void> {
    const record = this.#record(actor);
    if (this.#behind) {
      // A live chain's counts are checkpointed (a stop); an ended one's end is journaled. The store follows.
      const entry: NewEntry = record.status === 'active' ? { kind: 'chain.saved', at: this.#now(), body: { chain: { ...record } } } : { kind: 'chain.ended', at: this.#now(), body: { status: record.status, chain: { ...record } } };
      return this.#journal(record.id, entry, record.status).then(() => undefined);
    }
    if (record.status !== 'active') void this.#journal(record.id, { kind: 'chain.ended', at: this.#now(), body: { status: record.status, chain: { ...record } } }, record.status);
    return this.#options.store.saveChain(record);
  }

  get #behind(): boolean {
    return this.#options.storeBehind === true && this.#options.journal !== undefined;
  }

  /**
   * Appends to the chain's journal, after its earlier appends (write-behind, like its hops in the store: a failure is
   * logged, never the chain's problem). A chain this process did not start continues from its journal's head.
   */
  #journal(chainId: string, entry: NewEntry, status: string): Promise<string | null> {
    const journal = this.#options.journal;
    if (journal === undefined) return Promise.resolve(null);
    const ended = status !== 'active';
    const previous = this.#journalWrites.get(chainId) ?? journal.head(chainId).then((head) => head?.lastKey ?? null, () => null);
    const next = previous.then(async (after) => {
      const key = randomUUID();
      try {
        const seq = await journal.append(chainId, { after }, [entry], { status, settled: ended, dedupeKey: key, lazy: !ended });
        if (seq !== undefined) return key;
        this.#options.logger.warn({ cascadeId: chainId }, 'a chain\'s journal was written by another process: this entry was not journaled');
      } catch (err) {
        this.#options.logger.warn({ err, cascadeId: chainId }, 'a chain entry could not be journaled');
      }
      return after;
    });
    this.#journalWrites.set(chainId, next);
    if (ended) void next.then(() => this.#journalWrites.get(chainId) === next && this.#journalWrites.delete(chainId));
    // The key of this entry once written; null when it was not.
    return next.then(async (key) => (key !== null && key !== (await previous) ? key : null));
  }

  /** Resolves once every chain entry handed to the journal so far is written (or failed). */
  async journaled(): Promise<void> {
    await Promise.all([...this.#journalWrites.values()]);
  }

  #view(actor: Actor<typeof cascadeMachine>): CascadeView {
    const record = this.#record(actor);
    return { ...record, visited: [...record.visited], expiresAt: record.expiresAt ?? record.createdAt };
  }

  #log(actor: Actor<typeof cascadeMachine>): Logger {
    let logger = this.#loggers.get(actor);
    if (logger === undefined) {
      const { id, correlationId } = actor.getSnapshot().context;
      logger = this.#options.logger.child({ cascadeId: id, correlationId });
      this.#loggers.set(actor, logger);
    }
    return logger;
  }
}
