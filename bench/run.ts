// npm run bench [-- --quick] [-- --json]: every benchmark, as ratios against baselines measured in the same run.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { BenchOptions, BenchRow } from './harness.ts';
import { busBenchmarks } from './bus.bench.ts';
import { clusterBenchmarks } from './cluster.bench.ts';
import { inspectBenchmarks } from './inspect.bench.ts';
import { journalBenchmarks } from './journal.bench.ts';
import { natsBenchmarks } from './nats.bench.ts';
import { overlayBenchmarks } from './overlays.bench.ts';
import { pipelineBenchmarks } from './pipeline.bench.ts';
import { projectionBenchmarks } from './projection.bench.ts';
import { storeBenchmarks } from './store.bench.ts';
import { wasmBenchmarks } from './wasm.bench.ts';

const options: BenchOptions = { quick: process.argv.includes('--quick') };
const json = process.argv.includes('--json');

/** `-- --only <name>[,<name>…]`: just those groups (wasm, overlays, bus, pipeline, journal, inspect, store, nats, cluster, projection). */
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt === -1 ? undefined : new Set((process.argv[onlyAt + 1] ?? '').split(','));
const groups: [string, (options: BenchOptions) => Promise<BenchRow[]>][] = [
  ['wasm', wasmBenchmarks],
  ['overlays', overlayBenchmarks],
  ['bus', busBenchmarks],
  ['pipeline', pipelineBenchmarks],
  ['journal', journalBenchmarks],
  ['inspect', inspectBenchmarks],
  ['store', storeBenchmarks],
  ['nats', natsBenchmarks],
  ['cluster', clusterBenchmarks],
  ['projection', projectionBenchmarks],
];
if (only !== undefined) for (const name of only) if (!groups.some(([group]) => group === name)) throw new Error(`--only: no benchmark group "${name}" (${groups.map(([g]) => g).join(', ')})`);
const rows: BenchRow[] = [];
for (const [name, bench] of groups) if (only === undefined || only.has(name)) rows.push(...(await bench(options)));

const format = (n: number | null): string => (n === null ? '—' : n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toFixed(4));
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  quick: options.quick,
  rows,
};
mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
writeFileSync(join(import.meta.dirname, 'results', 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);

if (json) {
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
} else {
  const table = [['figure', 'ours', 'baseline', 'unit', 'ratio', 'target', 'result'], ...rows.map((r) => [r.figure, format(r.ours), format(r.baseline), r.unit, r.ratio === null ? '—' : `${r.ratio.toFixed(3)}×`, r.target, r.pass === null ? '' : r.pass ? 'pass' : 'FAIL'])];
  const widths = table[0]!.map((_, c) => Math.max(...table.map((line) => line[c]!.length)));
  for (const line of table) process.stdout.write(`${line.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')}\n`);
  process.stdout.write(`\n${report.node} on ${report.cores} × ${report.cpu}, ${report.date}${options.quick ? ' (quick: smoke numbers only)' : ''}\n`);
}
