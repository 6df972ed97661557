import type binaryenModule from 'binaryen';
import { InvalidModuleError } from './errors.ts';

type Binaryen = typeof binaryenModule;
type Module = binaryenModule.Module;
type ExpressionRef = number;

/**
 * Fuel costs, in fuel units. One unit is one wasm instruction of the module as written: the same module and input
 * always burn the same fuel, on any machine and in either engine, because charges are static per region and the
 * dynamic ones depend only on operand values.
 */
export const FUEL_COSTS = Object.freeze({
  /** Every instruction (binaryen expression) except structure (`block`, `loop`, `nop`). */
  instruction: 1,
  /** Extra for each call of a host function: crossing into JavaScript costs far more than an instruction. */
  hostCall: 100,
  /** Extra for each 64 KiB page a `memory.grow` asks for (the host zeroes it). */
  growPerPage: 1_024,
  /** `memory.copy` / `memory.fill` / `memory.init` are charged one unit per this many bytes, rounded up. */
  bytesPerUnit: 8,
});

/**
 * An `if` whose arms differ in cost by at most this many instructions is charged the dearer arm up front instead of
 * updating the counter inside the arm: in small branchy functions the update costs more than the overcharge.
 */
const IF_FOLD_LIMIT = 8;

/** Deterministic call-depth limit: V8's own stack overflow (≈14–18k frames) depends on frame sizes and JIT tier. */
export const DEFAULT_MAX_CALL_DEPTH = 2_000;

/**
 * Names of what the meter adds to a module. The host writes the budget into the fuel global before a call and reads
 * what is left after it; the trap global says why a metered trap fired.
 */
export const METER_EXPORTS = Object.freeze({
  fuel: '__forge_fuel',
  depth: '__forge_depth',
  trapReason: '__forge_trap_reason',
  maxPages: '__forge_max_pages',
  growDenied: '__forge_grow_denied',
  /** The memory size the module sees (pages); the host sets it to the real size before the start function. */
  virtualPages: '__forge_vsize',
  /** Prefix of the exported mutable globals of the module (`__forge_snapshot_0`, …), for snapshot and restore. */
  snapshotPrefix: '__forge_snapshot_',
  /** The module's start function, exported instead of run at instantiation, so it runs metered with a budget. */
  start: '__forge_start',
});

/** Values of the trap-reason global. */
export const TRAP_REASON = Object.freeze({ none: 0, outOfFuel: 1, callDepth: 2 });

const FUEL = '__forge_fuel';
const DEPTH = '__forge_depth';
const TRAP = '__forge_trap_reason';
const MAX_PAGES = '__forge_max_pages';
const VSIZE = '__forge_vsize';
const GROW_DENIED = '__forge_grow_denied';
const TRAP_ENTRY = '__forge_trap_entry';
const TRAP_FUEL = '__forge_trap_fuel';
const CHARGE_BYTES = '__forge_charge_bytes';
const GROW = '__forge_memory_grow';

/** How to reach the children of each kind of expression through binaryen.js's per-class accessors. */
interface ChildSpec {
  cls: string;
  /** Single-child fields, in evaluation order (`condition` → `getCondition` / `setCondition`). */
  fields: readonly string[];
  /** A list of children (`Child` → `getNumChildren` / `getChildAt` / `setChildAt`). */
  list?: 'Child' | 'Operand';
}

function childSpecs(b: Binaryen): Map<number, ChildSpec> {
  const s = (id: number, cls: string, fields: readonly string[] = [], list?: 'Child' | 'Operand'): [number, ChildSpec] => [
    id,
    list === undefined ? { cls, fields } : { cls, fields, list },
  ];
  return new Map([
    s(b.BlockId, 'Block', [], 'Child'),
    s(b.IfId, 'If', ['Condition', 'IfTrue', 'IfFalse']),
    s(b.LoopId, 'Loop', ['Body']),
    s(b.BreakId, 'Break', ['Value', 'Condition']),
    s(b.SwitchId, 'Switch', ['Value', 'Condition']),
    s(b.CallId, 'Call', [], 'Operand'),
    s(b.CallIndirectId, 'CallIndirect', ['Target'], 'Operand'),
    s(b.LocalGetId, 'LocalGet'),
    s(b.LocalSetId, 'LocalSet', ['Value']),
    s(b.GlobalGetId, 'GlobalGet'),
    s(b.GlobalSetId, 'GlobalSet', ['Value']),
    s(b.LoadId, 'Load', ['Ptr']),
    s(b.StoreId, 'Store', ['Ptr', 'Value']),
    s(b.ConstId, 'Const'),
    s(b.UnaryId, 'Unary', ['Value']),
    s(b.BinaryId, 'Binary', ['Left', 'Right']),
    s(b.SelectId, 'Select', ['IfTrue', 'IfFalse', 'Condition']),
    s(b.DropId, 'Drop', ['Value']),
    s(b.ReturnId, 'Return', ['Value']),
    s(b.MemorySizeId, 'MemorySize'),
    s(b.MemoryGrowId, 'MemoryGrow', ['Delta']),
    s(b.NopId, 'Nop'),
    s(b.UnreachableId, 'Unreachable'),
    s(b.AtomicRMWId, 'AtomicRMW', ['Ptr', 'Value']),
    s(b.AtomicCmpxchgId, 'AtomicCmpxchg', ['Ptr', 'Expected', 'Replacement']),
    s(b.AtomicWaitId, 'AtomicWait', ['Ptr', 'Expected', 'Timeout']),
    s(b.AtomicNotifyId, 'AtomicNotify', ['Ptr', 'NotifyCount']),
    s(b.AtomicFenceId, 'AtomicFence'),
    s(b.SIMDExtractId, 'SIMDExtract', ['Vec']),
    s(b.SIMDReplaceId, 'SIMDReplace', ['Vec', 'Value']),
    s(b.SIMDShuffleId, 'SIMDShuffle', ['Left', 'Right']),
    s(b.SIMDTernaryId, 'SIMDTernary', ['A', 'B', 'C']),
    s(b.SIMDShiftId, 'SIMDShift', ['Vec', 'Shift']),
    s(b.SIMDLoadId, 'SIMDLoad', ['Ptr']),
    s(b.SIMDLoadStoreLaneId, 'SIMDLoadStoreLane', ['Ptr', 'Vec']),
    s(b.MemoryInitId, 'MemoryInit', ['Dest', 'Offset', 'Size']),
    s(b.DataDropId, 'DataDrop'),
    s(b.MemoryCopyId, 'MemoryCopy', ['Dest', 'Source', 'Size']),
    s(b.MemoryFillId, 'MemoryFill', ['Dest', 'Value', 'Size']),
    s(b.RefNullId, 'RefNull'),
    s(b.RefIsNullId, 'RefIsNull', ['Value']),
    s(b.RefFuncId, 'RefFunc'),
    s(b.RefEqId, 'RefEq', ['Left', 'Right']),
    s(b.TableGetId, 'TableGet', ['Index']),
    s(b.TableSetId, 'TableSet', ['Index', 'Value']),
    s(b.TableSizeId, 'TableSize'),
    s(b.TableGrowId, 'TableGrow', ['Value', 'Delta']),
    s(b.TupleMakeId, 'TupleMake', [], 'Operand'),
    s(b.TupleExtractId, 'TupleExtract', ['Tuple']),
  ]);
}

type Accessor = Record<string, (expr: ExpressionRef, ...args: number[]) => ExpressionRef>;

/**
 * The functions that lie on a cycle of the call graph (Tarjan's strongly connected components). A `call_indirect`
 * may reach any function placed in a table, so it counts as an edge to each of them.
 */
function recursiveFunctions(
  b: Binaryen,
  module: Module,
  own: readonly binaryenModule.FunctionRef[],
  specs: Map<number, ChildSpec>,
  cls: (name: string) => Accessor,
): Set<string> {
  const names = own.map((fn) => b.getFunctionInfo(fn).name);
  const ownNames = new Set(names);
  const tableFunctions: string[] = [];
  const segments = module as unknown as { getNumElementSegments(): number; getElementSegmentByIndex(i: number): number };
  for (let i = 0; i < segments.getNumElementSegments(); i++) {
    const info = b.getElementSegmentInfo(segments.getElementSegmentByIndex(i)) as { data: string[] };
    for (const name of info.data) if (ownNames.has(name)) tableFunctions.push(name);
  }
  const callId = b.CallId as number;
  const callIndirectId = b.CallIndirectId as number;
  const edges = new Map<string, Set<string>>();
  own.forEach((fn, index) => {
    const out = new Set<string>();
    const stack = [b.getFunctionInfo(fn).body];
    while (stack.length > 0) {
      const expr = stack.pop()!;
      if (expr === 0) continue;
      const id = b.getExpressionId(expr);
      const spec = specs.get(id);
      if (spec === undefined || (spec.fields.length === 0 && spec.list === undefined)) continue;
      const access = cls(spec.cls);
      if (id === callId) {
        const target = (access.getTarget as unknown as (e: number) => string)(expr);
        if (ownNames.has(target)) out.add(target);
      }
      if (id === callIndirectId) for (const target of tableFunctions) out.add(target);
      for (const field of spec.fields) stack.push(access[`get${field}`]!(expr));
      if (spec.list !== undefined) {
        const count = access[`getNum${spec.list === 'Child' ? 'Children' : 'Operands'}`]!(expr);
        for (let i = 0; i < count; i++) stack.push(access[`get${spec.list}At`]!(expr, i));
      }
    }
    edges.set(names[index]!, out);
  });

  // Tarjan's algorithm, iterative (deep call graphs would overflow a recursive one).
  const recursive = new Set<string>();
  const order = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const sccStack: string[] = [];
  let counter = 0;
  for (const root of names) {
    if (order.has(root)) continue;
    const work: [string, string[]][] = [[root, [...(edges.get(root) ?? [])]]];
    order.set(root, counter);
    low.set(root, counter++);
    sccStack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      const [node, pending] = frame;
      const next = pending.pop();
      if (next !== undefined) {
        if (!order.has(next)) {
          order.set(next, counter);
          low.set(next, counter++);
          sccStack.push(next);
          onStack.add(next);
          work.push([next, [...(edges.get(next) ?? [])]]);
        } else if (onStack.has(next)) {
          low.set(node, Math.min(low.get(node)!, order.get(next)!));
        }
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent !== undefined) low.set(parent[0], Math.min(low.get(parent[0])!, low.get(node)!));
      if (low.get(node) === order.get(node)) {
        const component: string[] = [];
        let member: string | undefined;
        do {
          member = sccStack.pop()!;
          onStack.delete(member);
          component.push(member);
        } while (member !== node);
        if (component.length > 1 || edges.get(node)?.has(node) === true) for (const m of component) recursive.add(m);
      }
    }
  }
  return recursive;
}

/** What metering did to a module: the metered bytes and facts for tests and the cache. */
export interface MeteredModule {
  bytes: Uint8Array;
  /** Functions that were metered (the module's own, not imports or the meter's helpers). */
  meteredFunctions: number;
}

export interface MeterOptions {
  maxCallDepth?: number;
}

/**
 * Injects fuel metering into a wasm module with binaryen.
 *
 * Every function body, loop body and `if` arm is a region whose instructions are charged, all at once, when the
 * region is entered; a branch out of a region early was still charged for the rest (never undercharged). Every
 * repetition passes through a function entry or a loop header, so the budget is checked exactly there: at entry
 * inline (with the call-depth check), at a loop header as a branch out of the loop to an out-of-line trap, so that
 * V8 keeps the never-taken path off the hot loop. `memory.grow` and the bulk-memory operations are charged by their
 * operands at run time, host calls a fixed extra.
 */
export function meterModule(binaryen: Binaryen, bytes: Uint8Array, options: MeterOptions = {}): MeteredModule {
  const maxDepth = options.maxCallDepth ?? DEFAULT_MAX_CALL_DEPTH;
  // Standard features only: binaryen's `All` includes encodings V8 does not read (e.g. compact imports).
  const F = binaryen.Features;
  const features = F.MutableGlobals | F.NontrappingFPToInt | F.SIMD128 | F.BulkMemory | F.BulkMemoryOpt | F.SignExt | F.ReferenceTypes | F.Multivalue;
  let module: Module;
  try {
    // binaryen.js takes the features as a second argument its typings do not declare.
    module = (binaryen.readBinary as unknown as (data: Uint8Array, features: number) => Module)(bytes, features);
  } catch (error) {
    throw new InvalidModuleError(`The module could not be read for metering: ${(error as Error).message}`, { cause: error });
  }
  try {
    return instrument(binaryen, module, maxDepth);
  } finally {
    module.dispose();
  }
}

function instrument(b: Binaryen, module: Module, maxDepth: number): MeteredModule {
  const specs = childSpecs(b);
  const classes = b as unknown as Record<string, Accessor | undefined>;
  const cls = (name: string): Accessor => {
    const access = classes[name];
    if (access === undefined) throw new InvalidModuleError(`binaryen.js has no accessor class ${name}`);
    return access;
  };
  const native = b as unknown as { _BinaryenFunctionAddVar(fn: number, type: number): number; _BinaryenTypeAuto(): number };
  /** Lets binaryen infer a block's type from its last child (the JS default would be `none`). */
  const AUTO = native._BinaryenTypeAuto();
  const i64 = b.i64;
  const i32 = b.i32;

  const imported = new Set<string>();
  const own: binaryenModule.FunctionRef[] = [];
  for (let i = 0; i < module.getNumFunctions(); i++) {
    const fn = module.getFunctionByIndex(i);
    const info = b.getFunctionInfo(fn);
    if (info.module !== null && info.module !== '') imported.add(info.name);
    else own.push(fn);
  }

  module.addGlobal(FUEL, i64, true, module.i64.const(BigInt(0)));
  module.addGlobal(DEPTH, i32, true, module.i32.const(0));
  module.addGlobal(TRAP, i32, true, module.i32.const(0));
  module.addGlobal(MAX_PAGES, i32, true, module.i32.const(65_536));
  module.addGlobal(VSIZE, i32, true, module.i32.const(0));
  module.addGlobalExport(VSIZE, METER_EXPORTS.virtualPages);
  module.addGlobal(GROW_DENIED, i32, true, module.i32.const(0));
  module.addGlobalExport(FUEL, METER_EXPORTS.fuel);
  module.addGlobalExport(DEPTH, METER_EXPORTS.depth);
  module.addGlobalExport(TRAP, METER_EXPORTS.trapReason);
  module.addGlobalExport(MAX_PAGES, METER_EXPORTS.maxPages);
  module.addGlobalExport(GROW_DENIED, METER_EXPORTS.growDenied);

  const fuelGet = (): ExpressionRef => module.global.get(FUEL, i64);
  const outOfFuel = (): ExpressionRef => module.i64.lt_s(fuelGet(), module.i64.const(BigInt(0)));
  const charge = (cost: ExpressionRef): ExpressionRef => module.global.set(FUEL, module.i64.sub(fuelGet(), cost));
  const chargeConst = (units: number): ExpressionRef => charge(module.i64.const(BigInt(units)));

  // The trap paths: set the reason, then trap. Out of line so the hot paths hold a single branch.
  module.addFunction(
    TRAP_ENTRY,
    b.none,
    b.none,
    [],
    module.block(null, [
      module.global.set(TRAP, module.select(outOfFuel(), module.i32.const(TRAP_REASON.outOfFuel), module.i32.const(TRAP_REASON.callDepth))),
      module.unreachable(),
    ]),
  );
  module.addFunction(TRAP_FUEL, b.none, b.none, [], module.block(null, [module.global.set(TRAP, module.i32.const(TRAP_REASON.outOfFuel)), module.unreachable()]));
  const trapIfOutOfFuel = (): ExpressionRef => module.if(outOfFuel(), module.call(TRAP_FUEL, [], b.none));

  // (bytes: i32) -> i32: charges ceil(bytes / bytesPerUnit) before the bulk operation runs, and passes bytes through.
  const shift = Math.log2(FUEL_COSTS.bytesPerUnit);
  module.addFunction(
    CHARGE_BYTES,
    i32,
    i32,
    [],
    module.block(
      null,
      [
        charge(module.i64.shr_u(module.i64.add(module.i64.extend_u(module.local.get(0, i32)), module.i64.const(BigInt(FUEL_COSTS.bytesPerUnit - 1))), module.i64.const(BigInt(shift)))),
        trapIfOutOfFuel(),
        module.local.get(0, i32),
      ],
      i32,
    ),
  );
  // (pages: i32) -> i32: the module's memory.grow. The module sees a virtual size (VSIZE) so that an instance
  // reset to its start snapshot behaves exactly like a fresh one although real memory never shrinks: pages
  // between the virtual and the real size are re-zeroed when grown into, and only beyond it is memory really grown.
  const pages = (): ExpressionRef => module.local.get(0, i32);
  const vsize = (): ExpressionRef => module.global.get(VSIZE, i32);
  const deny = (): ExpressionRef => module.block(null, [module.global.set(GROW_DENIED, module.i32.const(1)), module.return(module.i32.const(-1))]);
  const PAGE_SHIFT = 16;
  module.addFunction(
    GROW,
    i32,
    i32,
    [i32],
    module.block(
      null,
      [
        charge(module.i64.mul(module.i64.extend_u(pages()), module.i64.const(BigInt(FUEL_COSTS.growPerPage)))),
        trapIfOutOfFuel(),
        module.if(module.i32.gt_u(pages(), module.i32.sub(module.global.get(MAX_PAGES, i32), vsize())), deny()),
        // local 1: pages still to grow for real (beyond the real size), else 0
        module.local.set(1, module.i32.sub(module.i32.add(vsize(), pages()), module.memory.size())),
        module.if(
          module.i32.gt_s(module.local.get(1, i32), module.i32.const(0)),
          module.if(module.i32.eq(module.memory.grow(module.local.get(1, i32)), module.i32.const(-1)), deny()),
        ),
        module.memory.fill(
          module.i32.shl(vsize(), module.i32.const(PAGE_SHIFT)),
          module.i32.const(0),
          module.i32.shl(module.i32.sub(pages(), module.select(module.i32.gt_s(module.local.get(1, i32), module.i32.const(0)), module.local.get(1, i32), module.i32.const(0))), module.i32.const(PAGE_SHIFT)),
        ),
        module.local.set(1, vsize()),
        module.global.set(VSIZE, module.i32.add(vsize(), pages())),
        module.local.get(1, i32),
      ],
      i32,
    ),
  );

  // Every mutable global of the module is exported, so the host can snapshot and restore the instance's state.
  let snapshotGlobals = 0;
  for (let i = 0; i < module.getNumGlobals(); i++) {
    const info = b.getGlobalInfo(module.getGlobalByIndex(i));
    if (!info.mutable || info.name.startsWith('__forge_') || (info.module !== null && info.module !== '')) continue;
    module.addGlobalExport(info.name, `${METER_EXPORTS.snapshotPrefix}${snapshotGlobals++}`);
  }

  /** Expression ids as plain numbers (binaryen.js types them as a const enum). */
  const ID = {
    nop: b.NopId as number,
    memorySize: b.MemorySizeId as number,
    block: b.BlockId as number,
    loop: b.LoopId as number,
    if: b.IfId as number,
    call: b.CallId as number,
    callIndirect: b.CallIndirectId as number,
    memoryGrow: b.MemoryGrowId as number,
    memoryFill: b.MemoryFillId as number,
    memoryCopy: b.MemoryCopyId as number,
    memoryInit: b.MemoryInitId as number,
    return: b.ReturnId as number,
  };
  const recursive = recursiveFunctions(b, module, own, specs, cls);
  let labels = 0;
  for (const fn of own) {
    const info = b.getFunctionInfo(fn);
    const resultType = info.results;
    // Only functions on a call-graph cycle can nest without bound; only they count toward the depth limit.
    const tracked = recursive.has(info.name);
    const returnTemp = !tracked || resultType === b.none ? -1 : native._BinaryenFunctionAddVar(fn, resultType);
    const leave = (): ExpressionRef => module.global.set(DEPTH, module.i32.sub(module.global.get(DEPTH, i32), module.i32.const(1)));

    /** Walks `expr`, adding its cost to `region`; returns the expression to put in its place. */
    const walk = (expr: ExpressionRef, region: { cost: number }): ExpressionRef => {
      const id: number = b.getExpressionId(expr);
      const spec = specs.get(id);
      if (spec === undefined) {
        throw new InvalidModuleError(`The module uses an instruction the fuel meter does not support (binaryen expression id ${id}, e.g. exceptions or GC).`);
      }
      if (spec.fields.length === 0 && spec.list === undefined) {
        if (id !== ID.nop) region.cost += FUEL_COSTS.instruction;
        return id === ID.memorySize ? module.global.get(VSIZE, i32) : expr;
      }
      const access = cls(spec.cls);
      if (id !== ID.block && id !== ID.loop && id !== ID.nop) region.cost += FUEL_COSTS.instruction;

      if (id === ID.loop) {
        const inner = { cost: 0 };
        const body = walk(access.getBody!(expr), inner);
        return meterLoop(expr, body, inner.cost);
      }
      if (id === ID.if) {
        access.setCondition!(expr, walk(access.getCondition!(expr), region));
        const arms = (['IfTrue', 'IfFalse'] as const).map((arm) => {
          const child = access[`get${arm}`]!(expr);
          const inner = { cost: 0 };
          return { arm, walked: child === 0 ? 0 : walk(child, inner), cost: inner.cost };
        });
        // The part both arms cost is charged with the enclosing region; only an arm's excess is charged in the arm,
        // and an excess of a few instructions is charged up front too (a slight, deterministic overcharge that
        // saves a counter update on every pass through that arm).
        const shared = Math.min(arms[0]!.cost, arms[1]!.cost);
        const spread = Math.max(arms[0]!.cost, arms[1]!.cost) - shared;
        const folded = spread <= IF_FOLD_LIMIT;
        region.cost += folded ? shared + spread : shared;
        for (const { arm, walked, cost } of arms) {
          if (walked === 0) continue;
          const excess = folded ? 0 : cost - shared;
          access[`set${arm}`]!(expr, excess === 0 ? walked : module.block(null, [chargeConst(excess), walked], AUTO));
        }
        return expr;
      }
      if ((id === ID.call || id === ID.callIndirect) && (access.isReturn as unknown as (e: ExpressionRef) => boolean)(expr)) {
        throw new InvalidModuleError('The module uses tail calls (return_call), which the fuel meter does not support.');
      }
      if (id === ID.call && imported.has((access.getTarget as unknown as (e: number) => string)(expr))) region.cost += FUEL_COSTS.hostCall;

      for (const field of spec.fields) {
        const child = access[`get${field}`]!(expr);
        if (child !== 0) {
          const walked = walk(child, region);
          if (walked !== child) access[`set${field}`]!(expr, walked);
        }
      }
      if (spec.list !== undefined) {
        const count = access[`getNum${spec.list === 'Child' ? 'Children' : 'Operands'}`]!(expr);
        for (let i = 0; i < count; i++) {
          const child = access[`get${spec.list}At`]!(expr, i);
          const walked = walk(child, region);
          if (walked !== child) access[`set${spec.list}At`]!(expr, i, walked);
        }
      }

      if (id === ID.memoryGrow) return module.call(GROW, [access.getDelta!(expr)], i32);
      if (id === ID.memoryFill || id === ID.memoryCopy || id === ID.memoryInit) {
        access.setSize!(expr, module.call(CHARGE_BYTES, [access.getSize!(expr)], i32));
      }
      if (id === ID.return && tracked) {
        const value = access.getValue!(expr);
        if (value === 0) return module.block(null, [leave(), expr], b.unreachable);
        return module.block(null, [module.local.set(returnTemp, value), leave(), module.return(module.local.get(returnTemp, resultType))], b.unreachable);
      }
      return expr;
    };

    /**
     * `loop $L (T) body` becomes
     * `block $exit (T) (block $oof (br $exit (loop $L (T) (charge; br_if $oof (fuel < 0); body)))) (call trap)`.
     */
    const meterLoop = (loop: ExpressionRef, body: ExpressionRef, cost: number): ExpressionRef => {
      const type = b.getExpressionType(loop);
      const exit = `__forge_exit${labels}`;
      const oof = `__forge_oof${labels++}`;
      cls('Loop').setBody!(loop, module.block(null, [chargeConst(cost), module.br(oof, outOfFuel()), body], AUTO));
      const leaveLoop = type === b.none ? module.block(null, [loop, module.br(exit)]) : module.br(exit, undefined, loop);
      return module.block(exit, [module.block(oof, [leaveLoop]), module.call(TRAP_FUEL, [], b.none), module.unreachable()], type);
    };

    const entry = { cost: 0 };
    const body = walk(info.body, entry);
    const bodyType = b.getExpressionType(body);
    if (!tracked) {
      cls('Function').setBody!(fn, module.block(null, [chargeConst(entry.cost), trapIfOutOfFuel(), body], AUTO));
      continue;
    }
    const enter = [
      chargeConst(entry.cost),
      module.global.set(DEPTH, module.i32.add(module.global.get(DEPTH, i32), module.i32.const(1))),
      module.if(module.i32.or(outOfFuel(), module.i32.gt_u(module.global.get(DEPTH, i32), module.i32.const(maxDepth))), module.call(TRAP_ENTRY, [], b.none)),
    ];
    let metered: ExpressionRef;
    if (bodyType === b.unreachable) metered = module.block(null, [...enter, body], b.unreachable);
    else if (resultType === b.none) metered = module.block(null, [...enter, body, leave()], b.none);
    else metered = module.block(null, [...enter, module.local.set(returnTemp, body), leave(), module.local.get(returnTemp, resultType)], resultType);
    cls('Function').setBody!(fn, metered);
  }

  // A start function would run during instantiation, before the host can set a budget: export it instead.
  const start = (module as unknown as { getStart(): number }).getStart();
  if (start !== 0) {
    const name = b.getFunctionInfo(start).name;
    (module as unknown as { setStart(fn: number): void }).setStart(0);
    module.addFunctionExport(name, METER_EXPORTS.start);
  }

  if (module.validate() === 0) {
    throw new InvalidModuleError('The metered module failed validation; the input module is likely malformed or uses an unsupported feature.');
  }
  return { bytes: module.emitBinary(), meteredFunctions: own.length };
}
