import { nanoid } from 'nanoid';
import { InvalidInputError, isForgeError } from '../errors.ts';
import { createLogger, type Logger } from '../logger.ts';
import { fuelBudget, parseManifest, type OverlayManifest } from '../manifest.ts';
import { ABI, type Capability } from './abi.ts';
import { FuelLimitError, InvalidCallInputError, TrustError } from './errors.ts';
import type { Executor } from './executor.ts';
import { CallEffects, type CallCaller, type HostFunction, type HostTape, type OverlayEvent, type OverlayLogLine } from './host-functions.ts';
import { compileOverlay, type CompiledOverlay } from './loader.ts';
import { GRAPH_UNAVAILABLE_FUNCTIONS } from './graph-unavailable.ts';
import { MeteredModuleCache } from './metered-cache.ts';
import { hasJspi, RelaxedExecutor } from './relaxed-engine.ts';
import { StrictExecutor } from './strict-engine.ts';

/** How an overlay runs: `strict` (worker pool, killable), `relaxed` (in-process, JSPI), `trusted` (native code). */
export type SecurityMode = 'strict' | 'relaxed' | 'trusted';

export interface CallOptions {
  /** Fuel budget for this call, overriding the manifest's budget for the export. */
  fuel?: number;
  /** Wall-clock deadline (ms), overriding the manifest's `timeoutMs`. */
  deadlineMs?: number;
  /** Aborting it cancels the call (strict: the worker is killed; relaxed: the call is abandoned). */
  signal?: AbortSignal;
  /** Whose call it is, as the overlay's context (native) and the host functions see it; absent fields are null, trust 0. */
  caller?: Partial<CallCaller>;
  /** Records the call's host calls, or plays them back (a replay): see HostTape. */
  tape?: HostTape;
  /** False: the events the call publishes are returned, not handed on to the kernel (a replay has no effects). */
  publish?: boolean;
}

/** The outcome of a successful call. */
export interface CallResult {
  /** The overlay's JSON output, parsed. */
  output: unknown;
  /** Instructions burned (0 in trusted mode, which is not metered). */
  fuelUsed: number;
  durationMs: number;
  /** Events the overlay published during the call, `source` set to the overlay's id (it cannot choose another). */
  events: PublishedEvent[];
  logs: OverlayLogLine[];
}

/** An event an overlay published, stamped with its source: the overlay's id. */
export interface PublishedEvent extends OverlayEvent {
  source: string;
}

/** A loaded overlay: call its exports, then close it. */
export interface OverlayEngine {
  readonly id: string;
  readonly mode: SecurityMode;
  readonly manifest: OverlayManifest;
  /** Exports callable with the overlay ABI. */
  readonly exports: readonly string[];
  call(exportName: string, input: unknown, options?: CallOptions): Promise<CallResult>;
  close(): Promise<void>;
}

export interface LoadWasmOptions {
  /** The overlay's manifest (validated here); its sha256 must match the bytes. */
  manifest: unknown;
  /** Capabilities the embedding service grants; the overlay gets the intersection with its manifest. */
  grant?: readonly Capability[];
  /** Default `strict`. `relaxed` falls back to `strict` when it needs JSPI and this Node lacks it. */
  mode?: 'strict' | 'relaxed';
  /**
   * Kernel host functions beyond `log` and `event_publish` (e.g. the graph store's `db_read`). Without a
   * `db_read` / `db_write` here, those fail with GRAPH_UNAVAILABLE.
   */
  hostFunctions?: readonly HostFunction[];
  cache?: MeteredModuleCache;
  logger?: Logger;
  /** Workers per overlay in strict mode (default 2); instances per overlay in relaxed mode (default 4). */
  poolSize?: number;
  /** The deterministic stack limit (estimated bytes); default 256 KiB. */
  maxStackBytes?: number;
  /** The most memory (64 KiB pages, tables included) the manifest may ask for; default 4,096 (256 MiB). */
  maxMemoryPages?: number;
  /**
   * The most fuel one call may have: a manifest budget above it is refused at load (FUEL_LIMIT), an export the
   * manifest gives no budget gets at most this, and so does the start function. Default: no ceiling.
   */
  maxFuel?: number;
  /** Called with the events of each successful call, in order, before the call resolves. */
  onEvents?: (events: readonly PublishedEvent[], source: { overlayId: string; overlayName: string; exportName: string }) => void;
}

let processCache: MeteredModuleCache | undefined;

/** The process-wide metered-module cache used when a load names none. */
function defaultCache(): MeteredModuleCache {
  processCache ??= new MeteredModuleCache();
  return processCache;
}

/**
 * Verifies, meters and loads an AssemblyScript overlay module: see {@link compileOverlay} for what is checked.
 * Resolves once the module is instantiated (strict: in its first worker), so a module that cannot start is
 * refused here rather than on its first call.
 */
export async function loadWasmOverlay(bytes: Uint8Array, options: LoadWasmOptions): Promise<OverlayEngine> {
  let mode = options.mode ?? 'strict';
  if (mode !== 'strict' && mode !== 'relaxed') {
    throw new TrustError(`Mode ${JSON.stringify(mode)} is not a wasm mode: use "strict" or "relaxed" (trusted mode is for native overlays registered with loadNativeOverlay).`);
  }
  const manifest = parseManifest(options.manifest);
  const id = `ov_${nanoid(12)}`;
  const logger = (options.logger ?? createLogger()).child({ overlayId: id, overlay: manifest.name });
  const supplied = options.hostFunctions ?? [];
  const hostFunctions = [...supplied, ...GRAPH_UNAVAILABLE_FUNCTIONS.filter((f) => !supplied.some((s) => s.name === f.name))];
  const compiled = await compileOverlay(bytes, {
    manifest,
    grant: options.grant ?? [],
    cache: options.cache ?? defaultCache(),
    hostFunctions,
    ...(options.maxStackBytes === undefined ? {} : { maxStackBytes: options.maxStackBytes }),
    ...(options.maxMemoryPages === undefined ? {} : { maxMemoryPages: options.maxMemoryPages }),
    ...(options.maxFuel === undefined ? {} : { maxFuel: fuelCeiling(options.maxFuel) }),
  });
  if (mode === 'relaxed' && compiled.usesAsyncHost && !hasJspi()) {
    logger.warn('relaxed mode needs JSPI (WebAssembly.Suspending) for async host functions; this Node lacks it, so the overlay runs in strict mode');
    mode = 'strict';
  }
  let executor: Executor;
  if (mode === 'strict') {
    const strict = new StrictExecutor(compiled, options.poolSize);
    await strict.start();
    executor = strict;
  } else {
    const relaxed = new RelaxedExecutor(compiled, options.poolSize);
    await relaxed.start();
    executor = relaxed;
  }
  return new LoadedOverlay({ id, mode, compiled, executor, logger, onEvents: options.onEvents });
}

/** The signal of calls given none: creating an AbortController per call would cost more than a small call. */
const NEVER_ABORTED = new AbortController().signal;

/** Serializes a call's input to JSON text, refusing what JSON cannot carry and what exceeds the input cap. */
export function encodeInput(input: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(input);
  } catch (error) {
    throw new InvalidCallInputError('INVALID_INPUT', `The call input cannot be serialized to JSON: ${(error as Error).message}.`);
  }
  if (json === undefined) throw new InvalidCallInputError('INVALID_INPUT', 'The call input must be a JSON value (not undefined, a function or a symbol).');
  if (json.length * 2 > ABI.maxInputBytes) {
    throw new InvalidCallInputError('INPUT_TOO_LARGE', `The call input is ${json.length * 2} bytes as UTF-16; the limit is ${ABI.maxInputBytes}. Pass a reference instead of the data.`, {
      bytes: json.length * 2,
      limit: ABI.maxInputBytes,
    });
  }
  return json;
}

/** The service's fuel ceiling, checked: a positive whole number. */
function fuelCeiling(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidInputError(`maxFuel must be a positive whole number of fuel units, got ${JSON.stringify(value)}.`);
  }
  return value;
}

function positiveInteger(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > Number.MAX_SAFE_INTEGER) {
    throw new InvalidCallInputError('INVALID_INPUT', `${name} must be a positive whole number, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** A call's caller with every field present (trust 0 and nulls unless the caller said). */
function callerOf(caller: Partial<CallCaller> | undefined): CallCaller {
  return Object.freeze({ trust: caller?.trust ?? 0, correlationId: caller?.correlationId ?? null, runId: caller?.runId ?? null, capsuleId: caller?.capsuleId ?? null });
}

/** The engine-independent part of every call: input, budget, deadline, effects, logs and events. */
export class LoadedOverlay implements OverlayEngine {
  readonly id: string;
  readonly mode: SecurityMode;
  readonly manifest: OverlayManifest;
  readonly exports: readonly string[];
  /** The capabilities in force: declared in the manifest and granted by the service. */
  readonly granted: readonly Capability[];
  readonly #executor: Executor;
  readonly #logger: Logger;
  readonly #onEvents: LoadWasmOptions['onEvents'];
  /** Whether calls can be left with host work in flight (an async host function) that must be told to stop. */
  readonly #usesAsyncHost: boolean;
  /** The service's fuel ceiling for one call. */
  readonly #maxFuel: number;
  #closed = false;

  constructor(options: {
    id: string;
    mode: SecurityMode;
    compiled: Pick<CompiledOverlay, 'manifest' | 'exports' | 'granted'> & Partial<Pick<CompiledOverlay, 'usesAsyncHost' | 'maxFuel'>>;
    executor: Executor;
    logger: Logger;
    onEvents: LoadWasmOptions['onEvents'];
  }) {
    this.id = options.id;
    this.mode = options.mode;
    this.manifest = options.compiled.manifest;
    this.exports = options.compiled.exports;
    this.granted = Object.freeze([...options.compiled.granted]);
    this.#executor = options.executor;
    this.#logger = options.logger;
    this.#onEvents = options.onEvents;
    this.#usesAsyncHost = options.compiled.usesAsyncHost === true;
    this.#maxFuel = options.compiled.maxFuel ?? Number.MAX_SAFE_INTEGER;
  }

  async call(exportName: string, input: unknown, options: CallOptions = {}): Promise<CallResult> {
    if (typeof exportName !== 'string' || exportName === '') throw new InvalidCallInputError('INVALID_INPUT', 'The export name must be a non-empty string.');
    if (typeof options !== 'object' || options === null) throw new InvalidCallInputError('INVALID_INPUT', 'The call options must be an object.');
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new InvalidCallInputError('INVALID_INPUT', 'The signal must be an AbortSignal.');
    const inputJson = encodeInput(input);
    const budget = this.#budget(exportName, options.fuel);
    const deadlineMs = options.deadlineMs === undefined ? this.manifest.timeoutMs : positiveInteger(options.deadlineMs, 'deadlineMs');
    const effects = new CallEffects();
    const started = performance.now();
    // The host functions' signal: for an overlay with async host functions it fires when the call ends in any way,
    // so a query of an abandoned call (deadline, cancel, killed worker) is stopped rather than left to run.
    const ended = this.#usesAsyncHost ? new AbortController() : undefined;
    const signal = ended === undefined ? (options.signal ?? NEVER_ABORTED) : options.signal === undefined ? ended.signal : AbortSignal.any([options.signal, ended.signal]);
    try {
      const pending = this.#executor.execute({
        exportName,
        inputJson,
        budget,
        deadlineMs,
        signal: options.signal,
        effects,
        context: { overlayId: this.id, overlayName: this.manifest.name, exportName, caller: callerOf(options.caller), capabilities: this.granted, signal, database: this.manifest.database, graph: this.manifest.graph, ...(options.tape === undefined ? {} : { tape: options.tape }) },
      });
      const raw = pending instanceof Promise ? await pending : pending;
      const durationMs = performance.now() - started;
      this.#emitLogs(effects, exportName);
      const events = effects.events.length === 0 ? [] : effects.events.map((event) => ({ ...event, source: this.id }));
      if (events.length > 0 && options.publish !== false) this.#onEvents?.(events, { overlayId: this.id, overlayName: this.manifest.name, exportName });
      return { output: 'output' in raw ? raw.output : (JSON.parse(raw.outputJson) as unknown), fuelUsed: raw.fuelUsed, durationMs, events, logs: effects.logs };
    } catch (error) {
      this.#emitLogs(effects, exportName);
      this.#logger.debug({ export: exportName, code: isForgeError(error) ? error.code : undefined, err: error }, 'overlay call failed');
      throw error;
    } finally {
      ended?.abort();
    }
  }

  /** The call's fuel: the caller's, or the manifest's (at most the service's ceiling, which the caller may not pass). */
  #budget(exportName: string, fuel: unknown): number {
    const max = this.#maxFuel;
    if (fuel === undefined) return Math.min(fuelBudget(this.manifest, exportName), max);
    const asked = positiveInteger(fuel, 'fuel');
    if (asked > max) throw new FuelLimitError(exportName, asked, max);
    return asked;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#executor.close();
  }

  #emitLogs(effects: CallEffects, exportName: string): void {
    for (const line of effects.logs) this.#logger[line.level]({ export: exportName, fromOverlay: true }, line.message);
    if (effects.droppedLogLines > 0) this.#logger.warn({ export: exportName, dropped: effects.droppedLogLines }, 'overlay log lines dropped (per-call limit)');
  }
}
