import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import binaryen from 'binaryen';
import { buildExampleOverlays, EXAMPLE_NAMES } from '../src/build/examples.ts';
import { compileAssemblyScript } from '../src/build/asc.ts';
import { createLogger } from '../src/logger.ts';
import { meterModule, METER_EXPORTS } from '../src/wasm/fuel-meter.ts';
import { loadWasmOverlay, type OverlayEngine } from '../src/wasm/engine.ts';
import type { HostFunction } from '../src/wasm/host-functions.ts';
import { sha256Hex } from '../src/wasm/loader.ts';
import { MeteredModuleCache } from '../src/wasm/metered-cache.ts';
import { geomean, paired, row, type BenchOptions, type BenchRow } from './harness.ts';

const ROOT = join(import.meta.dirname, '..');

type WorkloadExports = Record<string, (n: number) => unknown> & Record<string, WebAssembly.Global>;

/** Fuel overhead: the same AssemblyScript workloads, metered and unmetered, called directly. */
export async function fuelOverhead(options: BenchOptions): Promise<BenchRow[]> {
  const bytes = (await compileAssemblyScript(join(ROOT, 'overlays-as', 'bench', 'workloads.ts'))).binary;
  const metered = meterModule(binaryen, bytes).bytes;
  const imports = { env: { abort: () => { throw new Error('abort'); }, seed: () => 1, trace: () => undefined } };
  const plain = new WebAssembly.Instance(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>), imports).exports as unknown as WorkloadExports;
  const instance = new WebAssembly.Instance(new WebAssembly.Module(metered as Uint8Array<ArrayBuffer>), imports).exports as unknown as WorkloadExports;
  instance[METER_EXPORTS.virtualPages]!.value = (instance.memory as unknown as WebAssembly.Memory).buffer.byteLength / 65_536;
  const fuel = instance[METER_EXPORTS.fuel]!;
  fuel.value = 10n ** 12n;
  (instance[METER_EXPORTS.start] as unknown as (() => void) | undefined)?.();

  const scale = options.quick ? 0.2 : 1;
  const workloads: [string, string, number][] = [
    ['tight integer loop (FNV hash)', 'hashLoop', 2_000_000],
    ['i64 loop (xorshift)', 'i64Loop', 2_000_000],
    ['recursion (fib)', 'fib', 24],
    ['memory copy (4 KiB blocks)', 'memoryCopy', 2_000],
    ['string / JSON-like scan', 'stringScan', 1_000],
  ];
  const rows: BenchRow[] = [];
  const ratios: number[] = [];
  for (const [label, name, n] of workloads) {
    const size = name === 'fib' ? n : Math.max(1, Math.round(n * scale));
    const [metered, unmetered] = await paired(
      () => {
        fuel.value = 10n ** 15n;
        instance[name]!(size);
      },
      () => plain[name]!(size),
      1,
      options,
    );
    ratios.push(metered / unmetered);
    rows.push(row(`fuel overhead: ${label}`, metered / 1e6, unmetered / 1e6, 'ms/call', '≤ 1.5×', (r) => r !== null && r <= 1.5));
  }
  rows.push({ figure: 'fuel overhead: geomean of 5 workloads', ours: geomean(ratios), baseline: 1, unit: '×', ratio: geomean(ratios), target: '≤ 1.15×', pass: geomean(ratios) <= 1.15 });
  return rows;
}

const quietLogger = createLogger({ level: 'silent' });

async function echoOverlay(mode: 'strict' | 'relaxed', cache: MeteredModuleCache, hostFunctions: HostFunction[] = [], file = 'fixtures/basics.ts', capabilities = ['LOGGING', 'EVENT_PUBLISH']): Promise<OverlayEngine> {
  const bytes = (await compileAssemblyScript(join(ROOT, 'overlays-as', file))).binary;
  return loadWasmOverlay(bytes, {
    manifest: { name: 'bench-echo', version: '1.0.0', sha256: sha256Hex(bytes), capabilities },
    grant: ['LOGGING', 'EVENT_PUBLISH', 'DATABASE_READ'],
    mode,
    cache,
    hostFunctions,
    logger: quietLogger,
    poolSize: 1,
  });
}

/** A 1 KiB capsule through an echo overlay and back, vs `JSON.parse(JSON.stringify(x))`. */
async function jsonRoundTrip(options: BenchOptions, cache: MeteredModuleCache): Promise<BenchRow[]> {
  const capsule = {
    id: 'cap_0001',
    kind: 'insight',
    author: 'analyst@example.org',
    trust: 0.72,
    tags: ['graph', 'lineage', 'security', 'pii', 'governance'],
    parents: ['cap_0000', 'cap_0002'],
    content: 'x'.repeat(780),
  };
  const relaxed = await echoOverlay('relaxed', cache);
  const iterations = options.quick ? 200 : 2_000;
  try {
    const [ours, baseline] = await paired(
      async () => {
        for (let i = 0; i < iterations; i++) await relaxed.call('run', capsule);
      },
      () => {
        for (let i = 0; i < iterations; i++) JSON.parse(JSON.stringify(capsule));
      },
      iterations,
      options,
    );
    return [row(`JSON round trip into an overlay, ${JSON.stringify(capsule).length} B (relaxed)`, ours / 1e3, baseline / 1e3, 'µs/call', '≤ 3×', (r) => r !== null && r <= 3)];
  } finally {
    await relaxed.close();
  }
}

/** What one host call costs: JSPI suspend/resume (relaxed) and the worker hop (strict), net of the call itself. */
async function hostCallCost(options: BenchOptions, cache: MeteredModuleCache): Promise<BenchRow[]> {
  const dbRead: HostFunction = { name: 'db_read', capability: 'DATABASE_READ', async: true, params: ['string', 'string'], result: 'string', invoke: () => Promise.resolve('1') };
  const rows: BenchRow[] = [];
  for (const mode of ['relaxed', 'strict'] as const) {
    const withHost = await echoOverlay(mode, cache, [dbRead], 'fixtures/host-calls.ts', ['DATABASE_READ']);
    const iterations = options.quick ? 100 : 1_000;
    try {
      // `twice` makes two host calls, `run` one: the difference is one host call.
      const [two, one] = await paired(
        async () => {
          for (let i = 0; i < iterations; i++) await withHost.call('twice', 1);
        },
        async () => {
          for (let i = 0; i < iterations; i++) await withHost.call('run', 1);
        },
        iterations,
        options,
      );
      rows.push(row(`host call (async, ${mode === 'relaxed' ? 'JSPI' : 'worker hop'})`, Math.max(0, two - one) / 1e3, null, 'µs/call', 'reported', null));
      rows.push(row(`overlay call with one host call (${mode})`, one / 1e3, null, 'µs/call', 'reported', null));
    } finally {
      await withHost.close();
    }
  }
  return rows;
}

/** How long after its deadline a runaway strict overlay is really dead (the worker thread has exited). */
async function killLatency(options: BenchOptions, cache: MeteredModuleCache): Promise<BenchRow[]> {
  const strict = await echoOverlay('strict', cache);
  const deadlineMs = 50;
  const latencies: number[] = [];
  try {
    for (let i = 0; i < (options.quick ? 3 : 10); i++) {
      // The previous kill took the worker with it: wait until a fresh one runs, so the timed call is a runaway in
      // a running worker rather than one still starting.
      await strict.call('run', 1);
      const start = performance.now();
      await strict.call('spin', 'x', { fuel: Number.MAX_SAFE_INTEGER, deadlineMs }).catch(() => undefined);
      latencies.push(performance.now() - start - deadlineMs);
    }
  } finally {
    await strict.close();
  }
  latencies.sort((a, b) => a - b);
  const median = latencies[Math.floor(latencies.length / 2)] ?? Number.NaN;
  const worst = latencies[latencies.length - 1] ?? Number.NaN;
  return [
    row('hard kill of a runaway overlay after its deadline (strict), median', median, null, 'ms', '≤ 10 ms', (_r, ours) => ours <= 10),
    row('hard kill of a runaway overlay after its deadline (strict), worst', worst, null, 'ms', 'reported', null),
  ];
}

/**
 * Loading the seven examples with metering (a cold cache, the meter in its worker) and from the cache, and the
 * longest the kernel's event loop waited meanwhile (metering runs off its thread).
 */
async function moduleLoad(options: BenchOptions): Promise<BenchRow[]> {
  const dir = await buildExampleOverlays({ outDir: join(ROOT, '.forge', 'cache', 'examples') });
  const examples = EXAMPLE_NAMES.map((name) => ({
    bytes: new Uint8Array(readFileSync(join(dir, `${name}.wasm`))),
    manifest: JSON.parse(readFileSync(join(dir, `${name}.manifest.json`), 'utf8')) as Record<string, unknown>,
  }));
  const loadAll = async (cache: MeteredModuleCache) => {
    for (const { bytes, manifest } of examples) {
      const engine = await loadWasmOverlay(bytes, { manifest, grant: manifest.capabilities as never, mode: 'relaxed', cache, logger: quietLogger });
      await engine.close();
    }
  };
  let gap = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    gap = Math.max(gap, now - last);
    last = now;
  }, 5);
  const warmCache = new MeteredModuleCache({ dir: false });
  await loadAll(warmCache);
  const [cold, warm] = await paired(() => loadAll(new MeteredModuleCache({ dir: false })), () => loadAll(warmCache), EXAMPLE_NAMES.length, { quick: true });
  clearInterval(ticker);
  void options;
  return [
    row('module load of an example with metering (cold cache, meter worker)', cold / 1e6, warm / 1e6, 'ms/module', 'reported', null),
    row('longest event-loop stall while the examples were metered', gap, null, 'ms', '≤ 50 ms', (_r, ours) => ours <= 50),
  ];
}

/** Growing memory page by page, in a strict worker against in-process (relaxed): real memory grows by doubling. */
async function memoryGrowth(options: BenchOptions, cache: MeteredModuleCache): Promise<BenchRow[]> {
  const pages = options.quick ? 256 : 1_024;
  const module = binaryen.parseText(`(module (memory (export "memory") 1)
    (data (i32.const 12) "\\04\\00\\00\\00{\\00}\\00")
    (func (export "__new") (param i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param i32) (result i32) (local $i i32)
      (loop $grow
        (drop (memory.grow (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $grow (i32.lt_u (local.get $i) (i32.const ${pages}))))
      (i32.const 16)))`);
  const bytes = module.emitBinary();
  module.dispose();
  const manifest = { name: 'bench-grow', version: '1.0.0', sha256: sha256Hex(bytes), memoryPages: pages + 16, timeoutMs: 60_000 };
  const [strict, relaxed] = await Promise.all((['strict', 'relaxed'] as const).map((mode) => loadWasmOverlay(bytes, { manifest, mode, cache, logger: quietLogger, poolSize: 1 })));
  try {
    const [ours, baseline] = await paired(() => strict!.call('run', null), () => relaxed!.call('run', null), 1, options);
    return [row(`memory.grow page by page to ${pages} pages, strict worker vs relaxed`, ours / 1e6, baseline / 1e6, 'ms/call', '≤ 3×', (r) => r !== null && r <= 3)];
  } finally {
    await Promise.all([strict!.close(), relaxed!.close()]);
  }
}

export async function wasmBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  const cache = new MeteredModuleCache({ dir: false });
  return [
    ...(await fuelOverhead(options)),
    ...(await jsonRoundTrip(options, cache)),
    ...(await hostCallCost(options, cache)),
    ...(await killLatency(options, cache)),
    ...(await moduleLoad(options)),
    ...(await memoryGrowth(options, cache)),
  ];
}
