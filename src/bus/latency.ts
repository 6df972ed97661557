/** The last N delivery latencies in a ring buffer: O(1) per sample, percentiles computed only when asked. */
export class LatencyWindow {
  readonly #samples: Float64Array;
  #next = 0;
  #size = 0;

  constructor(size: number) {
    this.#samples = new Float64Array(size);
  }

  add(ms: number): void {
    this.#samples[this.#next] = ms;
    this.#next = (this.#next + 1) % this.#samples.length;
    this.#size = Math.min(this.#size + 1, this.#samples.length);
  }

  percentiles(): { p50: number; p95: number; p99: number } {
    if (this.#size === 0) return { p50: 0, p95: 0, p99: 0 };
    const sorted = Array.from(this.#samples.subarray(0, this.#size)).sort((a, b) => a - b);
    const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
    return { p50: at(0.5), p95: at(0.95), p99: at(0.99) };
  }
}
