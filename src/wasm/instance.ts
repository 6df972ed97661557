import { isForgeError } from '../errors.ts';
import { jsonNestsDeeperThan, MAX_JSON_NESTING } from '../json-nesting.ts';
import { ABI } from './abi.ts';
import {
  ExportNotFoundError,
  HostArgumentTooLargeError,
  HostCallOutsideCallError,
  InstantiationError,
  InvalidAllocationError,
  InvalidEventError,
  InvalidOutputError,
  MemoryLimitError,
  OutOfFuelError,
  OverlayTrapError,
  ReplyTooLargeError,
  StackOverflowError,
  UnserializableMessageError,
} from './errors.ts';
import { FUEL_COSTS, METER_EXPORTS, TRAP_REASON } from './fuel-meter.ts';
import { CallEffects, EFFECT_LIMITS, type HostFunctionSignature } from './host-functions.ts';
import { nonzeroSpans, StartSnapshot } from './start-snapshot.ts';

/** Exports that belong to the runtime or the meter, never callable as overlay functions. */
const RESERVED_EXPORT = /^(__|memory$|table$)/;
const PAGE_BYTES = 65_536;
/** Fuel for the module's start function (AssemblyScript's static initializers) when the overlay is loaded. */
export const START_FUEL_BUDGET = 10_000_000;
/**
 * Past this much real memory an instance is not reset but replaced: resetting zeroes every byte of it before the
 * next call (a module can store past the size it sees), while a fresh instance gets fresh pages from the system
 * that are zero without being touched, and only the snapshot's chunks are written.
 */
const RESET_LIMIT_BYTES = 4 * 1024 * 1024;
/**
 * The most real memory (pages) an instance starts with beyond the pages its module sees: room for a call's first
 * grows without growing for real, which would leave the instance to be replaced (≈ 0.3–0.5 ms of V8 instantiation
 * here, against ≈ 35 µs for a whole call of an example overlay that grows by a page each call). Each page of it costs
 * every reset of the instance a 64 KiB zero-fill (≈ 2 µs).
 */
const GROW_HEADROOM_PAGES = 16;
/**
 * What the stack limit charges (estimated bytes) each time the host calls back into the module (the allocator, while
 * it passes a string in): the JavaScript frames between a host import and the call-back. Measured here on the
 * kernel's thread: ≈ 1.6 KB of real stack per level of recursion through a host call-back, of which the meter counts
 * ≈ 0.2 KB of wasm frames. Without it, recursion through the host would pass V8's real stack in process long before
 * the deterministic limit (550 levels against 1,365 in a strict worker).
 */
export const HOST_CALLBACK_FRAME_BYTES = 2_048;
/** The largest string a host function may hand back to the overlay (UTF-16 bytes). */
const HOST_RESULT_BYTES = ABI.maxOutputBytes;

/** A host function's result as JSON text for the overlay; a value JSON cannot carry is a typed error. */
function resultJson(value: unknown, hostFunction: string): string {
  try {
    return JSON.stringify(value ?? null);
  } catch (error) {
    throw new UnserializableMessageError(`The result of ${hostFunction}`, (error as Error).message);
  }
}

/** Fuel units for the host reading or writing `chars` UTF-16 code units of the overlay's memory. */
function unitsForChars(chars: number): number {
  return Math.ceil((chars * 2) / FUEL_COSTS.bytesPerUnit);
}

/** What the instance is running, for deciding whether an async host call may suspend it (only an export may). */
type Phase = 'idle' | 'start' | 'input' | 'export' | 'host';
const WHERE: Record<Phase, string> = {
  idle: 'outside any call',
  start: 'its start function',
  input: 'its allocator (__new) while the host passed the input in',
  export: 'an export',
  host: 'a host function call-back (e.g. its allocator while the host passed a result in)',
};

export interface InstanceOptions {
  module: WebAssembly.Module;
  /** The host's memory cap (pages): grows past it fail, and are reported as MEMORY_LIMIT. */
  maxPages: number;
  /** The meter's stack limit (estimated bytes), for the STACK_OVERFLOW message. */
  maxStackBytes: number;
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

/** Options of an overlay's first instance, the one that runs the start function at load. */
export interface FirstInstanceOptions extends InstanceOptions {
  /** Fuel for the start function (default {@link START_FUEL_BUDGET}). */
  startBudget?: number;
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
  readonly #dirty: WebAssembly.Global;
  readonly #allocate: WasmFunction;
  readonly #entries = new Map<string, WasmFunction>();
  readonly #maxPages: number;
  readonly #maxStackBytes: number;
  readonly #virtualPages: WebAssembly.Global;
  readonly #snapshotGlobals: WebAssembly.Global[] = [];
  readonly #start: WasmFunction | undefined;
  #snapshot: StartSnapshot | undefined;
  /** Set while the start function is still to run in this instance's first call (the snapshot cannot replace it). */
  #startPending = false;
  #phase: Phase = 'idle';
  /** True once a call may have changed state since the snapshot. */
  #used = false;
  #effects = new CallEffects();
  #abort: string | undefined;
  #view: Buffer | undefined;

  /**
   * The overlay's first instance: runs the start function under the load's budget and captures the state every call
   * starts from (the snapshot the overlay's other instances are prepared from). Throws a typed error when the module
   * cannot be instantiated or its start function fails.
   */
  static async first(options: FirstInstanceOptions): Promise<OverlayInstance> {
    const instance = new OverlayInstance(options);
    const memory = instance.#memory;
    const fresh = await nonzeroSpans(memory.buffer);
    if (instance.#start !== undefined) instance.#runStart(instance.#start, options.startBudget ?? START_FUEL_BUDGET);
    instance.#growHeadroom();
    const replayStart = instance.#dirty.value !== 0;
    instance.#snapshot = await StartSnapshot.capture(memory, fresh, { pages: instance.#virtualPages.value as number, globals: instance.#snapshotGlobals.map((g) => g.value as unknown), replayStart });
    // Its state after a start function that changed tables or dropped segments can be reached only by running the
    // start function again: no call may use it.
    if (replayStart) instance.broken = true;
    return instance;
  }

  /**
   * Another instance of the overlay, in the state `snapshot` holds: its memory is written from the snapshot's chunks
   * (work that follows the data segments, not the memory's size) and the start function does not run again, unless
   * the snapshot cannot stand for it: then it runs in the instance's first call, charged to that call's budget.
   */
  static from(options: InstanceOptions, snapshot: StartSnapshot): OverlayInstance {
    const instance = new OverlayInstance(options);
    instance.#snapshot = snapshot;
    if (snapshot.replayStart) {
      instance.#startPending = instance.#start !== undefined;
      return instance;
    }
    try {
      snapshot.prepare(instance.#memory);
    } catch (error) {
      // Growing to the snapshot's real size can fail where the system has no memory left.
      throw new InstantiationError((error as Error).message, { cause: error });
    }
    instance.#applyGlobals(snapshot);
    return instance;
  }

  /**
   * Gives real memory room for a call's first grows, as the meter's own doubling would on the first grow: every
   * instance starts with it (it is part of the snapshot), so a call growing within it leaves its instance reusable,
   * and one growing past it leaves it to be replaced (see {@link #retireIfUnrestorable}).
   */
  #growHeadroom(): void {
    const pages = this.#virtualPages.value as number;
    const realPages = this.#memory.buffer.byteLength / PAGE_BYTES;
    const target = Math.min(pages + Math.min(pages, GROW_HEADROOM_PAGES), this.#maxPages);
    if (realPages < target) this.#memory.grow(target - realPages);
  }

  /** The state every call of this instance starts from (defined once the instance is complete). */
  get snapshot(): StartSnapshot {
    if (this.#snapshot === undefined) throw new TypeError('instance has no snapshot yet');
    return this.#snapshot;
  }

  private constructor(options: InstanceOptions) {
    this.#maxPages = options.maxPages;
    this.#maxStackBytes = options.maxStackBytes;
    let instance: WebAssembly.Instance;
    try {
      instance = new WebAssembly.Instance(options.module, this.#imports(options));
    } catch (error) {
      // Imports are checked by name and signature at load: what fails here is the module's own segments.
      throw new InstantiationError((error as Error).message, { cause: error });
    }
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
    this.#dirty = global(METER_EXPORTS.dirty);
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
    this.#start = typeof start === 'function' ? (start as WasmFunction) : undefined;
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
    if (this.#used) this.#restore();
    this.#used = true;
    this.#reset(budget);
    let pointer: unknown;
    try {
      if (this.#startPending) this.#replayStart();
      this.#phase = 'input';
      const input = this.#lowerString(inputJson);
      // The export starts from an empty stack: the host's frames passing the input in are gone.
      this.#depth.value = 0;
      this.#phase = 'export';
      pointer = entry(input);
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
    this.#phase = 'idle';
    this.#retireIfUnrestorable();
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
    this.#phase = 'idle';
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
   * Puts the instance back to its state right after its start function: memory contents, every mutable global and
   * the memory size the module sees. Each call thus starts from the same state, so its fuel depends only on the
   * module and the input, and nothing of one caller's data is visible to the next.
   */
  #restore(): void {
    const snapshot = this.#snapshot;
    if (snapshot === undefined) return;
    snapshot.restore(this.#memory);
    this.#applyGlobals(snapshot);
  }

  #applyGlobals(snapshot: StartSnapshot): void {
    this.#virtualPages.value = snapshot.pages;
    for (let i = 0; i < this.#snapshotGlobals.length; i++) (this.#snapshotGlobals[i] as WebAssembly.Global).value = snapshot.globals[i];
  }

  /**
   * After a call: an instance whose state a reset cannot bring back (a table changed, a data segment dropped), whose
   * real memory grew (the next caller could reach the grown pages without growing: loads and stores are checked by
   * the engine against the real size, not the size the module sees) or is past what is cheap to zero is not used
   * again; a fresh instance serves the next call.
   */
  #retireIfUnrestorable(): void {
    const realBytes = this.#memory.buffer.byteLength;
    if (this.#dirty.value !== 0 || realBytes > (this.#snapshot?.realBytes ?? 0) || realBytes > RESET_LIMIT_BYTES) this.broken = true;
  }

  /** Runs the start function at load, under its own budget. */
  #runStart(start: WasmFunction, budget: number): void {
    this.#reset(budget);
    try {
      this.#phase = 'start';
      start();
    } catch (error) {
      this.broken = true;
      throw this.#classify(error, '(start)', budget);
    } finally {
      this.#phase = 'idle';
    }
  }

  /**
   * Runs the start function inside a call, under the call's budget (its fuel counts toward the call's), where the
   * snapshot cannot stand for it. Its log lines and events are dropped, as at load.
   */
  #replayStart(): void {
    this.#startPending = false;
    const effects = this.#effects;
    this.#effects = new CallEffects();
    try {
      this.#phase = 'start';
      (this.#start as WasmFunction)();
    } finally {
      this.#effects = effects;
    }
  }

  /** Takes `units` of fuel for work the host does for the overlay; out of fuel, the call traps as out of fuel. */
  #charge(units: number): void {
    const left = (this.#fuel.value as bigint) - BigInt(units);
    this.#fuel.value = left;
    if (left < 0n) {
      this.#trap.value = TRAP_REASON.outOfFuel;
      throw new WebAssembly.RuntimeError('out of fuel in a host function');
    }
  }

  /** Runs host work for the overlay: no async host call may start from what it calls back (e.g. the allocator). */
  #asHost<T>(work: () => T): T {
    const phase = this.#phase;
    this.#phase = 'host';
    try {
      return work();
    } finally {
      this.#phase = phase;
    }
  }

  /** Reads a string argument of at most `limit` code units for the host, charging what is read. */
  #argument(pointer: number, limit: number, hostFunction: string): string {
    const chars = this.#stringChars(pointer);
    if (chars > limit) throw new HostArgumentTooLargeError(hostFunction, chars, limit);
    this.#charge(unitsForChars(chars));
    return this.#liftString(pointer);
  }

  /** Writes a host function's string result into the overlay, charging what is written. */
  #result(text: string, hostFunction: string): number {
    if (text.length * 2 > HOST_RESULT_BYTES) throw new ReplyTooLargeError(`The result of ${hostFunction}`, text.length * 2, HOST_RESULT_BYTES);
    this.#charge(unitsForChars(text.length));
    return this.#lowerString(text);
  }

  #imports(options: InstanceOptions): WebAssembly.Imports {
    const env: Record<string, WebAssembly.ImportValue> = {
      abort: (message: number, file: number, line: number, column: number) => {
        const text = (pointer: number) => this.#liftString(pointer, EFFECT_LIMITS.diagnosticChars);
        this.#abort = `${text(message) || 'abort'} at ${text(file) || '?'}:${line}:${column}`;
        throw new OverlayTrapError('(overlay)', this.#abort);
      },
      trace: (message: number, count: number, ...values: number[]) => {
        const chars = Math.min(this.#stringChars(message), EFFECT_LIMITS.diagnosticChars);
        this.#charge(unitsForChars(chars));
        this.#effects.log(0, `trace: ${this.#liftString(message, chars)} ${values.slice(0, count).join(', ')}`.trimEnd());
      },
      seed: () => ABI.randomSeed,
    };
    const forge: Record<string, WebAssembly.ImportValue> = {
      log: (level: number, message: number) => {
        if (!this.#effects.acceptsLog()) return;
        const total = this.#stringChars(message);
        const chars = Math.min(total, EFFECT_LIMITS.logLineChars);
        this.#charge(unitsForChars(chars));
        this.#effects.log(level, this.#liftString(message, chars), chars < total);
      },
      event_publish: (type: number, payload: number) => {
        const typeChars = this.#stringChars(type);
        if (typeChars > EFFECT_LIMITS.eventTypeChars) throw new InvalidEventError(`An event type is ${typeChars} characters; the limit is ${EFFECT_LIMITS.eventTypeChars}.`);
        this.#charge(unitsForChars(typeChars));
        const name = this.#liftString(type);
        const payloadChars = this.#stringChars(payload);
        this.#effects.checkPublish(name, payloadChars);
        this.#charge(unitsForChars(payloadChars));
        return this.#effects.publish(name, this.#liftString(payload));
      },
    };
    for (const signature of options.hostImports) {
      const { name } = signature;
      const lift = (raw: number[]): (string | number)[] =>
        signature.params.map((type, i) => (type === 'string' ? this.#argument(raw[i] ?? 0, EFFECT_LIMITS.hostArgumentChars, name) : (raw[i] ?? 0)));
      const lower = (value: unknown): number | undefined => {
        if (signature.result === 'void') return undefined;
        if (signature.result === 'i32') return Number(value) | 0;
        return this.#result(typeof value === 'string' ? value : resultJson(value, name), name);
      };
      const refuseOutsideCall = (): void => {
        if (signature.async && this.#phase !== 'export') throw new HostCallOutsideCallError(name, WHERE[this.#phase]);
      };
      if (signature.async && options.suspending) {
        // Not an async function: a refusal must throw before any promise exists (a rejected promise nobody awaits
        // would end the process), and JSPI suspends only on a promise that is returned.
        forge[name] = new WebAssembly.Suspending((...raw: number[]) => {
          refuseOutsideCall();
          this.#phase = 'host';
          let pending: Promise<unknown>;
          try {
            pending = Promise.resolve(options.invokeHost(signature, lift(raw)));
          } catch (error) {
            this.#phase = 'export';
            throw error;
          }
          return pending.then(
            (value) => {
              try {
                return lower(value);
              } finally {
                this.#phase = 'export';
              }
            },
            (error: unknown) => {
              this.#phase = 'export';
              throw error;
            },
          );
        }) as unknown as WebAssembly.ImportValue;
      } else {
        forge[name] = (...raw: number[]) => {
          refuseOutsideCall();
          return this.#asHost(() => lower(options.invokeHost(signature, lift(raw))));
        };
      }
    }
    for (const [name, fn] of Object.entries(forge)) {
      if (options.hostImports.some((f) => f.name === name)) continue;
      forge[name] = (...raw: number[]) => this.#asHost(() => (fn as (...args: number[]) => unknown)(...raw));
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

  /**
   * The bytes of memory the module has: the size it sees (`memory.size`), never more. Real memory can be larger (it
   * grows by doubling), and the host must not read or write what the module could only reach without growing.
   */
  #memoryBytes(): number {
    return Math.min(this.#memory.buffer.byteLength, (this.#virtualPages.value as number) * PAGE_BYTES);
  }

  /**
   * Copies a JS string into a new AssemblyScript string (UTF-16) and returns its pointer. Calling the allocator is a
   * call-back into the module: it continues the stack count of the module's code that called the host, plus the
   * host's own frames, so recursion through host functions meets the same deterministic limit in both engines.
   */
  #lowerString(text: string): number {
    const bytes = text.length << 1;
    const depth = (this.#depth.value as number) + HOST_CALLBACK_FRAME_BYTES;
    if (depth > this.#maxStackBytes) {
      this.#trap.value = TRAP_REASON.callDepth;
      throw new WebAssembly.RuntimeError('stack limit reached in a host call-back');
    }
    this.#depth.value = depth;
    const pointer = (this.#allocate(bytes, ABI.stringClassId) as number) >>> 0;
    const memoryBytes = this.#memoryBytes();
    if (pointer < ABI.sizeOffset || pointer % 2 !== 0 || pointer + bytes > memoryBytes) throw new InvalidAllocationError(pointer, bytes, memoryBytes);
    this.#bytes().write(text, pointer, bytes, 'utf16le');
    return pointer;
  }

  /** The length (code units) of the AssemblyScript string at `pointer`, from its header; 0 for a bad pointer. */
  #stringChars(pointer: number): number {
    const address = pointer >>> 0;
    const memoryBytes = this.#memoryBytes();
    if (address < ABI.sizeOffset || address % 2 !== 0 || address > memoryBytes) return 0;
    const size = new DataView(this.#memory.buffer).getUint32(address - ABI.sizeOffset, true);
    return address + size > memoryBytes ? 0 : size >>> 1;
  }

  /** Reads an AssemblyScript string, at most `limit` code units of it; lenient ('' for a bad pointer). */
  #liftString(pointer: number, limit = Number.MAX_SAFE_INTEGER): string {
    const chars = Math.min(this.#stringChars(pointer), limit);
    const address = pointer >>> 0;
    return chars === 0 ? '' : this.#bytes().toString('utf16le', address, address + chars * 2);
  }

  /** Reads the output string strictly: bounds, size cap, well-formed UTF-16, then JSON (text and parsed value). */
  #liftOutput(exportName: string, pointer: unknown): [string, unknown] {
    if (typeof pointer !== 'number') throw new InvalidOutputError(exportName, 'it did not return a string');
    const address = pointer >>> 0;
    const memoryBytes = this.#memoryBytes();
    if (address === 0) throw new InvalidOutputError(exportName, 'it returned null');
    if (address < ABI.sizeOffset || address % 2 !== 0 || address > memoryBytes) {
      throw new InvalidOutputError(exportName, `its result pointer ${address} is outside its memory`);
    }
    const size = new DataView(this.#memory.buffer).getUint32(address - ABI.sizeOffset, true);
    if (size > ABI.maxOutputBytes) throw new InvalidOutputError(exportName, `it is ${size} bytes; the limit is ${ABI.maxOutputBytes}`);
    if (address + size > memoryBytes || size % 2 !== 0) throw new InvalidOutputError(exportName, 'its string header is corrupt');
    const text = this.#bytes().toString('utf16le', address, address + size);
    if (!text.isWellFormed()) throw new InvalidOutputError(exportName, 'it is not well-formed Unicode text (a lone surrogate cannot be encoded as UTF-8)');
    if (jsonNestsDeeperThan(text)) throw new InvalidOutputError(exportName, `it nests arrays and objects deeper than ${MAX_JSON_NESTING} levels`);
    try {
      return [text, JSON.parse(text)];
    } catch {
      throw new InvalidOutputError(exportName, `it is not JSON (starts with ${JSON.stringify(text.slice(0, 40))})`);
    }
  }

  #classify(error: unknown, exportName: string, budget: number): Error {
    const reason = this.#trap.value as number;
    if (reason === TRAP_REASON.outOfFuel) return new OutOfFuelError(budget, exportName);
    if (reason === TRAP_REASON.callDepth) return new StackOverflowError(exportName, this.#maxStackBytes);
    if (error instanceof RangeError && /call stack/i.test(error.message)) return new StackOverflowError(exportName, this.#maxStackBytes);
    const trapped = error instanceof WebAssembly.RuntimeError || error instanceof OverlayTrapError;
    // AssemblyScript's allocator traps (or aborts) when a grow fails: the denied grow is the real cause.
    if (trapped && (this.#growDenied.value as number) !== 0) return new MemoryLimitError(exportName, this.#maxPages);
    if (error instanceof OverlayTrapError && this.#abort !== undefined) return new OverlayTrapError(exportName, `abort: ${this.#abort}`);
    if (isForgeError(error)) return error;
    if (error instanceof WebAssembly.RuntimeError) return new OverlayTrapError(exportName, error.message, { cause: error });
    return error instanceof Error ? error : new Error(String(error));
  }
}

