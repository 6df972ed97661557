import { createHash } from 'node:crypto';
import type { OverlayManifest } from '../manifest.ts';
import { ABI, type Capability } from './abi.ts';
import { capMemory, hasWasmHeader } from './binary.ts';
import { CapabilityError, HashMismatchError, InvalidModuleError } from './errors.ts';
import { DEFAULT_MAX_CALL_DEPTH } from './fuel-meter.ts';
import { BUILTIN_HOST_FUNCTIONS, type HostFunction, type HostFunctionSignature } from './host-functions.ts';
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
  maxCallDepth: number;
}

export interface CompileOptions {
  manifest: OverlayManifest;
  /** What the embedding service grants; the overlay gets the intersection with its manifest's capabilities. */
  grant: readonly Capability[];
  /** Kernel host functions beyond the builtins (e.g. `db_read`), each gated by its capability. */
  hostFunctions?: readonly HostFunction[];
  cache: MeteredModuleCache;
  maxCallDepth?: number;
}

/**
 * Checks every import of a module against the overlay ABI: a runtime import, or a host function this kernel has
 * whose capability the manifest declares and the service grants. Returns the kernel host functions it imports
 * (builtins excluded); throws {@link CapabilityError} naming the import (`details.import`, `capability`, `declared`).
 */
export function checkImports<T extends HostFunctionSignature>(
  module: WebAssembly.Module,
  options: { manifest: OverlayManifest; grant: readonly Capability[]; hostFunctions: readonly T[] },
): T[] {
  const { manifest } = options;
  const granted = manifest.capabilities.filter((c) => options.grant.includes(c));
  const hostImports: T[] = [];
  for (const entry of WebAssembly.Module.imports(module)) {
    const where = `${entry.module}.${entry.name}`;
    if (entry.module === ABI.runtimeModule && entry.kind === 'function' && ABI.runtimeImports.includes(entry.name)) continue;
    if (entry.module !== ABI.hostModule || entry.kind !== 'function') {
      throw new CapabilityError(`The overlay imports ${where} (${entry.kind}), which is not part of the overlay ABI: overlays may import only host functions from "${ABI.hostModule}" and ${ABI.runtimeImports.map((n) => `${ABI.runtimeModule}.${n}`).join(', ')}.`, { import: where });
    }
    const custom = options.hostFunctions.find((f) => f.name === entry.name);
    const signature: HostFunctionSignature | undefined = custom ?? BUILTIN_HOST_FUNCTIONS.find((f) => f.name === entry.name);
    if (signature === undefined) {
      throw new CapabilityError(`The overlay imports ${where}, but this kernel has no such host function.`, { import: where });
    }
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
  let original: WebAssembly.Module;
  try {
    original = await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  } catch (error) {
    throw new InvalidModuleError(`The module is not valid WebAssembly: ${(error as Error).message}`, { cause: error });
  }

  const granted = manifest.capabilities.filter((c) => options.grant.includes(c));
  const hostImports = checkImports(original, { manifest, grant: options.grant, hostFunctions: options.hostFunctions ?? [] });

  const exports = WebAssembly.Module.exports(original)
    .filter((e) => e.kind === 'function' && !e.name.startsWith('__'))
    .map((e) => e.name);
  for (const required of ABI.requiredExports) {
    if (!exports.includes(required)) throw new InvalidModuleError(`The overlay does not export "${required}": every overlay exports run(input: string): string.`);
  }
  const runtime = WebAssembly.Module.exports(original).map((e) => e.name);
  if (!runtime.includes(ABI.allocExport) || !runtime.includes(ABI.memoryExport)) {
    throw new InvalidModuleError(`The overlay does not export its memory and "${ABI.allocExport}": compile it with --exportRuntime (forge-kernel build does).`);
  }

  const maxCallDepth = options.maxCallDepth ?? DEFAULT_MAX_CALL_DEPTH;
  const metered = capMemory(await options.cache.get(bytes, sha256, maxCallDepth), manifest.memoryPages);
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
    maxCallDepth,
  };
}
