import { isForgeError } from '../errors.ts';
import { ABI } from './abi.ts';
import {
  ExportNotFoundError,
  InvalidOutputError,
  MemoryLimitError,
  OutOfFuelError,
  OverlayTrapError,
  StackOverflowError,
} from './errors.ts';
import { METER_EXPORTS, TRAP_REASON } from './fuel-meter.ts';
import { CallEffects, type HostFunctionSignature } from './host-functions.ts';

/** Exports that belong to the runtime or the meter, never callable as overlay functions. */
const RESERVED_EXPORT = /^(__|memory$|table$)/;
const PAGE_BYTES = 65_536;
/** Fuel for the module's start function (AssemblyScript's static initializers) at instantiation. */
export const START_FUEL_BUDGET = 10_000_000;

export interface InstanceOptions {
  module: WebAssembly.Module;
  /** The host's memory cap (pages): grows past it fail, and are reported as MEMORY_LIMIT. */
  maxPages: number;
  /** The meter's call-depth limit, for the STACK_OVERFLOW message. */
  maxCallDepth: number;
  /** Kernel host functions the module imports (not the builtins). */
  hostImports: readonly HostFunctionSignature[];
  /**
   * Runs a kernel host function with lifted arguments. Relaxed engine: returns the value or, for async
   * functions, a promise (the overlay suspends through JSPI). Strict worker: a blocking hop to the kernel thread.
   */
  invokeHost(signature: HostFunctionSignature, args: (string | number)[]): unknown;
  /** Wrap async host functions with `WebAssembly.Suspending` and exports with `WebAssembly.promising` (JSPI). */
  suspending: boolean;
}

/** The outcome of one successful call: the JSON the overlay returned (text and parsed) and the fuel it burned. */
export interface RawCallResult {
  outputJson: string;
  /** The parsed output, where it was parsed in this thread (a strict worker sends only the text). */
  output?: unknown;
  fuelUsed: number;
}

type WasmFunction = (...args: number[]) => unknown;

/**
 * One instantiated, metered overlay module: marshals JSON strings in and out through the AssemblyScript runtime,
 * sets the fuel budget before a call, and turns traps into typed errors. After any failure the instance is
 * `broken` and must be dropped: its memory and globals may be mid-update.
 */
export class OverlayInstance {
  readonly callable: readonly string[];
  broken = false;
  readonly #exports: Record<string, unknown>;
  readonly #memory: WebAssembly.Memory;
  readonly #fuel: WebAssembly.Global;
  readonly #depth: WebAssembly.Global;
  readonly #trap: WebAssembly.Global;
  readonly #growDenied: WebAssembly.Global;
  readonly #allocate: WasmFunction;
  readonly #entries = new Map<string, WasmFunction>();
  readonly #maxPages: number;
  readonly #maxCallDepth: number;
  readonly #virtualPages: WebAssembly.Global;
  readonly #snapshotGlobals: WebAssembly.Global[] = [];
  #snapshot: { memory: Uint8Array; pages: number; globals: unknown[] } | undefined;
  /** True once a call may have changed state since the snapshot. */
  #dirty = false;
  #effects = new CallEffects();
  #abort: string | undefined;
  #view: Buffer | undefined;

  constructor(options: InstanceOptions) {
    this.#maxPages = options.maxPages;
    this.#maxCallDepth = options.maxCallDepth;
    const instance = new WebAssembly.Instance(options.module, this.#imports(options));
    this.#exports = instance.exports;
    const global = (name: string): WebAssembly.Global => {
      const value = this.#exports[name];
      if (!(value instanceof WebAssembly.Global)) throw new TypeError(`metered module lacks ${name}`);
      return value;
    };
    this.#fuel = global(METER_EXPORTS.fuel);
    this.#depth = global(METER_EXPORTS.depth);
    this.#trap = global(METER_EXPORTS.trapReason);
    this.#growDenied = global(METER_EXPORTS.growDenied);
    this.#virtualPages = global(METER_EXPORTS.virtualPages);
    global(METER_EXPORTS.maxPages).value = options.maxPages;
    for (let i = 0; ; i++) {
      const value = this.#exports[`${METER_EXPORTS.snapshotPrefix}${i}`];
      if (!(value instanceof WebAssembly.Global)) break;
      this.#snapshotGlobals.push(value);
    }
    const memory = this.#exports[ABI.memoryExport];
    const allocate = this.#exports[ABI.allocExport];
    if (!(memory instanceof WebAssembly.Memory) || typeof allocate !== 'function') {
      throw new ExportNotFoundError(ABI.allocExport, ['(the module must export its memory and the runtime: compile with --exportRuntime)']);
    }
    this.#memory = memory;
    this.#allocate = allocate as WasmFunction;
    this.#virtualPages.value = memory.buffer.byteLength / PAGE_BYTES;

    const wrap = options.suspending && options.hostImports.some((f) => f.async);
    const callable: string[] = [];
    for (const [name, value] of Object.entries(this.#exports)) {
      if (typeof value !== 'function' || RESERVED_EXPORT.test(name) || value.length !== 1) continue;
      callable.push(name);
      this.#entries.set(name, (wrap ? WebAssembly.promising(value as WasmFunction) : value) as WasmFunction);
    }
    this.callable = callable;

    const start = this.#exports[METER_EXPORTS.start];
    if (typeof start === 'function') this.#runStart(start as WasmFunction);
    const pages = this.#virtualPages.value as number;
    const image = new Uint8Array(memory.buffer, 0, pages * PAGE_BYTES);
    let used = image.length;
    while (used > 0 && image[used - 1] === 0) used--;
    this.#snapshot = {
      // Only the written prefix is kept: the rest of the start-time memory is zero, and restoring zeroes it.
      memory: image.slice(0, used),
      pages,
      globals: this.#snapshotGlobals.map((g) => g.value as unknown),
    };
  }

  /**
   * Calls `exportName` with a JSON string under `budget` fuel. Returns the result synchronously when nothing
   * suspended (no async host function), else a promise. Throws or rejects with a typed error, leaving the instance
   * broken, on any failure. `effects` collects the call's logs and events.
   */
  call(exportName: string, inputJson: string, budget: number, effects: CallEffects): RawCallResult | Promise<RawCallResult> {
    const entry = this.#entries.get(exportName);
    if (entry === undefined) throw new ExportNotFoundError(exportName, this.callable);
    this.#effects = effects;
    this.#abort = undefined;
    if (this.#dirty) this.#restore();
    this.#dirty = true;
    this.#reset(budget);
    let pointer: unknown;
    try {
      pointer = entry(this.#lowerString(inputJson));
    } catch (error) {
      throw this.#fail(error, exportName, budget);
    }
    if (pointer instanceof Promise) {
      return pointer.then(
        (resolved: unknown) => this.#finish(exportName, budget, resolved),
        (error: unknown) => {
          throw this.#fail(error, exportName, budget);
        },
      );
    }
    return this.#finish(exportName, budget, pointer);
  }

  #finish(exportName: string, budget: number, pointer: unknown): RawCallResult {
    try {
      const left = Number(this.#fuel.value as bigint);
      // Checks sit at function entries and loop headers; the charge of a final straight-line region can overdraw
      // the budget without passing one. Overdrawn is out of fuel, whatever the overlay returned.
      if (left < 0) throw new OutOfFuelError(budget, exportName);
      const [outputJson, output] = this.#liftOutput(exportName, pointer);
      return { outputJson, output, fuelUsed: budget - left };
    } catch (error) {
      throw this.#fail(error, exportName, budget);
    }
  }

  #fail(error: unknown, exportName: string, budget: number): Error {
    this.broken = true;
    return this.#classify(error, exportName, budget);
  }

  #reset(budget: number): void {
    this.#fuel.value = BigInt(budget);
    this.#depth.value = 0;
    this.#trap.value = TRAP_REASON.none;
    this.#growDenied.value = 0;
  }

  /**
   * Puts the instance back to its state right after instantiation: memory contents, every mutable global and the
   * memory size the module sees. Each call thus starts from the same state, so its fuel depends only on the module
   * and the input, and nothing of one caller's data is visible to the next.
   */
  #restore(): void {
    const snapshot = this.#snapshot;
    if (snapshot === undefined) return;
    const memory = new Uint8Array(this.#memory.buffer, 0, snapshot.pages * PAGE_BYTES);
    memory.set(snapshot.memory);
    memory.fill(0, snapshot.memory.length);
    this.#virtualPages.value = snapshot.pages;
    for (let i = 0; i < this.#snapshotGlobals.length; i++) (this.#snapshotGlobals[i] as WebAssembly.Global).value = snapshot.globals[i];
  }

  #runStart(start: WasmFunction): void {
    this.#reset(START_FUEL_BUDGET);
    try {
      start();
    } catch (error) {
      this.broken = true;
      throw this.#classify(error, '(start)', START_FUEL_BUDGET);
    }
  }

  #imports(options: InstanceOptions): WebAssembly.Imports {
    const env: Record<string, WebAssembly.ImportValue> = {
      abort: (message: number, file: number, line: number, column: number) => {
        this.#abort = `${this.#liftString(message) || 'abort'} at ${this.#liftString(file) || '?'}:${line}:${column}`;
        throw new OverlayTrapError('(overlay)', this.#abort);
      },
      trace: (message: number, count: number, ...values: number[]) => {
        this.#effects.log(0, `trace: ${this.#liftString(message)} ${values.slice(0, count).join(', ')}`.trimEnd());
      },
      seed: () => ABI.randomSeed,
    };
    const forge: Record<string, WebAssembly.ImportValue> = {
      log: (level: number, message: number) => {
        this.#effects.log(level, this.#liftString(message));
      },
      event_publish: (type: number, payload: number) => this.#effects.publish(this.#liftString(type), this.#liftString(payload)),
    };
    for (const signature of options.hostImports) {
      const lift = (raw: number[]): (string | number)[] => signature.params.map((type, i) => (type === 'string' ? this.#liftString(raw[i] ?? 0) : (raw[i] ?? 0)));
      const lower = (value: unknown): number | undefined => {
        if (signature.result === 'void') return undefined;
        if (signature.result === 'i32') return Number(value) | 0;
        return this.#lowerString(typeof value === 'string' ? value : JSON.stringify(value ?? null));
      };
      if (signature.async && options.suspending) {
        forge[signature.name] = new WebAssembly.Suspending(async (...raw: number[]) => lower(await options.invokeHost(signature, lift(raw)))) as unknown as WebAssembly.ImportValue;
      } else {
        forge[signature.name] = (...raw: number[]) => lower(options.invokeHost(signature, lift(raw)));
      }
    }
    return { [ABI.runtimeModule]: env, [ABI.hostModule]: forge };
  }

  /**
   * A Buffer over the current memory (re-made after a grow detaches the old one): Node's native UTF-16 copy in and
   * out is several times faster than a code-unit loop or TextDecoder.
   */
  #bytes(): Buffer {
    const buffer = this.#memory.buffer;
    if (this.#view?.buffer !== buffer) this.#view = Buffer.from(buffer);
    return this.#view;
  }

  /** Copies a JS string into a new AssemblyScript string (UTF-16) and returns its pointer. */
  #lowerString(text: string): number {
    const pointer = (this.#allocate(text.length << 1, ABI.stringClassId) as number) >>> 0;
    this.#bytes().write(text, pointer, text.length << 1, 'utf16le');
    return pointer;
  }

  /** Reads an AssemblyScript string; lenient (host-function arguments are checked by the host function). */
  #liftString(pointer: number): string {
    const address = pointer >>> 0;
    if (address === 0) return '';
    const buffer = this.#memory.buffer;
    if (address < ABI.sizeOffset || address % 2 !== 0 || address > buffer.byteLength) return '';
    const size = new DataView(buffer).getUint32(address - ABI.sizeOffset, true);
    if (address + size > buffer.byteLength) return '';
    return this.#bytes().toString('utf16le', address, address + (size & ~1));
  }

  /** Reads the output string strictly: bounds, size cap, well-formed UTF-16, then JSON (text and parsed value). */
  #liftOutput(exportName: string, pointer: unknown): [string, unknown] {
    if (typeof pointer !== 'number') throw new InvalidOutputError(exportName, 'it did not return a string');
    const address = pointer >>> 0;
    const buffer = this.#memory.buffer;
    if (address === 0) throw new InvalidOutputError(exportName, 'it returned null');
    if (address < ABI.sizeOffset || address % 2 !== 0 || address > buffer.byteLength) {
      throw new InvalidOutputError(exportName, `its result pointer ${address} is outside its memory`);
    }
    const size = new DataView(buffer).getUint32(address - ABI.sizeOffset, true);
    if (size > ABI.maxOutputBytes) throw new InvalidOutputError(exportName, `it is ${size} bytes; the limit is ${ABI.maxOutputBytes}`);
    if (address + size > buffer.byteLength || size % 2 !== 0) throw new InvalidOutputError(exportName, 'its string header is corrupt');
    const text = this.#bytes().toString('utf16le', address, address + size);
    if (!text.isWellFormed()) throw new InvalidOutputError(exportName, 'it is not well-formed Unicode text (a lone surrogate cannot be encoded as UTF-8)');
    try {
      return [text, JSON.parse(text)];
    } catch {
      throw new InvalidOutputError(exportName, `it is not JSON (starts with ${JSON.stringify(text.slice(0, 40))})`);
    }
  }

  #classify(error: unknown, exportName: string, budget: number): Error {
    const reason = this.#trap.value as number;
    if (reason === TRAP_REASON.outOfFuel) return new OutOfFuelError(budget, exportName);
    if (reason === TRAP_REASON.callDepth) return new StackOverflowError(exportName, this.#maxCallDepth);
    if (error instanceof RangeError && /call stack/i.test(error.message)) return new StackOverflowError(exportName, this.#maxCallDepth);
    const trapped = error instanceof WebAssembly.RuntimeError || error instanceof OverlayTrapError;
    // AssemblyScript's allocator traps (or aborts) when a grow fails: the denied grow is the real cause.
    if (trapped && (this.#growDenied.value as number) !== 0) return new MemoryLimitError(exportName, this.#maxPages);
    if (error instanceof OverlayTrapError && this.#abort !== undefined) return new OverlayTrapError(exportName, `abort: ${this.#abort}`);
    if (isForgeError(error)) return error;
    if (error instanceof WebAssembly.RuntimeError) return new OverlayTrapError(exportName, error.message, { cause: error });
    return error instanceof Error ? error : new Error(String(error));
  }
}

