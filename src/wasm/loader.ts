import { createHash } from 'node:crypto';
import type { OverlayManifest } from '../manifest.ts';
import { ABI, type Capability } from './abi.ts';
import { capResources, formatFunctionType, hasWasmHeader, scanModule, stripCustomSections, TABLE_ELEMENT_BYTES, type FunctionType, type ModuleShape } from './binary.ts';
import { CapabilityError, FuelLimitError, HashMismatchError, InvalidModuleError, MemoryLimitError } from './errors.ts';
import { DEFAULT_MAX_STACK_BYTES } from './fuel-meter.ts';
import { BUILTIN_HOST_FUNCTIONS, type HostFunction, type HostFunctionSignature } from './host-functions.ts';
import { START_FUEL_BUDGET } from './instance.ts';
import type { MeteredModuleCache } from './metered-cache.ts';

/** A verified, metered, memory-capped overlay module, ready to instantiate in either engine. */
export interface CompiledOverlay {
  manifest: OverlayManifest;
  sha256: string;
  /** The metered module (structured-cloneable to a strict worker). */
  module: WebAssembly.Module;
  /** Capabilities in force: declared in the manifest and granted by the embedding service. */
  granted: readonly Capability[];
  /** Kernel host functions the module imports (builtins excluded). */
  hostImports: readonly HostFunction[];
  /** True when it imports an async host function (JSPI or a worker hop is needed). */
  usesAsyncHost: boolean;
  /** Exports with the overlay ABI, `(string) → string`. */
  exports: readonly string[];
  maxStackBytes: number;
  /** The most fuel the service allows one call (undefined: no ceiling beyond the manifest's budgets). */
  maxFuel: number | undefined;
  /** Fuel for the start function at load: {@link START_FUEL_BUDGET}, within the service's ceiling. */
  startBudget: number;
}

export interface CompileOptions {
  manifest: OverlayManifest;
  /** What the embedding service grants; the overlay gets the intersection with its manifest's capabilities. */
  grant: readonly Capability[];
  /** Kernel host functions beyond the builtins (e.g. `db_read`), each gated by its capability. */
  hostFunctions?: readonly HostFunction[];
  cache: MeteredModuleCache;
  maxStackBytes?: number;
  /** The most memory (64 KiB pages, tables included) any overlay may have; default {@link DEFAULT_MEMORY_CEILING_PAGES}. */
  maxMemoryPages?: number;
  /** The most fuel any one call may have (the manifest's budgets, and the start function's); default no ceiling. */
  maxFuel?: number;
}

/** The kernel's ceiling on an overlay's memory cap unless the service sets one: 4,096 pages = 256 MiB. */
export const DEFAULT_MEMORY_CEILING_PAGES = 4_096;

/** The signature a host function has in wasm: strings and i32s are both i32 (a pointer, a number). */
function wasmType(signature: HostFunctionSignature): FunctionType {
  return { params: signature.params.map(() => 'i32'), results: signature.result === 'void' ? [] : ['i32'] };
}

/** The AssemblyScript runtime's imports an overlay may have without a capability, with their signatures. */
const RUNTIME_IMPORTS: Readonly<Record<string, FunctionType>> = {
  abort: { params: ['i32', 'i32', 'i32', 'i32'], results: [] },
  trace: { params: ['i32', 'i32', 'f64', 'f64', 'f64', 'f64', 'f64'], results: [] },
  seed: { params: [], results: ['f64'] },
};
/** The signature of every export with the overlay ABI (a string in, a string out), and of the allocator. */
const EXPORT_TYPE: FunctionType = { params: ['i32'], results: ['i32'] };
const ALLOC_TYPE: FunctionType = { params: ['i32', 'i32'], results: ['i32'] };

function sameType(a: FunctionType | undefined, b: FunctionType): boolean {
  return a !== undefined && formatFunctionType(a) === formatFunctionType(b);
}

function signatureMismatch(what: string, actual: FunctionType | undefined, expected: FunctionType): InvalidModuleError {
  const found = actual === undefined ? 'something that is not a function' : formatFunctionType(actual);
  return new InvalidModuleError(`The overlay's ${what} has the signature ${found}, but it must be ${formatFunctionType(expected)}: build the overlay with "forge-kernel build" and the SDK.`, {
    details: { what, actual: actual === undefined ? null : formatFunctionType(actual), expected: formatFunctionType(expected) },
  });
}

/**
 * Checks every import of a module against the overlay ABI, by name and by signature: a runtime import, or a host
 * function this kernel has whose capability the manifest declares and the service grants. Returns the kernel host
 * functions it imports (builtins excluded); throws {@link CapabilityError} naming the import (`details.import`,
 * `capability`, `declared`) or {@link InvalidModuleError} naming both signatures.
 */
export function checkImports<T extends HostFunctionSignature>(
  shape: ModuleShape,
  options: {
    manifest: OverlayManifest;
    grant: readonly Capability[];
    hostFunctions: readonly T[];
    /** Let imports of host functions this kernel does not know pass (a build: the kernel that loads it decides). */
    allowUnknownHostFunctions?: boolean;
  },
): T[] {
  const { manifest } = options;
  const granted = manifest.capabilities.filter((c) => options.grant.includes(c));
  const hostImports: T[] = [];
  for (const entry of shape.imports) {
    const where = `${entry.module}.${entry.name}`;
    const runtime = entry.module === ABI.runtimeModule && entry.kind === 'function' && Object.hasOwn(RUNTIME_IMPORTS, entry.name) ? RUNTIME_IMPORTS[entry.name] : undefined;
    if (runtime !== undefined) {
      if (!sameType(entry.type, runtime)) throw signatureMismatch(`import ${where}`, entry.type, runtime);
      continue;
    }
    if (entry.module !== ABI.hostModule || entry.kind !== 'function') {
      throw new CapabilityError(`The overlay imports ${where} (${entry.kind}), which is not part of the overlay ABI: overlays may import only host functions from "${ABI.hostModule}" and ${Object.keys(RUNTIME_IMPORTS).map((n) => `${ABI.runtimeModule}.${n}`).join(', ')}.`, { import: where });
    }
    const custom = options.hostFunctions.find((f) => f.name === entry.name);
    const signature: HostFunctionSignature | undefined = custom ?? BUILTIN_HOST_FUNCTIONS.find((f) => f.name === entry.name);
    if (signature === undefined) {
      if (options.allowUnknownHostFunctions === true) continue;
      throw new CapabilityError(`The overlay imports ${where}, but this kernel has no such host function.`, { import: where });
    }
    if (!sameType(entry.type, wasmType(signature))) throw signatureMismatch(`import ${where}`, entry.type, wasmType(signature));
    if (!granted.includes(signature.capability)) {
      const declared = manifest.capabilities.includes(signature.capability);
      throw new CapabilityError(
        declared
          ? `The overlay imports ${where}, which needs ${signature.capability}: its manifest declares it, but the service did not grant it (add it to "grant" when loading).`
          : `The overlay imports ${where}, which needs ${signature.capability}, but its manifest does not declare that capability.`,
        { import: where, capability: signature.capability, declared, granted: options.grant.includes(signature.capability) },
      );
    }
    if (custom !== undefined) hostImports.push(custom);
  }
  return hostImports;
}

/**
 * The exports the host calls, checked by signature: the memory, the allocator `__new`, `run` and the other
 * lifecycle exports exactly as the ABI says. Returns the callable exports: every function export (other than the
 * runtime's `__…`) with the ABI's signature; one with another signature cannot be called as an overlay function.
 */
export function checkExports(shape: ModuleShape): string[] {
  const find = (name: string) => shape.exports.find((e) => e.name === name);
  if (find(ABI.memoryExport)?.kind !== 'memory') {
    throw new InvalidModuleError(`The overlay does not export its memory as "${ABI.memoryExport}": compile it with --exportRuntime (forge-kernel build does).`);
  }
  const alloc = find(ABI.allocExport);
  if (alloc === undefined) throw new InvalidModuleError(`The overlay does not export "${ABI.allocExport}": compile it with --exportRuntime (forge-kernel build does).`);
  if (!sameType(alloc.type, ALLOC_TYPE)) throw signatureMismatch(`export ${ABI.allocExport}`, alloc.type, ALLOC_TYPE);
  for (const required of ABI.requiredExports) {
    if (find(required) === undefined) throw new InvalidModuleError(`The overlay does not export "${required}": every overlay exports run(input: string): string.`);
  }
  for (const lifecycle of ABI.lifecycleExports) {
    const entry = find(lifecycle);
    if (entry !== undefined && !sameType(entry.type, EXPORT_TYPE)) throw signatureMismatch(`export ${lifecycle}`, entry.type, EXPORT_TYPE);
  }
  return shape.exports.filter((e) => e.kind === 'function' && !e.name.startsWith('__') && sameType(e.type, EXPORT_TYPE)).map((e) => e.name);
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Verifies and prepares overlay bytes: the sha256 must equal the manifest's (checked on exactly the bytes that are
 * compiled; fail closed), the module must be valid wasm, every import must be a runtime import or a host function
 * whose capability is in force, and `run` must exist. Then fuel metering is injected (cached by content) and the
 * memory maximum is fixed to the manifest's cap.
 */
export async function compileOverlay(bytes: Uint8Array, options: CompileOptions): Promise<CompiledOverlay> {
  if (!(bytes instanceof Uint8Array)) throw new InvalidModuleError('Overlay bytes must be a Uint8Array (or Buffer) holding a .wasm file.');
  const { manifest } = options;
  const sha256 = sha256Hex(bytes);
  if (sha256 !== manifest.sha256) throw new HashMismatchError(manifest.sha256, sha256);
  if (!hasWasmHeader(bytes)) throw new InvalidModuleError('Not a WebAssembly module: the file does not start with the \\0asm header. Load the .wasm that "forge-kernel build" wrote.');
  // Our own reading first (ceilings, one memory, reserved names, signatures); then V8 decides what is valid.
  const shape = scanModule(bytes);
  try {
    await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  } catch (error) {
    throw new InvalidModuleError(`The module is not valid WebAssembly: ${(error as Error).message}`, { cause: error });
  }
  const granted = manifest.capabilities.filter((c) => options.grant.includes(c));
  const hostImports = checkImports(shape, { manifest, grant: options.grant, hostFunctions: options.hostFunctions ?? [] });
  const exports = checkExports(shape);
  const ceiling = options.maxMemoryPages ?? DEFAULT_MEMORY_CEILING_PAGES;
  if (manifest.memoryPages > ceiling) {
    throw new MemoryLimitError('(load)', ceiling, `The manifest asks for ${manifest.memoryPages} pages of memory; this kernel allows an overlay at most ${ceiling} (${ceiling / 16} MiB): lower "memoryPages", or raise the kernel's maxMemoryPages.`);
  }

  const { maxFuel } = options;
  if (maxFuel !== undefined) {
    const over = Object.entries(manifest.fuel).find(([, budget]) => budget > maxFuel);
    if (over !== undefined) {
      const [exportName, budget] = over;
      throw new FuelLimitError(exportName, budget, maxFuel, `The manifest gives "${exportName}" a fuel budget of ${budget}; this kernel allows a call at most ${maxFuel}: lower "fuel.${exportName}", or raise the kernel's maxFuel.`);
    }
  }

  const maxStackBytes = options.maxStackBytes ?? DEFAULT_MAX_STACK_BYTES;
  // Names come from the custom name section: without it, no function of the module can take a name the meter uses.
  const metered = capResources(await options.cache.get(stripCustomSections(bytes), sha256, maxStackBytes), { memoryPages: manifest.memoryPages, tableElementBytes: TABLE_ELEMENT_BYTES });
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compile(metered as Uint8Array<ArrayBuffer>);
  } catch (error) {
    // The metered module can pass an engine limit the original stayed under (locals, parameters, body size).
    throw new InvalidModuleError(`The metered module does not compile: ${(error as Error).message}`, { cause: error });
  }
  return {
    manifest,
    sha256,
    module,
    granted,
    hostImports,
    usesAsyncHost: hostImports.some((f) => f.async),
    exports,
    maxStackBytes,
    maxFuel,
    startBudget: Math.min(START_FUEL_BUDGET, maxFuel ?? START_FUEL_BUDGET),
  };
}
