/**
 * The store port: what the kernel must not lose. Two adapters implement it: memory (the default) and Neo4j.
 * Methods returning a promise are durable when it resolves (a caller may acknowledge); `append…` methods are
 * write-behind (batched, flushed on size, on an interval and by `flush()` / `close()`, never dropped).
 */
export interface Store {
  readonly kind: 'memory' | 'neo4j';
  /** Connects and creates constraints and indexes (idempotent). */
  start(): Promise<void>;

  saveChain(chain: ChainRecord): Promise<void>;
  /** A hop of a cascade chain (write-behind). */
  appendHop(hop: HopRecord): void;
  loadChains(filter?: { status?: ChainRecord['status'] }): Promise<ChainRecord[]>;
  loadHops(chainId: string): Promise<HopRecord[]>;

  saveRunSnapshot(snapshot: RunSnapshot): Promise<void>;
  loadRunSnapshot(runId: string): Promise<RunSnapshot | undefined>;
  listRunSnapshots(filter?: { status?: string }): Promise<RunSnapshot[]>;
  /**
   * Removes a run's snapshot; with `expected`, only if the stored one is still that one (a driver that lost the run
   * to another process must not remove the new driver's checkpoint). True when it removed one.
   */
  deleteRunSnapshot(runId: string, expected?: { status: string; updatedAt: number }): Promise<boolean>;
  /**
   * Replaces a run's snapshot only if the stored one still has `expected`'s status and `updatedAt` (compare and set,
   * atomic across processes sharing the store): false when another writer got there first, or it is gone. What makes
   * one resume win when two processes resume the same paused run.
   */
  replaceRunSnapshot(expected: { status: string; updatedAt: number }, next: RunSnapshot): Promise<boolean>;

  saveOverlay(registration: OverlayRegistration): Promise<void>;
  listOverlays(): Promise<OverlayRegistration[]>;
  removeOverlay(id: string): Promise<void>;

  /** An entry of the settlement audit trail (write-behind). */
  appendAudit(entry: AuditEntry): void;
  listAudit(filter?: { capsuleId?: string; runId?: string }): Promise<AuditEntry[]>;

  saveDeadLetter(letter: DeadLetterRecord): Promise<void>;
  listDeadLetters(): Promise<DeadLetterRecord[]>;
  removeDeadLetter(id: string): Promise<void>;

  /** Where a projector of the journal into this store got to (0: nowhere yet); absent on stores nobody projects into. */
  loadProjection?(name: string): Promise<number>;
  /** Records a projector's position (it never moves back: a slower process's save cannot undo a faster one's). */
  saveProjection?(name: string, position: number): Promise<void>;

  /** Writes everything buffered; resolves when it is durable. */
  flush(): Promise<void>;
  /** Flushes, then releases connections. */
  close(): Promise<void>;
}

export interface ChainRecord {
  id: string;
  source: string;
  insightType: string;
  /** `stopped`: its guard ended it (`endReason`: an insight that would loop, or the hop budget spent). */
  status: 'active' | 'completed' | 'expired' | 'stopped';
  hops: number;
  maxHops: number;
  /** Overlays the chain has visited (the cycle guard). */
  visited: string[];
  createdAt: number;
  /** Absolute deadline (ms since the epoch): re-armed on restore. */
  expiresAt: number | null;
  correlationId: string;
  /** Insight events published in the chain, overlay calls it caused, and those that failed. */
  insights: number;
  actions: number;
  errors: number;
  endReason: 'cycle' | 'hop-limit' | null;
}

export interface HopRecord {
  chainId: string;
  /** 1-based position in the chain. */
  index: number;
  from: string;
  to: string;
  eventType: string;
  at: number;
}

/** A pipeline run's persisted actor snapshot, versioned for migrations. */
export interface RunSnapshot {
  runId: string;
  /** Format version of `snapshot` (bumped when the pipeline machine changes shape). */
  version: number;
  status: string;
  snapshot: unknown;
  updatedAt: number;
  /** The key of the journal append it was folded up to (a run kept in a journal). */
  token?: string;
}

export interface OverlayRegistration {
  id: string;
  name: string;
  version: string;
  sha256: string;
  manifest: unknown;
  grant: string[];
  state: string;
  updatedAt: number;
}

export interface AuditEntry {
  id: string;
  runId: string;
  capsuleId: string;
  decision: string;
  detail: unknown;
  at: number;
}

export interface DeadLetterRecord {
  id: string;
  event: unknown;
  subscriber: string;
  error: { code: string; message: string };
  attempts: number;
  at: number;
}

/**
 * Records are stored as plain JSON: a copy in, a copy out, so no caller can mutate what the store holds. A JSON
 * round trip is the copy: the records are JSON by contract, and it costs about half of structuredClone.
 */
export function copy<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}
