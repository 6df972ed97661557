import type { PipelineClock } from './run.ts';

interface Entry {
  at: number;
  expire: () => void;
}

/**
 * Phase deadlines of every run on one clock timer, armed for the earliest. A phase takes microseconds and its
 * deadline is seconds away, so a timer per phase (set, then cleared, ≈2 µs each) would be almost all waste: here
 * adding and removing a deadline is a Set operation, and the timer is re-armed only when an earlier deadline arrives.
 */
export class DeadlineScheduler {
  readonly #clock: PipelineClock;
  readonly #entries = new Set<Entry>();
  #timer: unknown = undefined;
  #armedAt = Number.POSITIVE_INFINITY;

  constructor(clock: PipelineClock) {
    this.#clock = clock;
  }

  /** Calls `expire` once `ms` have passed, unless the returned function is called first. */
  add(ms: number, expire: () => void): () => void {
    const entry: Entry = { at: this.#clock.now() + ms, expire };
    this.#entries.add(entry);
    if (entry.at < this.#armedAt) this.#arm(entry.at);
    // Removing leaves the timer armed: it fires once, finds nothing due, and is not re-armed while nothing waits.
    return () => void this.#entries.delete(entry);
  }

  /** Clears the timer (the kernel is stopping). */
  stop(): void {
    this.#entries.clear();
    this.#disarm();
  }

  #arm(at: number): void {
    this.#disarm();
    this.#armedAt = at;
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, at - this.#clock.now()));
  }

  #disarm(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Number.POSITIVE_INFINITY;
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Number.POSITIVE_INFINITY;
    const now = this.#clock.now();
    let next = Number.POSITIVE_INFINITY;
    for (const entry of [...this.#entries]) {
      if (entry.at <= now) {
        this.#entries.delete(entry);
        entry.expire();
      } else if (entry.at < next) next = entry.at;
    }
    if (next !== Number.POSITIVE_INFINITY) this.#arm(next);
  }
}
