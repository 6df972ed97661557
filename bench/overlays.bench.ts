import { join } from 'node:path';
import { createActor, createMachine, fromPromise } from 'xstate';
import { circuitBreakerMachine } from '../actors/circuit-breaker.ts';
import { overlayMachine } from '../actors/overlay.ts';
import { compileAssemblyScript } from '../src/build/asc.ts';
import { createKernel } from '../src/kernel.ts';
import { sha256Hex } from '../src/wasm/loader.ts';
import { paired, row, type BenchOptions, type BenchRow } from './harness.ts';

const ROOT = join(import.meta.dirname, '..');

/** Heap bytes per actor: N started actors held alive, measured after a full GC. */
async function bytesPerActor(make: () => unknown, count: number): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run the benchmarks with node --expose-gc (npm run bench does)');
  const settle = async (): Promise<number> => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    return process.memoryUsage().heapUsed;
  };
  const before = await settle();
  const kept: unknown[] = [];
  for (let i = 0; i < count; i++) kept.push(make());
  const after = await settle();
  if (kept.length !== count) throw new Error('unreachable');
  return (after - before) / count;
}

async function memory(options: BenchOptions): Promise<BenchRow[]> {
  const count = options.quick ? 500 : 2_000;
  const bare = createMachine({ id: 'bare', initial: 'idle', states: { idle: {} } });
  const idleOverlay = overlayMachine.provide({ actors: { load: fromPromise(() => new Promise<void>(() => {})) } });
  const baseline = await bytesPerActor(() => createActor(bare).start(), count);
  let n = 0;
  const overlay = await bytesPerActor(() => createActor(idleOverlay, { input: { overlayId: `ov_${n++}`, name: 'bench-overlay', version: '1.0.0' } }).start(), count);
  const breaker = await bytesPerActor(() => createActor(circuitBreakerMachine).start(), count);
  return [
    row('memory per idle overlay actor (KiB)', overlay / 1024, baseline / 1024, 'KiB', '≤ 1.5×', (r) => r !== null && r <= 1.5),
    row('memory per idle circuit-breaker actor (KiB)', breaker / 1024, baseline / 1024, 'KiB', 'reported', null),
  ];
}

async function breakerOverhead(options: BenchOptions): Promise<BenchRow[]> {
  const iterations = options.quick ? 5_000 : 50_000;
  const breaker = createActor(circuitBreakerMachine).start();
  let sink = 0;
  const [withBreaker, bare] = await paired(
    () => {
      // What the registry does per call while closed: read the state, then report the outcome.
      for (let i = 0; i < iterations; i++) {
        if (breaker.getSnapshot().value === 'closed') sink += i;
        breaker.send({ type: 'SUCCESS', durationMs: 1, at: 0, probe: false });
      }
    },
    () => {
      for (let i = 0; i < iterations; i++) sink += i;
    },
    iterations,
    options,
  );
  if (sink === -1) throw new Error('unreachable');
  return [row('circuit-breaker decision per call (closed: state read + outcome event)', (withBreaker - bare) / 1e3, null, 'µs/call', 'reported', null)];
}

/** Calls per second on a no-op overlay through kernel.overlays.call, in both engines, and the registry's share. */
async function throughput(options: BenchOptions): Promise<BenchRow[]> {
  const bytes = (await compileAssemblyScript(join(ROOT, 'overlays-as', 'bench', 'noop.ts'))).binary;
  const manifest = { name: 'bench-noop', version: '1.0.0', sha256: sha256Hex(bytes) };
  const rows: BenchRow[] = [];
  for (const mode of ['relaxed', 'strict'] as const) {
    const kernel = await createKernel({ logger: { level: 'silent' }, cacheDir: false });
    try {
      await kernel.overlays.load(bytes, { manifest, mode });
      const iterations = mode === 'relaxed' ? (options.quick ? 500 : 5_000) : options.quick ? 50 : 500;
      const [viaRegistry] = await paired(
        async () => {
          for (let i = 0; i < iterations; i++) await kernel.overlays.call('bench-noop', 'run', i);
        },
        () => undefined,
        iterations,
        options,
      );
      rows.push(row(`no-op overlay calls per second through the registry (${mode})`, 1e9 / viaRegistry, null, 'calls/s', 'reported', null));
    } finally {
      await kernel.stop();
    }
  }
  return rows;
}

export async function overlayBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  return [...(await memory(options)), ...(await breakerOverhead(options)), ...(await throughput(options))];
}
