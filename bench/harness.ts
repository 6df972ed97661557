/** One line of the benchmark report: our figure against a baseline measured in the same run. */
export interface BenchRow {
  figure: string;
  ours: number;
  baseline: number | null;
  unit: string;
  /** ours ÷ baseline (or baseline ÷ ours for throughputs, so that higher is always "ours is slower"). */
  ratio: number | null;
  target: string;
  pass: boolean | null;
}

export interface BenchOptions {
  /** Fewer samples and iterations: a smoke run, not numbers to quote. */
  quick: boolean;
}

/**
 * Times `fn` (which performs `iterations` operations per invocation) and returns nanoseconds per operation: the
 * median of several samples, after a warm-up, so one slow sample on a shared machine does not decide the figure.
 */
export async function nsPerOp(fn: () => unknown, iterations: number, options: BenchOptions): Promise<number> {
  const samples = options.quick ? 3 : 9;
  for (let i = 0; i < (options.quick ? 1 : 3); i++) await fn();
  const times: number[] = [];
  for (let s = 0; s < samples; s++) {
    const start = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - start) / iterations);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? Number.NaN;
}

/**
 * Interleaves two measurements sample by sample (A, B, A, B, …) so that machine noise hits both alike, and returns
 * the median ns/op of each.
 */
export async function paired(a: () => unknown, b: () => unknown, iterations: number, options: BenchOptions): Promise<[number, number]> {
  const [ta, tb] = await interleaved([a, b], iterations, options);
  return [ta, tb];
}

/** Like `paired`, for any number of measurements (A, B, C, A, B, C, …): the median ns/op of each. */
export async function interleaved<const T extends readonly (() => unknown)[]>(fns: T, iterations: number, options: BenchOptions): Promise<{ [K in keyof T]: number }> {
  const samples = options.quick ? 3 : 9;
  for (let i = 0; i < (options.quick ? 1 : 3); i++) for (const fn of fns) await fn();
  const times = fns.map((): number[] => []);
  for (let s = 0; s < samples; s++) {
    for (const [i, fn] of fns.entries()) {
      const start = process.hrtime.bigint();
      await fn();
      times[i]!.push(Number(process.hrtime.bigint() - start) / iterations);
    }
  }
  return times.map((xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN) as { [K in keyof T]: number };
}

export function geomean(values: readonly number[]): number {
  return Math.exp(values.reduce((sum, v) => sum + Math.log(v), 0) / values.length);
}

export function row(figure: string, ours: number, baseline: number | null, unit: string, target: string, check: ((ratio: number | null, ours: number) => boolean) | null): BenchRow {
  const ratio = baseline === null ? null : ours / baseline;
  return { figure, ours, baseline, unit, ratio, target, pass: check === null ? null : check(ratio, ours) };
}
