import type binaryenModule from 'binaryen';
import { TABLE_ELEMENT_BYTES } from './binary.ts';
import { InvalidModuleError, ModuleLimitError } from './errors.ts';

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
  /** Extra for each element a `table.grow` asks for (the host allocates and clears it). */
  tableGrowPerElement: 1,
});


/**
 * An `if` whose arms differ in cost by at most this many instructions is charged the dearer arm up front instead of
 * updating the counter inside the arm: in small branchy functions the update costs more than the overcharge.
 */
const IF_FOLD_LIMIT = 8;

/**
 * How deep the meter follows nested instructions. Compilers nest tens deep; binaryen's handling of deeply nested
 * blocks grows with the square of the depth (20,000 nested loops took 184 s), so a module past this is refused.
 */
const MAX_NESTING = 1_000;

/** V8 takes at most 1,000 parameters; the meter adds two to every function of the module. */
const MAX_PARAMS = 998;

const REF_FUNC = 'The module takes a reference to a function (ref.func), which the fuel meter does not support: a function reached through one would run without the metered signature.';

/**
 * The deterministic stack limit (bytes, as the meter estimates them): V8's own stack overflow depends on the thread
 * (≈ 984 KiB on the kernel's thread, the size a strict worker is given), on frame sizes and on the JIT tier, so the
 * same call could succeed in one engine and fail in the other. Every frame of a function that can recurse is
 * estimated at {@link FRAME_BASE_BYTES} plus 8 bytes (16 for v128) per parameter, local and level of operand
 * nesting: measured here, V8's baseline tier (the largest frames) uses 72 bytes plus 8 per i64 local. 256 KiB leaves
 * the kernel's thread more than half its stack for the JavaScript below the call, and lets a small recursive function
 * go about 2,000 frames deep.
 */
export const DEFAULT_MAX_STACK_BYTES = 256 * 1024;
/** The fixed part of a frame's estimate (return address, frame pointer, instance, spill area): above V8's 72. */
export const FRAME_BASE_BYTES = 96;

/**
 * Names of what the meter adds to a module. The host writes the budget into the fuel global before a call and reads
 * what is left after it; the trap global says why a metered trap fired.
 */
export const METER_EXPORTS = Object.freeze({
  fuel: '__forge_fuel',
  /**
   * The stack bytes reserved (estimated) at a host call: an export called back from the host continues from it (the
   * host zeroes it before a call).
   */
  depth: '__forge_depth',
  /**
   * Set to 1 when the module changes state a snapshot cannot restore (a table's entries or size, a dropped data
   * segment): the host then discards the instance instead of reusing it.
   */
  dirty: '__forge_dirty',
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
const GROW = '__forge_memory_grow';
const DIRTY = '__forge_dirty';
/** Table elements in all the module's tables: they count toward the memory cap. */
const TABLE_ELEMENTS = '__forge_table_elements';

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

/** binaryen.js's C API entries the meter uses where its JS API has none. */
interface BinaryenNative {
  _BinaryenElementSegmentIsPassive(segment: number): number;
  getExceptionMessage?(error: unknown): [string, string];
}

/**
 * The module's element segments. A passive one only serves `table.init`, which binaryen.js cannot take apart (it
 * has no accessors for it, and reading a passive segment's offset aborts in its C++): refused by name.
 */
function elementSegments(b: Binaryen, module: Module): binaryenModule.ElementSegmentInfo[] {
  const segments = module as unknown as { getNumElementSegments(): number; getElementSegmentByIndex(i: number): number };
  const native = b as unknown as BinaryenNative;
  const infos: binaryenModule.ElementSegmentInfo[] = [];
  for (let i = 0; i < segments.getNumElementSegments(); i++) {
    const segment = segments.getElementSegmentByIndex(i);
    if (native._BinaryenElementSegmentIsPassive(segment) !== 0) {
      throw new InvalidModuleError('The module has a passive element segment (used by table.init), which the fuel meter does not support: place functions in tables with active segments only (AssemblyScript does).', {
        details: { feature: 'passive element segment' },
      });
    }
    infos.push(b.getElementSegmentInfo(segment));
  }
  return infos;
}

/**
 * Instructions binaryen reads but the meter cannot walk (binaryen.js has no accessors for their operands), by the
 * name of their expression id's C entry, for a refusal that names them.
 */
const UNWALKABLE_INSTRUCTIONS: Readonly<Record<string, string>> = {
  _BinaryenTableInitId: 'table.init',
  _BinaryenElemDropId: 'elem.drop',
  _BinaryenTableCopyId: 'table.copy',
  _BinaryenTableFillId: 'table.fill',
};

/** What to call an instruction the meter refuses, from its binaryen expression id. */
function instructionName(b: Binaryen, id: number): string {
  const native = b as unknown as Record<string, unknown>;
  for (const [entry, name] of Object.entries(UNWALKABLE_INSTRUCTIONS)) if (typeof native[entry] === 'function' && (native[entry] as () => number)() === id) return name;
  const known = Object.keys(b).find((key) => key.endsWith('Id') && !key.startsWith('_') && (b as unknown as Record<string, unknown>)[key] === id);
  return known === undefined ? `binaryen expression id ${id}` : known.slice(0, -2);
}

/**
 * Relaxed SIMD operations by the binaryen expression id that carries them, from binaryen's own list of ops (every
 * name starting `Relaxed`): their results may differ between machines (fused or not, NaN and out-of-range lanes are
 * implementation-defined), which would break "the same fuel and output everywhere".
 */
function relaxedSimdOps(b: Binaryen): Map<number, ReadonlySet<number>> {
  const unary: number = b.UnaryId;
  const binary: number = b.BinaryId;
  const ternary: number = b.SIMDTernaryId;
  const byId = new Map<number, Set<number>>([
    [unary, new Set()],
    [binary, new Set()],
    [ternary, new Set()],
  ]);
  for (const [name, value] of Object.entries(b as unknown as Record<string, unknown>)) {
    if (!name.startsWith('Relaxed') || typeof value !== 'number') continue;
    const id = /^Relaxed(Madd|Nmadd|Laneselect|DotI8x16I7x16AddS)/.test(name) ? ternary : /^RelaxedTrunc/.test(name) ? unary : binary;
    byId.get(id)!.add(value);
  }
  return byId;
}

/** A readable reason for whatever binaryen threw: its C++ exceptions reach JS as bare objects ("[object Object]"). */
function binaryenFailure(b: Binaryen, error: unknown): string {
  if (error instanceof Error) return error.message;
  try {
    const described = (b as unknown as BinaryenNative).getExceptionMessage?.(error);
    if (described !== undefined) return described.filter(Boolean).join(': ');
  } catch {
    // not one of binaryen's exceptions
  }
  return typeof error === 'object' && error !== null ? `${error.constructor.name} thrown by binaryen` : String(error);
}

/**
 * The functions that lie on a cycle of the call graph (Tarjan's strongly connected components). A `call_indirect`
 * may reach any function placed in a table, so it counts as an edge to each of them.
 */
function callGraph(
  b: Binaryen,
  module: Module,
  own: readonly binaryenModule.FunctionRef[],
  specs: Map<number, ChildSpec>,
  cls: (name: string) => Accessor,
): { edges: Map<string, Set<string>>; recursive: Set<string> } {
  const names = own.map((fn) => b.getFunctionInfo(fn).name);
  const ownNames = new Set(names);
  const tableFunctions: string[] = [];
  for (const info of elementSegments(b, module)) {
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
  return { edges, recursive };
}

/**
 * The most stack (estimated bytes) a call of each function can use below its own frame without passing through a
 * function that checks the stack itself (one on a call-graph cycle): the longest path through the acyclic rest of the
 * call graph. A recursive function checks that the stack used so far, its frame and this fit, so no frame on the
 * stack goes unchecked.
 */
function stackBelow(edges: ReadonlyMap<string, ReadonlySet<string>>, recursive: ReadonlySet<string>, frame: ReadonlyMap<string, number>): Map<string, number> {
  const below = new Map<string, number>();
  for (const root of edges.keys()) {
    if (below.has(root)) continue;
    // Iterative post-order: the acyclic part of a call graph can be deep.
    const stack: { name: string; expanded: boolean }[] = [{ name: root, expanded: false }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const callees = [...(edges.get(top.name) ?? [])].filter((callee) => !recursive.has(callee));
      if (!top.expanded) {
        top.expanded = true;
        for (const callee of callees) if (!below.has(callee)) stack.push({ name: callee, expanded: false });
        continue;
      }
      stack.pop();
      if (below.has(top.name)) continue;
      below.set(top.name, callees.reduce((most, callee) => Math.max(most, (frame.get(callee) ?? 0) + (below.get(callee) ?? 0)), 0));
    }
  }
  return below;
}

/** What metering did to a module: the metered bytes and facts for tests and the cache. */
export interface MeteredModule {
  bytes: Uint8Array;
  /** Functions that were metered (the module's own, not imports or the meter's helpers). */
  meteredFunctions: number;
}

export interface MeterOptions {
  /** The deterministic stack limit (estimated bytes); default {@link DEFAULT_MAX_STACK_BYTES}. */
  maxStackBytes?: number;
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
 *
 * The counter is threaded through the module's own calls (an extra parameter in, an extra result out), so it stays
 * in a register; the depth is a parameter too. The host's interface is the fuel global: exports are wrappers that
 * read it and write back what is left, and it holds the counter while a host function runs (which may call back
 * into the module). A recursive workload costs 0.8–1.25× unmetered this way, against 1.5–1.6× with the counter in
 * a global that V8 stores on every charge.
 */
export function meterModule(binaryen: Binaryen, bytes: Uint8Array, options: MeterOptions = {}): MeteredModule {
  const maxDepth = options.maxStackBytes ?? DEFAULT_MAX_STACK_BYTES;
  // Standard features only: binaryen's `All` includes encodings V8 does not read (e.g. compact imports).
  const F = binaryen.Features;
  const features = F.MutableGlobals | F.NontrappingFPToInt | F.SIMD128 | F.BulkMemory | F.BulkMemoryOpt | F.SignExt | F.ReferenceTypes | F.Multivalue;
  let module: Module;
  try {
    // binaryen.js takes the features as a second argument its typings do not declare.
    module = (binaryen.readBinary as unknown as (data: Uint8Array, features: number) => Module)(bytes, features);
  } catch (error) {
    throw new InvalidModuleError(`The module could not be read for metering: ${binaryenFailure(binaryen, error)}`, { cause: error });
  }
  try {
    return instrument(binaryen, module, maxDepth);
  } catch (error) {
    // Ours are typed, and a RangeError is a stack overflow the meter's thread reports as MODULE_LIMIT.
    if (error instanceof Error) throw error;
    throw new InvalidModuleError(`The fuel meter could not process the module: ${binaryenFailure(binaryen, error)}. Rebuild it with "forge-kernel build".`, { cause: error });
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
  module.addGlobal(DIRTY, i32, true, module.i32.const(0));
  module.addGlobalExport(DIRTY, METER_EXPORTS.dirty);
  let initialTableElements = 0;
  for (let i = 0; i < module.getNumTables(); i++) initialTableElements += b.getTableInfo(module.getTableByIndex(i)).initial;
  module.addGlobal(TABLE_ELEMENTS, i32, true, module.i32.const(initialTableElements));
  module.addGlobalExport(FUEL, METER_EXPORTS.fuel);
  module.addGlobalExport(DEPTH, METER_EXPORTS.depth);
  module.addGlobalExport(TRAP, METER_EXPORTS.trapReason);
  module.addGlobalExport(MAX_PAGES, METER_EXPORTS.maxPages);
  module.addGlobalExport(GROW_DENIED, METER_EXPORTS.growDenied);

  const fuelGlobal = (): ExpressionRef => module.global.get(FUEL, i64);
  const ZERO = (): ExpressionRef => module.i64.const(BigInt(0));

  // The trap paths take the fuel left (a caller's local), store it for the host, set the reason and trap. Out of
  // line, so the hot paths hold a single branch.
  const param0 = (): ExpressionRef => module.local.get(0, i64);
  module.addFunction(
    TRAP_ENTRY,
    i64,
    b.none,
    [],
    module.block(null, [
      module.global.set(FUEL, param0()),
      module.global.set(TRAP, module.select(module.i64.lt_s(param0(), ZERO()), module.i32.const(TRAP_REASON.outOfFuel), module.i32.const(TRAP_REASON.callDepth))),
      module.unreachable(),
    ]),
  );
  module.addFunction(TRAP_FUEL, i64, b.none, [], module.block(null, [module.global.set(FUEL, param0()), module.global.set(TRAP, module.i32.const(TRAP_REASON.outOfFuel)), module.unreachable()]));

  // (pages: i32) -> i32: the module's memory.grow, charged on the fuel global (its callers store their counter
  // there first). The module sees a virtual size (VSIZE) so that an instance reset to its start snapshot behaves
  // exactly like a fresh one although real memory never shrinks: pages between the virtual and the real size are
  // re-zeroed when grown into, and only beyond it is memory really grown. Memory and tables share one cap.
  const pages = (): ExpressionRef => module.local.get(0, i32);
  const vsize = (): ExpressionRef => module.global.get(VSIZE, i32);
  const deny = (): ExpressionRef => module.block(null, [module.global.set(GROW_DENIED, module.i32.const(1)), module.return(module.i32.const(-1))]);
  const PAGE_SHIFT = 16;
  const u64 = (value: ExpressionRef): ExpressionRef => module.i64.extend_u(value);
  /** True when memory of `memoryPages` (i64) and tables of `tableElements` (i64) would pass the cap. */
  const overCap = (memoryPages: ExpressionRef, tableElements: ExpressionRef): ExpressionRef =>
    module.i64.gt_u(
      module.i64.add(module.i64.shl(memoryPages, module.i64.const(BigInt(PAGE_SHIFT))), module.i64.mul(tableElements, module.i64.const(BigInt(TABLE_ELEMENT_BYTES)))),
      module.i64.shl(u64(module.global.get(MAX_PAGES, i32)), module.i64.const(BigInt(PAGE_SHIFT))),
    );
  const real = (): ExpressionRef => module.memory.size();
  module.addFunction(
    GROW,
    i32,
    i32,
    [i32, i32],
    module.block(
      null,
      [
        module.global.set(FUEL, module.i64.sub(fuelGlobal(), module.i64.mul(u64(pages()), module.i64.const(BigInt(FUEL_COSTS.growPerPage))))),
        module.if(module.i64.lt_s(fuelGlobal(), ZERO()), module.call(TRAP_FUEL, [fuelGlobal()], b.none)),
        module.if(overCap(module.i64.add(u64(vsize()), u64(pages())), u64(module.global.get(TABLE_ELEMENTS, i32))), deny()),
        // local 1: pages still to grow for real (beyond the real size), else 0
        module.local.set(1, module.i32.sub(module.i32.add(vsize(), pages()), real())),
        // Real memory grows by at least that and up to double its size (within the cap): each real grow costs V8 a
        // collection of external memory (4,096 one-page grows took 1 s on the kernel's thread and 13-20 s in a
        // worker with a small heap), so growing page by page must not grow for real page by page.
        module.if(
          module.i32.gt_s(module.local.get(1, i32), module.i32.const(0)),
          module.block(null, [
            module.local.set(2, module.i32.sub(module.global.get(MAX_PAGES, i32), real())),
            module.local.set(2, module.select(module.i32.lt_u(real(), module.local.get(2, i32)), real(), module.local.get(2, i32))),
            module.local.set(2, module.select(module.i32.gt_u(module.local.get(1, i32), module.local.get(2, i32)), module.local.get(1, i32), module.local.get(2, i32))),
            module.if(
              module.i32.eq(module.memory.grow(module.local.get(2, i32)), module.i32.const(-1)),
              module.if(module.i32.eq(module.memory.grow(module.local.get(1, i32)), module.i32.const(-1)), deny()),
            ),
          ]),
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
    if (info.init !== 0 && b.getExpressionId(info.init) === (b.RefFuncId as number)) throw new InvalidModuleError(REF_FUNC);
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
    localGet: b.LocalGetId as number,
    localSet: b.LocalSetId as number,
    refFunc: b.RefFuncId as number,
    memoryGrow: b.MemoryGrowId as number,
    memoryFill: b.MemoryFillId as number,
    memoryCopy: b.MemoryCopyId as number,
    memoryInit: b.MemoryInitId as number,
    return: b.ReturnId as number,
    tableGrow: b.TableGrowId as number,
    tableSet: b.TableSetId as number,
    dataDrop: b.DataDropId as number,
  };
  const markDirty = (): ExpressionRef => module.global.set(DIRTY, module.i32.const(1));
  /** Instructions that change what a snapshot cannot restore (a grown table is marked where the grow succeeds). */
  const UNRESTORABLE: ReadonlySet<number> = new Set([ID.tableSet, ID.dataDrop]);
  const relaxed = relaxedSimdOps(b);
  const { edges, recursive } = callGraph(b, module, own, specs, cls);

  // The module's own functions are rebuilt with the counter threaded through them: two parameters more (the fuel
  // left, i64, and the call depth, i32) and the fuel left returned after their result. The counter thus lives in a
  // local (a register) instead of a global V8 stores on every charge. The host's view is unchanged: exports become
  // thin wrappers that read the fuel global, call, and write back what is left.
  const plans = own.map((fn) => {
    const info = b.getFunctionInfo(fn);
    const results = b.expandType(info.results);
    if (results.length > 1) throw new InvalidModuleError(`Function ${info.name} returns several values (multi-value), which the fuel meter does not support.`);
    if (b.expandType(info.params).length > MAX_PARAMS) throw new InvalidModuleError(`Function ${info.name} has more than ${MAX_PARAMS} parameters: with the meter's two it would pass the engine's limit of 1,000.`);
    return { name: info.name, params: b.expandType(info.params), result: info.results, vars: info.vars, body: info.body, tracked: recursive.has(info.name) };
  });
  const ownNames = new Set(plans.map((plan) => plan.name));
  const resultOf = new Map(plans.map((plan) => [plan.name, plan.result]));
  const threaded = (result: number): number => (result === b.none ? i64 : b.createType([result, i64]));
  // A start function would run during instantiation, before the host can set a budget: it is exported instead.
  const startRef = (module as unknown as { getStart(): number }).getStart();
  const startName = startRef === 0 ? undefined : b.getFunctionInfo(startRef).name;
  if (startRef !== 0) (module as unknown as { setStart(fn: number): void }).setStart(0);

  let labels = 0;
  /** Each function's estimated frame (bytes), and what finishes it once the reservations are known. */
  const frames = new Map<string, number>();
  const finishers: ((reserve: number) => void)[] = [];
  for (const plan of plans) {
    const p = plan.params.length;
    const FUEL_LOCAL = p;
    const DEPTH_LOCAL = p + 1;
    const vars = [...plan.vars];
    const newTemp = (type: number): number => vars.push(type) + p + 1;
    const shared = new Map<string, number>();
    /** A temporary whose value is used at once (never across another expression's evaluation); `slot` tells apart several in one expression. */
    const scratch = (type: number, slot = 0): number => shared.get(`${type}:${slot}`) ?? shared.set(`${type}:${slot}`, newTemp(type)).get(`${type}:${slot}`)!;
    /** How deep the walk is in the expression tree, and the deepest it went: V8 may keep that many values in the frame. */
    let level = 0;
    let deepest = 0;
    /**
     * What a call passes on as the stack used: what this function got plus its own frame, a constant known only once
     * the walk has seen all the function's locals and nesting (set then, in every place it was passed).
     */
    const frameConstants: ExpressionRef[] = [];
    const passDepth = (): ExpressionRef => {
      const frame = module.i32.const(0);
      frameConstants.push(frame);
      return module.i32.add(module.local.get(DEPTH_LOCAL, i32), frame);
    };
    /** How many times this function's walk has written the fuel local so far: tells which operands change it. */
    let fuelWrites = 0;
    /**
     * How deep the walk is in call operands. A call's settled operands live while the operands after them evaluate,
     * where only calls nested deeper run: locals keyed by depth, position and type can be shared by every call at
     * one depth, which keeps the local count bounded by the nesting instead of the number of calls.
     */
    let nesting = 0;
    const settleTemps = new Map<string, number>();

    const fuel = (): ExpressionRef => module.local.get(FUEL_LOCAL, i64);
    const setFuel = (value: ExpressionRef): ExpressionRef => {
      fuelWrites++;
      return module.local.set(FUEL_LOCAL, value);
    };
    const chargeConst = (units: number): ExpressionRef => setFuel(module.i64.sub(fuel(), module.i64.const(BigInt(units))));
    const outOfFuel = (): ExpressionRef => module.i64.lt_s(fuel(), ZERO());
    const trapIfOutOfFuel = (): ExpressionRef => module.if(outOfFuel(), module.call(TRAP_FUEL, [fuel()], b.none));
    /** Stores a threaded call's fuel and yields its result. */
    const receive = (call: ExpressionRef, result: number): ExpressionRef => {
      if (result === b.none) return setFuel(call);
      const type = threaded(result);
      const tuple = scratch(type);
      return module.block(null, [module.local.set(tuple, call), setFuel(module.tuple.extract(module.local.get(tuple, type), 1)), module.tuple.extract(module.local.get(tuple, type), 0)], result);
    };
    /**
     * Operands evaluate before the call; when one of them changes the fuel local, the value the call receives (or
     * the global a host call sees) must be read after them: such operands are evaluated into fresh locals first.
     */
    const settle = (operands: ExpressionRef[], types: readonly number[], changed: boolean): { prelude: ExpressionRef[]; operands: ExpressionRef[] } => {
      if (!changed) return { prelude: [], operands };
      const temps = operands.map((_, i) => {
        const key = `${nesting}:${i}:${types[i]!}`;
        return settleTemps.get(key) ?? settleTemps.set(key, newTemp(types[i]!)).get(key)!;
      });
      return { prelude: operands.map((operand, i) => module.local.set(temps[i]!, operand)), operands: temps.map((temp, i) => module.local.get(temp, types[i]!)) };
    };
    const walkOperands = (expr: ExpressionRef, access: Accessor, region: { cost: number }): { operands: ExpressionRef[]; changed: boolean } => {
      const before = fuelWrites;
      const count = access.getNumOperands!(expr);
      const operands: ExpressionRef[] = [];
      nesting++;
      for (let i = 0; i < count; i++) operands.push(walk(access.getOperandAt!(expr, i), region));
      nesting--;
      return { operands, changed: fuelWrites !== before };
    };

    /** Walks `expr`, adding its cost to `region`; returns the expression to put in its place. */
    const walk = (expr: ExpressionRef, region: { cost: number }): ExpressionRef => {
      level++;
      if (level > deepest) deepest = level;
      if (level > MAX_NESTING) {
        throw new ModuleLimitError('nesting', level, MAX_NESTING, `Function ${plan.name} nests its instructions more than ${MAX_NESTING} deep, past what the fuel meter takes: flatten it.`);
      }
      try {
        return walkExpression(expr, region);
      } finally {
        level--;
      }
    };
    const walkExpression = (expr: ExpressionRef, region: { cost: number }): ExpressionRef => {
      const id: number = b.getExpressionId(expr);
      const rewritten = rewrite(expr, id, region);
      // What a snapshot cannot restore (a table entry, a dropped data segment) marks the instance dirty, and the host
      // discards it after the call. Decided here, around the rewriting, so that none of its early returns (data.drop
      // has no operands) can skip it.
      return UNRESTORABLE.has(id) ? module.block(null, [rewritten, markDirty()], b.none) : rewritten;
    };
    const rewrite = (expr: ExpressionRef, id: number, region: { cost: number }): ExpressionRef => {
      const spec = specs.get(id);
      if (spec === undefined) {
        throw new InvalidModuleError(`The module uses ${instructionName(b, id)}, an instruction the fuel meter does not support (e.g. exceptions, GC, table.init): build it without that feature.`, {
          details: { instruction: instructionName(b, id) },
        });
      }
      const relaxedOps = relaxed.get(id);
      if (relaxedOps !== undefined && b.getExpressionType(expr) === b.v128 && relaxedOps.has((cls(spec.cls).getOp as unknown as (e: ExpressionRef) => number)(expr))) {
        throw new InvalidModuleError('The module uses relaxed SIMD (e.g. f32x4.relaxed_madd, i32x4.relaxed_trunc_f32x4_s), whose results differ between machines: fuel and output must be the same everywhere, so the sandbox refuses it. Build without relaxed SIMD.', {
          details: { feature: 'relaxed-simd' },
        });
      }
      if (id !== ID.block && id !== ID.loop && id !== ID.nop) region.cost += FUEL_COSTS.instruction;
      const leaf = spec.fields.length === 0 && spec.list === undefined;
      const access = leaf && id !== ID.localGet && id !== ID.refFunc ? undefined : cls(spec.cls);
      if (access === undefined) return id === ID.memorySize ? module.global.get(VSIZE, i32) : expr;
      // The module's locals move up by two: the meter's parameters sit right after the function's own.
      if (id === ID.localGet || id === ID.localSet) {
        const index = access.getIndex!(expr);
        if (index >= p) access.setIndex!(expr, index + 2);
      }
      // A function reference could put a function into a table without the threaded signature (or its thunk).
      if (id === ID.refFunc) throw new InvalidModuleError(REF_FUNC);
      if (leaf) return expr;

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
        const common = Math.min(arms[0]!.cost, arms[1]!.cost);
        const spread = Math.max(arms[0]!.cost, arms[1]!.cost) - common;
        const folded = spread <= IF_FOLD_LIMIT;
        region.cost += folded ? common + spread : common;
        for (const { arm, walked, cost } of arms) {
          if (walked === 0) continue;
          const excess = folded ? 0 : cost - common;
          access[`set${arm}`]!(expr, excess === 0 ? walked : module.block(null, [chargeConst(excess), walked], AUTO));
        }
        return expr;
      }
      if (id === ID.call || id === ID.callIndirect) {
        if ((access.isReturn as unknown as (e: ExpressionRef) => boolean)(expr)) {
          throw new InvalidModuleError('The module uses tail calls (return_call), which the fuel meter does not support.');
        }
        return id === ID.call ? meterCall(expr, access, region) : meterCallIndirect(expr, access, region);
      }

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

      if (id === ID.tableGrow) return meterTableGrow(expr, access);
      if (id === ID.memoryGrow) {
        // The grow helper charges the fuel global: the counter goes there and back around it.
        const size = scratch(i32);
        return module.block(
          null,
          [module.local.set(size, access.getDelta!(expr)), module.global.set(FUEL, fuel()), module.local.set(size, module.call(GROW, [module.local.get(size, i32)], i32)), setFuel(fuelGlobal()), module.local.get(size, i32)],
          i32,
        );
      }
      if (id === ID.memoryFill || id === ID.memoryCopy || id === ID.memoryInit) {
        // ceil(bytes / bytesPerUnit), charged once the size is known and before the operation runs.
        const size = scratch(i32);
        const units = module.i64.shr_u(module.i64.add(module.i64.extend_u(module.local.get(size, i32)), module.i64.const(BigInt(FUEL_COSTS.bytesPerUnit - 1))), module.i64.const(BigInt(Math.log2(FUEL_COSTS.bytesPerUnit))));
        access.setSize!(expr, module.block(null, [module.local.set(size, access.getSize!(expr)), setFuel(module.i64.sub(fuel(), units)), trapIfOutOfFuel(), module.local.get(size, i32)], i32));
      }
      if (id === ID.return) {
        const value = access.getValue!(expr);
        return module.return(value === 0 ? fuel() : module.tuple.make([value, fuel()]));
      }
      return expr;
    };

    /**
     * `table.grow` is charged by the elements it asks for, before it runs, and refused (-1, as when the engine cannot
     * grow) when the tables and memory together would pass the cap; a grown table makes the instance dirty.
     */
    const meterTableGrow = (expr: ExpressionRef, access: Accessor): ExpressionRef => {
      const table = (b.getExpressionInfo(expr) as binaryenModule.TableGrowInfo).table;
      const value = access.getValue!(expr);
      const valueType = b.getExpressionType(value);
      const held = scratch(valueType);
      const delta = scratch(i32, 1);
      const grown = scratch(i32, 2);
      return module.block(
        null,
        [
          module.local.set(held, value),
          module.local.set(delta, access.getDelta!(expr)),
          setFuel(module.i64.sub(fuel(), module.i64.mul(u64(module.local.get(delta, i32)), module.i64.const(BigInt(FUEL_COSTS.tableGrowPerElement))))),
          trapIfOutOfFuel(),
          module.if(
            overCap(u64(module.global.get(VSIZE, i32)), module.i64.add(u64(module.global.get(TABLE_ELEMENTS, i32)), u64(module.local.get(delta, i32)))),
            module.block(null, [module.global.set(GROW_DENIED, module.i32.const(1)), module.local.set(grown, module.i32.const(-1))]),
            module.block(null, [
              module.local.set(grown, module.table.grow(table, module.local.get(held, valueType), module.local.get(delta, i32))),
              module.if(
                module.i32.ne(module.local.get(grown, i32), module.i32.const(-1)),
                module.block(null, [module.global.set(TABLE_ELEMENTS, module.i32.add(module.global.get(TABLE_ELEMENTS, i32), module.local.get(delta, i32))), markDirty()]),
              ),
            ]),
          ),
          module.local.get(grown, i32),
        ],
        i32,
      );
    };

    /** A call of one of the module's functions passes the counter and takes back what is left; a host call does not. */
    const meterCall = (expr: ExpressionRef, access: Accessor, region: { cost: number }): ExpressionRef => {
      const target = (access.getTarget as unknown as (e: number) => string)(expr);
      const { operands, changed } = walkOperands(expr, access, region);
      if (ownNames.has(target)) return receive(module.call(target, [...operands, fuel(), passDepth()], threaded(resultOf.get(target)!)), resultOf.get(target)!);
      // A host function may call back into the module (an export, e.g. the allocator): the fuel and depth globals
      // must hold the counters while it runs, and the counter takes back what the call-back burned.
      region.cost += FUEL_COSTS.hostCall;
      const info = b.getFunctionInfo(module.getFunction(target));
      const settled = settle(operands, b.expandType(info.params), changed);
      const call = module.call(target, settled.operands, info.results);
      const handOver = [module.global.set(FUEL, fuel()), module.global.set(DEPTH, passDepth())];
      if (info.results === b.none) return module.block(null, [...settled.prelude, ...handOver, call, setFuel(fuelGlobal())], b.none);
      const result = scratch(info.results);
      return module.block(null, [...settled.prelude, ...handOver, module.local.set(result, call), setFuel(fuelGlobal()), module.local.get(result, info.results)], info.results);
    };

    /** Through the table every entry is one of the module's functions (host functions get a threaded thunk). */
    const meterCallIndirect = (expr: ExpressionRef, access: Accessor, region: { cost: number }): ExpressionRef => {
      const params = b.expandType((access.getParams as unknown as (e: number) => number)(expr));
      const result = (access.getResults as unknown as (e: number) => number)(expr);
      if (b.expandType(result).length > 1) throw new InvalidModuleError('The module makes an indirect call of a type with several results (multi-value), which the fuel meter does not support.');
      const { operands, changed: operandsChanged } = walkOperands(expr, access, region);
      const before = fuelWrites;
      nesting++;
      const target = walk(access.getTarget!(expr), region);
      nesting--;
      // The table index evaluates after the operands: if it changes the counter, everything is settled first.
      const settled = settle([...operands, target], [...params, i32], operandsChanged || fuelWrites !== before);
      const index = settled.operands.pop()!;
      const table = (access.getTable as unknown as (e: number) => string)(expr);
      const call = module.call_indirect(table, index, [...settled.operands, fuel(), passDepth()], b.createType([...params, i64, i32]), threaded(result));
      const received = receive(call, result);
      return settled.prelude.length === 0 ? received : module.block(null, [...settled.prelude, received], result === b.none ? b.none : result);
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
      return module.block(exit, [module.block(oof, [leaveLoop]), module.call(TRAP_FUEL, [fuel()], b.none), module.unreachable()], type);
    };

    const entry = { cost: 0 };
    const body = walk(plan.body, entry);
    const slotBytes = (type: number): number => (type === b.v128 ? 16 : 8);
    const frame = FRAME_BASE_BYTES + [...plan.params, i64, i32, ...vars].reduce((sum, type) => sum + slotBytes(type), 0) + 8 * deepest;
    frames.set(plan.name, frame);
    for (const constant of frameConstants) cls('Const').setValueI32!(constant, Math.min(frame, maxDepth + 1));
    // The stack used is a parameter: every call passes on what it got plus its caller's frame, so nothing has to be
    // undone on return. Only functions on a call-graph cycle can nest without bound, so only they check it: their
    // own frame and the most the acyclic calls below them can add must fit.
    finishers.push((reserve) => {
      const enter = plan.tracked
        ? [
            chargeConst(entry.cost),
            module.if(
              module.i32.or(outOfFuel(), module.i32.gt_u(module.i32.add(module.local.get(DEPTH_LOCAL, i32), module.i32.const(reserve)), module.i32.const(maxDepth))),
              module.call(TRAP_ENTRY, [fuel()], b.none),
            ),
          ]
        : [chargeConst(entry.cost), trapIfOutOfFuel()];
      const metered = plan.result === b.none ? module.block(null, [...enter, body, fuel()], i64) : module.block(null, [...enter, module.tuple.make([body, fuel()])], threaded(plan.result));
      module.removeFunction(plan.name);
      module.addFunction(plan.name, b.createType([...plan.params, i64, i32]), threaded(plan.result), vars, metered);
    });
  }
  const below = stackBelow(edges, recursive, frames);
  /** A function's own frame and the most below it, clamped just past the limit (all that matters is that it is over) so sums stay in i32. */
  const reserveOf = (name: string): number => Math.min((frames.get(name) ?? 0) + (below.get(name) ?? 0), maxDepth + 1);
  plans.forEach((plan, i) => finishers[i]!(reserveOf(plan.name)));

  /** The host-facing function for an own function: reads the fuel global, calls, writes back what is left. */
  const wrappers = new Map<string, string>();
  const wrapper = (name: string): string => {
    const existing = wrappers.get(name);
    if (existing !== undefined) return existing;
    const plan = plans.find((candidate) => candidate.name === name)!;
    // A function that does not check the stack itself (not recursive) has its whole, static, need checked here.
    const check = plan.tracked
      ? []
      : [module.if(module.i32.gt_u(module.i32.add(module.global.get(DEPTH, i32), module.i32.const(reserveOf(name))), module.i32.const(maxDepth)), module.call(TRAP_ENTRY, [fuelGlobal()], b.none))];
    const call = module.call(name, [...plan.params.map((type, i) => module.local.get(i, type)), fuelGlobal(), module.global.get(DEPTH, i32)], threaded(plan.result));
    const type = threaded(plan.result);
    const tuple = plan.params.length;
    const body =
      plan.result === b.none
        ? module.block(null, [...check, module.global.set(FUEL, call)])
        : module.block(null, [...check, module.local.set(tuple, call), module.global.set(FUEL, module.tuple.extract(module.local.get(tuple, type), 1)), module.tuple.extract(module.local.get(tuple, type), 0)], plan.result);
    const wrapped = `__forge_export_${name}`;
    module.addFunction(wrapped, b.createType(plan.params), plan.result, plan.result === b.none ? [] : [type], body);
    wrappers.set(name, wrapped);
    return wrapped;
  };
  const exports: { name: string; value: string }[] = [];
  for (let i = 0; i < module.getNumExports(); i++) {
    const info = b.getExportInfo(module.getExportByIndex(i));
    if (info.kind === b.ExternalFunction && ownNames.has(info.value)) exports.push(info);
  }
  for (const { name, value } of exports) {
    module.removeExport(name);
    module.addFunctionExport(wrapper(value), name);
  }
  if (startName !== undefined) module.addFunctionExport(ownNames.has(startName) ? wrapper(startName) : startName, METER_EXPORTS.start);

  // Table entries are rebuilt: an element segment holds typed references, made before the signatures changed. A
  // host function placed in a table is reached through a thunk with the threaded signature, which charges the host
  // call and hands the counters over through the globals as a direct host call does.
  const thunks = new Map<string, string>();
  const thunk = (name: string): string => {
    if (!imported.has(name)) return name;
    const existing = thunks.get(name);
    if (existing !== undefined) return existing;
    const info = b.getFunctionInfo(module.getFunction(name));
    if (b.expandType(info.results).length > 1) throw new InvalidModuleError(`Host function ${name} returns several values and sits in a table, which the fuel meter does not support.`);
    const params = b.expandType(info.params);
    const left = params.length;
    const prelude = [
      module.global.set(FUEL, module.i64.sub(module.local.get(left, i64), module.i64.const(BigInt(FUEL_COSTS.hostCall)))),
      module.if(module.i64.lt_s(fuelGlobal(), ZERO()), module.call(TRAP_FUEL, [fuelGlobal()], b.none)),
      module.global.set(DEPTH, module.local.get(left + 1, i32)),
    ];
    const call = module.call(name, params.map((type, i) => module.local.get(i, type)), info.results);
    const thunked = `__forge_thunk_${name}`;
    const body = info.results === b.none ? module.block(null, [...prelude, call, fuelGlobal()], i64) : module.block(null, [...prelude, module.tuple.make([call, fuelGlobal()])], threaded(info.results));
    module.addFunction(thunked, b.createType([...params, i64, i32]), threaded(info.results), [], body);
    thunks.set(name, thunked);
    return thunked;
  };
  const rebuild = elementSegments(b, module);
  // binaryen.js names only functions: an entry that is another expression (ref.null) comes back as ''.
  if (rebuild.some((info) => info.data.some((name) => name === ''))) throw new InvalidModuleError('The module has an element segment with entries other than functions (e.g. ref.null), which the fuel meter does not support.');
  for (const segment of rebuild) {
    module.removeElementSegment(segment.name);
    module.addActiveElementSegment(segment.table, segment.name, segment.data.map(thunk), segment.offset);
  }

  // No module.validate(): it prints every error of a bad module to the console (tens of thousands of lines). The
  // loader compiles the metered bytes with V8, which decides and reports the first error as INVALID_MODULE.
  return { bytes: module.emitBinary(), meteredFunctions: own.length };
}
