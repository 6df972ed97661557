import { join } from 'node:path';
import binaryen from 'binaryen';
import { compileAssemblyScript } from '../src/build/asc.ts';
import { meterModule, METER_EXPORTS } from '../src/wasm/fuel-meter.ts';
const bytes = await compileAssemblyScript(join(import.meta.dirname, '..', 'overlays-as', 'bench', 'workloads.ts'));
const metered = meterModule(binaryen, bytes).bytes;
const imports = { env: { abort: () => { throw new Error('abort'); }, seed: () => 1, trace: () => undefined } };
const plain: any = new WebAssembly.Instance(new WebAssembly.Module(bytes as any), imports).exports;
const m: any = new WebAssembly.Instance(new WebAssembly.Module(metered as any), imports).exports;
m[METER_EXPORTS.virtualPages].value = 1; m.__forge_fuel.value = 10n ** 12n; m.__forge_start?.();
const t = (f: () => void) => { const s = process.hrtime.bigint(); f(); return Number(process.hrtime.bigint() - s) / 1e6; };
for (const [name, n] of [['fib', 25], ['stringScan', 1000]] as const) {
  const rs: number[] = [];
  for (let r = 0; r < 15; r++) { const a = t(() => plain[name](n)); const b = t(() => { m.__forge_fuel.value = 10n ** 15n; m.__forge_depth.value = 0; m[name](n); }); rs.push(b / a); }
  rs.sort((x, y) => x - y); console.log(name, 'median ratio', rs[7]!.toFixed(3));
}
