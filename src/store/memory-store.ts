import { ForgeError } from '../errors.ts';
import { copy, type AuditEntry, type ChainRecord, type DeadLetterRecord, type HopRecord, type OverlayRegistration, type RunSnapshot, type Store } from './store.ts';

/** A memory store option is malformed. */
export class InvalidStoreOptionError extends ForgeError {
  constructor(problem: string) {
    super('INVALID_CONFIG', `store: { kind: 'memory' }: ${problem}`);
  }
}

/** Audit entries the memory store keeps, unless told otherwise: the oldest go first. */
export const DEFAULT_MEMORY_AUDIT_LIMIT = 10_000;
/** Dead letters the memory store keeps, unless told otherwise (the bus lists 1,000): the oldest go first. */
export const DEFAULT_MEMORY_DEAD_LETTER_LIMIT = 10_000;

export interface MemoryStoreOptions {
  /** Audit entries kept (a positive integer); past it the oldest are dropped, so a long-running kernel stays flat. */
  auditLimit?: number;
  /** Dead letters kept (a positive integer); past it the oldest are dropped, for the same reason. */
  deadLetterLimit?: number;
}

/**
 * The default store: everything in this process's memory (nothing survives a restart; no graph for overlays). Its
 * audit trail is bounded (`auditLimit`): a kernel that settles runs for days must not grow without end.
 */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  readonly #chains = new Map<string, ChainRecord>();
  readonly #hops = new Map<string, HopRecord[]>();
  readonly #runs = new Map<string, RunSnapshot>();
  readonly #overlays = new Map<string, OverlayRegistration>();
  /** A ring of the last `auditLimit` entries; `#auditNext` is where the next one goes once the ring is full. */
  readonly #audit: AuditEntry[] = [];
  /** Where each entry of the ring is, by id. */
  readonly #auditSlots = new Map<string, number>();
  readonly #auditLimit: number;
  #auditNext = 0;
  /** In insertion order (a Map keeps it): the first is the oldest, dropped past `deadLetterLimit`. */
  readonly #deadLetters = new Map<string, DeadLetterRecord>();
  readonly #deadLetterLimit: number;

  constructor(options: MemoryStoreOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new InvalidStoreOptionError('the memory store options must be an object.');
    const positive = (name: string, raw: unknown, fallback: number): number => {
      const value: unknown = raw === undefined ? fallback : raw;
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new InvalidStoreOptionError(`${name} must be a positive integer, got ${JSON.stringify(value)}.`);
      return value;
    };
    this.#auditLimit = positive('auditLimit', options.auditLimit, DEFAULT_MEMORY_AUDIT_LIMIT);
    this.#deadLetterLimit = positive('deadLetterLimit', options.deadLetterLimit, DEFAULT_MEMORY_DEAD_LETTER_LIMIT);
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  saveChain(chain: ChainRecord): Promise<void> {
    this.#chains.set(chain.id, copy(chain));
    return Promise.resolve();
  }

  appendHop(hop: HopRecord): void {
    const hops = this.#hops.get(hop.chainId) ?? [];
    hops.push(copy(hop));
    this.#hops.set(hop.chainId, hops);
  }

  loadChains(filter: { status?: ChainRecord['status'] } = {}): Promise<ChainRecord[]> {
    return Promise.resolve([...this.#chains.values()].filter((c) => filter.status === undefined || c.status === filter.status).map(copy));
  }

  loadHops(chainId: string): Promise<HopRecord[]> {
    return Promise.resolve((this.#hops.get(chainId) ?? []).map(copy));
  }

  saveRunSnapshot(snapshot: RunSnapshot): Promise<void> {
    this.#runs.set(snapshot.runId, copy(snapshot));
    return Promise.resolve();
  }

  loadRunSnapshot(runId: string): Promise<RunSnapshot | undefined> {
    const found = this.#runs.get(runId);
    return Promise.resolve(found === undefined ? undefined : copy(found));
  }

  listRunSnapshots(filter: { status?: string } = {}): Promise<RunSnapshot[]> {
    return Promise.resolve([...this.#runs.values()].filter((r) => filter.status === undefined || r.status === filter.status).map(copy));
  }

  replaceRunSnapshot(expected: { status: string; updatedAt: number }, next: RunSnapshot): Promise<boolean> {
    const found = this.#runs.get(next.runId);
    if (found === undefined || found.status !== expected.status || found.updatedAt !== expected.updatedAt) return Promise.resolve(false);
    this.#runs.set(next.runId, copy(next));
    return Promise.resolve(true);
  }

  deleteRunSnapshot(runId: string, expected?: { status: string; updatedAt: number }): Promise<boolean> {
    const found = this.#runs.get(runId);
    if (found === undefined || (expected !== undefined && (found.status !== expected.status || found.updatedAt !== expected.updatedAt))) return Promise.resolve(false);
    this.#runs.delete(runId);
    return Promise.resolve(true);
  }

  saveOverlay(registration: OverlayRegistration): Promise<void> {
    this.#overlays.set(registration.id, copy(registration));
    return Promise.resolve();
  }

  listOverlays(): Promise<OverlayRegistration[]> {
    return Promise.resolve([...this.#overlays.values()].map(copy));
  }

  removeOverlay(id: string): Promise<void> {
    this.#overlays.delete(id);
    return Promise.resolve();
  }

  appendAudit(entry: AuditEntry): void {
    // An entry is kept once per id, as Neo4j merges it: written again (a projection replayed), it is replaced.
    const at = this.#auditSlots.get(entry.id);
    if (at !== undefined) {
      this.#audit[at] = copy(entry);
      return;
    }
    if (this.#audit.length < this.#auditLimit) {
      this.#auditSlots.set(entry.id, this.#audit.length);
      this.#audit.push(copy(entry));
    } else {
      this.#auditSlots.delete(this.#audit[this.#auditNext]!.id);
      this.#auditSlots.set(entry.id, this.#auditNext);
      this.#audit[this.#auditNext] = copy(entry);
      this.#auditNext = (this.#auditNext + 1) % this.#auditLimit;
    }
  }

  readonly #projections = new Map<string, number>();

  loadProjection(name: string): Promise<number> {
    return Promise.resolve(this.#projections.get(name) ?? 0);
  }

  saveProjection(name: string, position: number): Promise<void> {
    this.#projections.set(name, Math.max(position, this.#projections.get(name) ?? 0));
    return Promise.resolve();
  }

  listAudit(filter: { capsuleId?: string; runId?: string } = {}): Promise<AuditEntry[]> {
    // Oldest first: the ring's entries from the next slot to overwrite, then those before it.
    const ordered = [...this.#audit.slice(this.#auditNext), ...this.#audit.slice(0, this.#auditNext)];
    return Promise.resolve(ordered.filter((a) => (filter.capsuleId === undefined || a.capsuleId === filter.capsuleId) && (filter.runId === undefined || a.runId === filter.runId)).map(copy));
  }

  saveDeadLetter(letter: DeadLetterRecord): Promise<void> {
    this.#deadLetters.set(letter.id, copy(letter));
    if (this.#deadLetters.size > this.#deadLetterLimit) this.#deadLetters.delete(this.#deadLetters.keys().next().value!);
    return Promise.resolve();
  }

  listDeadLetters(): Promise<DeadLetterRecord[]> {
    return Promise.resolve([...this.#deadLetters.values()].map(copy));
  }

  removeDeadLetter(id: string): Promise<void> {
    this.#deadLetters.delete(id);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
