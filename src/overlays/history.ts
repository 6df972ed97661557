/** One overlay call as the registry saw it, rejected calls included. */
export interface ExecutionRecord {
  overlayId: string;
  overlay: string;
  version: string;
  export: string;
  /** `ok`; `error-result` (the overlay returned { ok: false }); `fault` (the overlay failed); `rejected` (not run, or a caller mistake). */
  outcome: 'ok' | 'error-result' | 'fault' | 'rejected';
  code: string | null;
  fuelUsed: number;
  durationMs: number;
  correlationId: string | null;
  at: number;
}

/** Calls kept when no limit is given. */
export const DEFAULT_HISTORY_LIMIT = 1_000;

/** The last N call records, oldest first; O(1) per record (a ring buffer). */
export class ExecutionHistory {
  readonly #ring: (ExecutionRecord | undefined)[];
  #next = 0;
  #size = 0;

  constructor(limit = DEFAULT_HISTORY_LIMIT) {
    this.#ring = new Array<ExecutionRecord | undefined>(Math.max(1, limit));
  }

  add(record: ExecutionRecord): void {
    this.#ring[this.#next] = record;
    this.#next = (this.#next + 1) % this.#ring.length;
    this.#size = Math.min(this.#size + 1, this.#ring.length);
  }

  /** The records, oldest first, optionally only those of one overlay (by id or name). */
  list(overlay?: string): ExecutionRecord[] {
    const out: ExecutionRecord[] = [];
    for (let i = 0; i < this.#size; i++) {
      const record = this.#ring[(this.#next - this.#size + i + this.#ring.length) % this.#ring.length];
      if (record !== undefined && (overlay === undefined || record.overlayId === overlay || record.overlay === overlay)) out.push(record);
    }
    return out;
  }

  get size(): number {
    return this.#size;
  }
}
