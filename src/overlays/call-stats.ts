/** What the calls of one overlay came to: counts, success rate, durations and fuel. */
export interface OverlayStats {
  /** Calls that reached the overlay's engine. */
  calls: number;
  ok: number;
  /** Calls that failed by the overlay's own fault (including `{ ok: false }` results). */
  faults: number;
  /** Calls refused as the caller's mistakes or by an open breaker, before or in the engine (not the overlay's fault). */
  rejected: number;
  /** Events for the overlay that it did not receive because it was not active. */
  skippedEvents: number;
  /** ok ÷ (ok + faults); 1 before any call. */
  successRate: number;
  fuelUsed: number;
  /** Over the last {@link DURATION_SAMPLES} calls that ran (ms). */
  durationMs: { p50: number; p95: number; max: number };
}

/** Durations kept for the percentiles: the most recent calls, a fixed ring (no allocation per call). */
const DURATION_SAMPLES = 1_024;

/** The running statistics of one overlay's calls. Recording costs a few stores; percentiles are computed when read. */
export class CallStats {
  calls = 0;
  ok = 0;
  faults = 0;
  rejected = 0;
  skippedEvents = 0;
  fuelUsed = 0;
  readonly #durations = new Float64Array(DURATION_SAMPLES);
  #recorded = 0;

  /** A call that ran: ok or a fault, with its duration and fuel. */
  ran(ok: boolean, durationMs: number, fuelUsed: number): void {
    this.calls++;
    if (ok) this.ok++;
    else this.faults++;
    this.fuelUsed += fuelUsed;
    this.#durations[this.#recorded++ % DURATION_SAMPLES] = durationMs;
  }

  /** A call the engine refused as the caller's mistake, or that its caller cut short: counted, not timed. */
  refused(fuelUsed: number): void {
    this.calls++;
    this.rejected++;
    this.fuelUsed += fuelUsed;
  }

  /** A call refused before it reached the engine (unknown state, trust, an open breaker). */
  turnedAway(): void {
    this.rejected++;
  }

  snapshot(): OverlayStats {
    const held = Math.min(this.#recorded, DURATION_SAMPLES);
    const sorted = this.#durations.slice(0, held).sort();
    const at = (q: number): number => (held === 0 ? 0 : sorted[Math.min(held - 1, Math.floor(q * held))]!);
    const ran = this.ok + this.faults;
    return {
      calls: this.calls,
      ok: this.ok,
      faults: this.faults,
      rejected: this.rejected,
      skippedEvents: this.skippedEvents,
      successRate: ran === 0 ? 1 : this.ok / ran,
      fuelUsed: this.fuelUsed,
      durationMs: { p50: at(0.5), p95: at(0.95), max: held === 0 ? 0 : sorted[held - 1]! },
    };
  }
}
