/** How the buffer waits; injected so tests drive time without sleeping. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface WriteBehindOptions<T> {
  /** Writes one batch durably (e.g. one `UNWIND` transaction); rejects when nothing of it was written. */
  write(batch: readonly T[]): Promise<void>;
  /** Items per batch, and the size that triggers a flush (default 500). */
  batchSize?: number;
  /** Longest an item waits before a flush (ms, default 50). */
  intervalMs?: number;
  /** First retry delay after a failed batch (ms, default 50), doubling up to `maxRetryDelayMs` (default 5,000). */
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** Called after each failed batch (for logs); the batch stays queued. */
  onError?: (error: unknown, attempt: number) => void;
  timers?: Timers;
  /** Source of jitter in [0, 1) (default Math.random). */
  random?: () => number;
}

const realTimers: Timers = { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };

/**
 * A write-behind buffer for hot-path writes: items are queued and written in batches, on size or after a short
 * interval. A failed batch is retried, first in line, with exponential backoff and jitter — items are never
 * dropped and keep their order. `flush()` resolves once everything queued before it is written.
 */
export class WriteBehindBuffer<T> {
  readonly #options: Required<Omit<WriteBehindOptions<T>, 'onError'>> & Pick<WriteBehindOptions<T>, 'onError'>;
  readonly #queue: T[] = [];
  #timer: unknown;
  #writing: Promise<void> | undefined;
  #failures = 0;
  /** Items handed to `write` successfully, for flush() waiters. */
  #written = 0;
  #pushed = 0;
  readonly #waiters: { upTo: number; resolve: () => void }[] = [];

  constructor(options: WriteBehindOptions<T>) {
    this.#options = {
      batchSize: 500,
      intervalMs: 50,
      retryDelayMs: 50,
      maxRetryDelayMs: 5_000,
      timers: realTimers,
      random: Math.random,
      ...options,
    };
  }

  /** Items queued and not yet written. */
  get pending(): number {
    return this.#queue.length;
  }

  push(item: T): void {
    this.#queue.push(item);
    this.#pushed++;
    if (this.#queue.length >= this.#options.batchSize) this.#kick(0);
    else this.#kick(this.#options.intervalMs);
  }

  /** Resolves when every item pushed before this call is written (however many retries that takes). */
  flush(): Promise<void> {
    if (this.#written >= this.#pushed) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.#waiters.push({ upTo: this.#pushed, resolve }));
    this.#kick(0);
    return done;
  }

  #kick(delayMs: number): void {
    if (this.#writing !== undefined) return;
    if (this.#timer !== undefined) {
      if (delayMs > 0) return;
      this.#options.timers.clearTimeout(this.#timer);
    }
    this.#timer = this.#options.timers.setTimeout(() => {
      this.#timer = undefined;
      this.#writing = this.#drain().finally(() => {
        this.#writing = undefined;
        if (this.#queue.length > 0) this.#kick(this.#failures > 0 ? this.#backoff() : 0);
      });
    }, delayMs);
  }

  #backoff(): number {
    const { retryDelayMs, maxRetryDelayMs, random } = this.#options;
    const base = Math.min(maxRetryDelayMs, retryDelayMs * 2 ** (this.#failures - 1));
    return Math.round(base * (0.5 + random() / 2));
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue.slice(0, this.#options.batchSize);
      try {
        await this.#options.write(batch);
      } catch (error) {
        this.#failures++;
        this.#options.onError?.(error, this.#failures);
        return;
      }
      this.#failures = 0;
      this.#queue.splice(0, batch.length);
      this.#written += batch.length;
      for (let i = this.#waiters.length - 1; i >= 0; i--) {
        const waiter = this.#waiters[i]!;
        if (waiter.upTo <= this.#written) {
          this.#waiters.splice(i, 1);
          waiter.resolve();
        }
      }
    }
  }
}
