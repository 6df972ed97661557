import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createActor, fromPromise, type Actor } from 'xstate';
import semver from 'semver';
import { circuitBreakerMachine, successIsNoOp, type BreakerConfig, type BreakerState } from '../../actors/circuit-breaker.ts';
import { overlayMachine, type OverlayState } from '../../actors/overlay.ts';
import { matches } from '../bus/event.ts';
import { ForgeError, isForgeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { parseManifest, parseManifestText, type OverlayManifest, type Phase } from '../manifest.ts';
import type { Capability } from '../wasm/abi.ts';
import { InvalidCallInputError } from '../wasm/errors.ts';
import { loadWasmOverlay, type CallResult, type OverlayEngine, type PublishedEvent } from '../wasm/engine.ts';
import type { HostFunction, HostTape } from '../wasm/host-functions.ts';
import { sha256Hex } from '../wasm/loader.ts';
import type { MeteredModuleCache } from '../wasm/metered-cache.ts';
import type { ActorCatalog } from '../inspect/catalog.ts';
import type { Store } from '../store/store.ts';
import { loadNativeOverlay, type NativeOverlay } from '../wasm/trusted-engine.ts';
import { CallStats, type OverlayStats } from './call-stats.ts';
import { ExecutionHistory, type ExecutionRecord } from './history.ts';

/** Error codes that are the overlay's own fault: they count against its breaker. Everything else is the caller's. */
const OVERLAY_FAULTS = new Set([
  'OUT_OF_FUEL',
  'STACK_OVERFLOW',
  'MEMORY_LIMIT',
  'OVERLAY_TRAP',
  'INVALID_OUTPUT',
  'INVALID_EVENT',
  'RESERVED_EVENT_TYPE',
  'DEADLINE_EXCEEDED',
  'WORKER_CRASHED',
  'INVALID_ALLOCATION',
  'HOST_CALL_OUTSIDE_CALL',
  'HOST_ARGUMENT_TOO_LARGE',
  'REPLY_TOO_LARGE',
  'CYPHER_REJECTED',
  'GRAPH_MUTATION_REFUSED',
  'GRAPH_QUERY_FAILED',
]);
/** Deadline of one health check (ms): a hung check cannot hold up the report. */
const HEALTH_CHECK_TIMEOUT_MS = 1_000;
/** Deadline of an overlay's `shutdown` export at unload or the kernel's stop (ms): it cannot hold either up longer. */
const SHUTDOWN_DEADLINE_MS = 2_000;

/** The overlay's `initialize` export failed: the load is refused and nothing of it stays registered. */
export class OverlayInitializationError extends ForgeError {
  constructor(name: string, cause: unknown) {
    const code = isForgeError(cause) ? cause.code : 'UNEXPECTED';
    super('INITIALIZATION_FAILED', `Overlay "${name}" failed its initialize export (${code}: ${cause instanceof Error ? cause.message : String(cause)}); it was not loaded. Fix initialize, or load it with { activate: false } to inspect it.`, {
      cause,
      details: { overlay: name, code },
    });
  }
}

/** The overlay named or numbered does not exist (caller mistake). */
export class OverlayNotFoundError extends ForgeError {
  constructor(idOrName: string) {
    super('OVERLAY_NOT_FOUND', `No overlay "${idOrName}" is loaded: kernel.overlays.list() shows what is.`, { details: { overlay: idOrName } });
  }
}

/** The overlay exists but does not serve calls in its current state (caller mistake, not counted by the breaker). */
export class OverlayInactiveError extends ForgeError {
  constructor(name: string, state: string) {
    super('OVERLAY_INACTIVE', `Overlay "${name}" is ${state} and does not serve calls: activate it first.`, { details: { overlay: name, state } });
  }
}

/** The breaker of the overlay is open: the call was rejected without running. */
export class CircuitOpenError extends ForgeError {
  constructor(name: string, state: BreakerState) {
    super('CIRCUIT_OPEN', `Overlay "${name}" is failing and its circuit breaker is ${state}: the call was rejected without running. Retry later, or reset the breaker.`, {
      details: { overlay: name, breaker: state },
    });
  }
}

/** The caller's trust is below what the overlay requires. */
export class InsufficientTrustError extends ForgeError {
  constructor(name: string, required: number, given: number) {
    super('TRUST_INSUFFICIENT', `Overlay "${name}" requires caller trust ${required}; this call has ${given}.`, { details: { overlay: name, required, given } });
  }
}

/** A manifest dependency is missing, has no matching version, or dependencies form a cycle. */
export class DependencyError extends ForgeError {
  constructor(message: string, details: Record<string, unknown>) {
    super('DEPENDENCY_ERROR', message, { details });
  }
}

/** What `list()` and `get()` show of an overlay. */
export interface OverlayHandle {
  id: string;
  name: string;
  version: string;
  /** The sha256 of the module the overlay runs (its manifest's, checked at load). */
  sha256: string;
  /** What the service granted it at load (it gets the part its manifest declares). */
  grant: readonly Capability[];
  mode: string;
  state: OverlayState;
  breaker: BreakerState;
  phases: Phase[];
  subscribes: string[];
  calls: number;
  faults: number;
  fuelUsed: number;
  /** False for an older version replaced by a hot reload, still finishing its calls. */
  current: boolean;
}

export interface LoadOptions {
  /** The manifest; for a path, `<file>.manifest.json` beside the .wasm is read when omitted. */
  manifest?: unknown;
  grant?: readonly Capability[];
  mode?: 'strict' | 'relaxed';
  /** For a native overlay: it is part of the service (see loadNativeOverlay). */
  internal?: boolean;
  trusted?: boolean;
  breaker?: Partial<BreakerConfig>;
  /** Activate after loading (default true). */
  activate?: boolean;
}

export interface CallOptions {
  /** The caller's trust (0–100), compared with the overlay's trustRequired. Default 0. */
  trust?: number;
  fuel?: number;
  deadlineMs?: number;
  signal?: AbortSignal;
  correlationId?: string;
  /** The pipeline run and capsule the call serves (a run sets them): the overlay's context and host functions see them. */
  runId?: string;
  capsuleId?: string;
  /**
   * Set by a pipeline phase: how long until its timer ends the phase (ms). When the overlay's own deadline would not
   * clearly come first, the call's deadline is set past the phase's end, so the phase's timer alone decides.
   */
  phaseEndsInMs?: number;
  /** Records the call's host calls (a journaled run keeps them for replay). */
  tape?: HostTape;
}

/** How much sooner than a phase's end an overlay's own deadline must fall to decide a call's timeout itself (ms). */
const PHASE_MARGIN_MS = 250;
/** How far past a phase's end a call that yields to the phase's timer may run, should that timer be late (ms). */
const PHASE_GRACE_MS = 1_000;

/** A phase's call: its deadline yields to the phase's timer unless the overlay's own clearly comes first. */
function phaseDeadline(ownMs: number, phaseEndsInMs: number | undefined): { deadlineMs?: number } {
  if (phaseEndsInMs === undefined || ownMs + PHASE_MARGIN_MS < phaseEndsInMs) return {};
  return { deadlineMs: Math.max(1, Math.ceil(phaseEndsInMs)) + PHASE_GRACE_MS };
}

/**
 * What is wrong with a call's options, or undefined: trust a number in 0–100, the ids non-empty strings, fuel and
 * deadline positive integers (the engine says which), the signal an AbortSignal.
 */
function malformedCallOption(options: CallOptions): string | undefined {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return 'options must be an object';
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) return 'signal must be an AbortSignal';
  if (options.tape !== undefined && (typeof options.tape !== 'object' || options.tape === null || (options.tape.record !== undefined && typeof options.tape.record !== 'function') || options.tape.replay !== undefined)) return 'tape must be { record(call) } (a replay goes through kernel.replay)';
  if (options.phaseEndsInMs !== undefined && (typeof options.phaseEndsInMs !== 'number' || Number.isNaN(options.phaseEndsInMs))) return 'phaseEndsInMs must be a number';
  if (options.trust !== undefined && (typeof options.trust !== 'number' || !Number.isFinite(options.trust) || options.trust < 0 || options.trust > 100)) return 'trust must be a number from 0 to 100';
  for (const key of ['correlationId', 'runId', 'capsuleId'] as const) {
    const value: unknown = options[key];
    if (value !== undefined && (typeof value !== 'string' || value === '')) return `${key} must be a non-empty string`;
  }
  return undefined;
}

export interface HealthReport {
  overlayId: string;
  name: string;
  healthy: boolean;
  state: OverlayState;
  breaker: BreakerState;
  detail: string;
}

interface Entry {
  id: string;
  manifest: OverlayManifest;
  engine: OverlayEngine;
  /** What the service granted it at load. */
  grant: readonly Capability[];
  actor: Actor<typeof overlayMachine>;
  breaker: Actor<typeof circuitBreakerMachine>;
  current: boolean;
  inFlight: number;
  drained?: () => void;
  /** Calls that ran, the overlay's faults among them, and the fuel they burned (plain counters: no send per call). */
  stats: CallStats;
  /** The unload in progress, once one started. */
  closing?: Promise<void>;
}

/** Where overlay events come from: the overlay, its export, and the correlation id of the call that published them. */
export interface EventSource {
  overlayId: string;
  overlayName: string;
  exportName: string;
  correlationId: string | undefined;
}

export interface RegistryOptions {
  logger: Logger;
  /** Where registrations are persisted (manifest, hash, grant, state). */
  store?: Store;
  cache?: MeteredModuleCache;
  hostFunctions?: readonly HostFunction[];
  /** The most memory (pages, tables included) an overlay's manifest may ask for. */
  maxMemoryPages?: number;
  /** The most fuel an overlay's manifest may give a call (a budget above it is refused at load with FUEL_LIMIT). */
  maxFuel?: number;
  /** Events overlays publish, after their call succeeded. */
  onEvents?: (events: readonly PublishedEvent[], source: EventSource) => void;
  historyLimit?: number;
  /** Where the overlay and breaker actors are listed for the inspector. */
  catalog?: ActorCatalog;
}

/** What the inspector shows of a breaker beside its state. */
function breakerDetails(entry: Entry): Record<string, unknown> {
  const { context } = entry.breaker.getSnapshot();
  return { overlayId: entry.id, overlay: entry.manifest.name, consecutiveFaults: context.consecutive, recentFaults: context.window.filter(Boolean).length, openings: context.openings, rejected: context.rejected, openedAt: context.openedAt, resetAfterMs: context.resetAfterMs };
}

/**
 * The kernel's overlays: loads them (wasm or native), indexes them by id, name, phase and subscribed event, runs
 * calls through each overlay's lifecycle actor and circuit breaker, keeps a bounded execution history, checks
 * health, and hot-reloads new versions without dropping calls in flight. Emits `quarantined`, `breaker` and
 * `unloaded` events.
 */
export class OverlayRegistry extends EventEmitter {
  readonly #entries = new Map<string, Entry>();
  readonly #byName = new Map<string, Entry>();
  readonly #options: RegistryOptions;
  readonly history: ExecutionHistory;

  /** The call the engine runs now, as the registry was asked for it: its events carry the caller's correlation id. */
  readonly #calls = new AsyncLocalStorage<{ correlationId: string | undefined }>();
  readonly #onEvents = (events: readonly PublishedEvent[], source: { overlayId: string; overlayName: string; exportName: string }): void => {
    this.#options.onEvents?.(events, { ...source, correlationId: this.#calls.getStore()?.correlationId });
  };

  constructor(options: RegistryOptions) {
    super();
    this.#options = options;
    this.history = new ExecutionHistory(options.historyLimit);
  }

  /**
   * Loads an overlay from a .wasm path, wasm bytes, or a native overlay object. Loading the same bytes again returns
   * the loaded overlay; a new version of a loaded name replaces it (hot reload): calls in flight finish on the old
   * version, new calls go to the new one.
   */
  async load(source: string | Uint8Array | NativeOverlay, options: LoadOptions = {}): Promise<OverlayHandle> {
    let engine: OverlayEngine;
    if (typeof source === 'string' || source instanceof Uint8Array) {
      const bytes = typeof source === 'string' ? await readBytes(source) : source;
      const rawManifest = options.manifest ?? (typeof source === 'string' ? await readManifestBeside(source) : undefined);
      if (rawManifest === undefined) throw new ForgeError('INVALID_MANIFEST', 'Loading wasm bytes needs their manifest: pass { manifest } (forge-kernel build writes <name>.manifest.json).');
      const manifest = parseManifest(rawManifest);
      const existing = this.#byName.get(manifest.name);
      if (existing !== undefined && existing.manifest.sha256 === sha256Hex(bytes)) return this.#handle(existing);
      this.#checkDependencies(manifest);
      engine = await this.#loadWasm(bytes, manifest, options, true);
    } else {
      engine = loadNativeOverlay(source, {
        internal: options.internal === true,
        trusted: options.trusted === true,
        logger: this.#options.logger,
        ...(this.#options.onEvents === undefined ? {} : { onEvents: this.#onEvents }),
      });
      this.#checkDependencies(engine.manifest);
    }
    return this.#register(engine, options);
  }

  async #register(engine: OverlayEngine, options: LoadOptions): Promise<OverlayHandle> {
    const manifest = engine.manifest;
    let initializeError: unknown;
    const actor = createActor(
      overlayMachine.provide({
        actors: {
          load: fromPromise(() => Promise.resolve()),
          initialize: fromPromise(async () => {
            try {
              if (engine.exports.includes('initialize')) {
                // An initialize that answers { ok: false } failed as surely as one that traps.
                const { output } = await engine.call('initialize', {});
                if (isErrorResult(output)) {
                  const message = (output as { error?: { message?: unknown } }).error?.message;
                  throw new ForgeError('OVERLAY_ERROR', typeof message === 'string' ? message : 'initialize answered ok: false');
                }
              }
            } catch (error) {
              initializeError = error;
              throw error;
            }
          }),
        },
      }),
      { input: { overlayId: engine.id, name: manifest.name, version: manifest.version } },
    );
    const breaker = createActor(circuitBreakerMachine, { input: { config: options.breaker ?? {} } });
    const entry: Entry = { id: engine.id, manifest, engine, grant: Object.freeze([...(options.grant ?? [])]), actor, breaker, current: true, inFlight: 0, stats: new CallStats() };
    this.#options.catalog?.add({ id: entry.id, kind: 'overlay', label: `${manifest.name}@${manifest.version}`, actor, details: () => ({ ...this.#handle(entry), stats: entry.stats.snapshot() }) });
    this.#options.catalog?.add({ id: `${entry.id}:breaker`, kind: 'breaker', label: manifest.name, actor: breaker, details: () => breakerDetails(entry) });
    actor.on('quarantined', (event) => this.emit('quarantined', { overlayId: entry.id, name: manifest.name, reason: event.reason }));
    breaker.on('*', (event) => this.emit('breaker', { overlayId: entry.id, name: manifest.name, ...event }));
    // `state`: the overlay entered a new lifecycle state (active, inactive, quarantined, …).
    let lastState: string | undefined;
    actor.subscribe((snapshot) => {
      if (snapshot.value === lastState) return;
      lastState = snapshot.value;
      this.emit('state', { overlayId: entry.id, name: manifest.name, state: snapshot.value });
    });
    actor.start();
    breaker.start();
    await waitFor(actor, (s) => s.value !== 'loading');

    const previous = this.#byName.get(manifest.name);
    this.#entries.set(entry.id, entry);
    this.#byName.set(manifest.name, entry);
    if (options.activate !== false) {
      actor.send({ type: 'ACTIVATE' });
      await waitFor(actor, (s) => s.value !== 'initializing');
      if (initializeError !== undefined) {
        // The load fails as a whole: the new version is dropped and a version it was to replace stays current.
        await this.#close(entry, { shutdown: false, announce: false });
        if (previous !== undefined) this.#byName.set(manifest.name, previous);
        throw new OverlayInitializationError(manifest.name, initializeError);
      }
    }
    if (previous !== undefined) {
      previous.current = false;
      void this.#retire(previous);
    }
    this.emit('loaded', this.#handle(entry));
    await this.#options.store?.saveOverlay({
      id: entry.id,
      name: manifest.name,
      version: manifest.version,
      sha256: manifest.sha256,
      manifest,
      grant: [...(options.grant ?? [])],
      state: actor.getSnapshot().value,
      updatedAt: Date.now(),
    });
    return this.#handle(entry);
  }

  /** Closes an entry once its calls in flight have finished. */
  async #retire(entry: Entry): Promise<void> {
    if (entry.inFlight > 0) await new Promise<void>((done) => (entry.drained = done));
    await this.#close(entry);
  }

  /**
   * Ends an overlay: its `shutdown` export first, if it has one (with its own deadline; an error is logged, never
   * thrown, and never holds the unload or the kernel's stop up), then its actors and engine.
   */
  async #close(entry: Entry, options: { shutdown: boolean; announce: boolean } = { shutdown: true, announce: true }): Promise<void> {
    // Once: an unload racing the kernel's stop must not run shutdown twice, nor unload twice.
    if (entry.closing !== undefined) return entry.closing;
    entry.closing = this.#closeOnce(entry, options);
    return entry.closing;
  }

  async #closeOnce(entry: Entry, options: { shutdown: boolean; announce: boolean }): Promise<void> {
    if (options.shutdown && entry.engine.exports.includes('shutdown')) {
      await entry.engine.call('shutdown', {}, { deadlineMs: SHUTDOWN_DEADLINE_MS }).catch((error: unknown) => {
        this.#options.logger.warn({ err: error, overlayId: entry.id, overlay: entry.manifest.name }, 'the overlay\'s shutdown export failed; unloading it anyway');
      });
    }
    entry.actor.send({ type: 'UNLOAD' });
    this.#options.catalog?.remove(entry.id);
    this.#options.catalog?.remove(`${entry.id}:breaker`);
    entry.actor.stop();
    entry.breaker.stop();
    this.#entries.delete(entry.id);
    if (this.#byName.get(entry.manifest.name) === entry) this.#byName.delete(entry.manifest.name);
    await entry.engine.close();
    if (!options.announce) return;
    await this.#options.store?.removeOverlay(entry.id).catch((error: unknown) => this.#options.logger.warn({ err: error, overlayId: entry.id }, 'could not remove the overlay registration'));
    this.emit('unloaded', { overlayId: entry.id, name: entry.manifest.name, version: entry.manifest.version });
  }

  #checkDependencies(manifest: OverlayManifest): void {
    for (const [name, range] of Object.entries(manifest.dependencies)) {
      const loaded = this.#byName.get(name);
      if (loaded === undefined) {
        throw new DependencyError(`Overlay "${manifest.name}" depends on "${name}" (${range}), which is not loaded: load it first.`, { overlay: manifest.name, dependency: name, range });
      }
      if (!semver.satisfies(loaded.manifest.version, range)) {
        throw new DependencyError(`Overlay "${manifest.name}" needs "${name}" ${range}, but version ${loaded.manifest.version} is loaded.`, {
          overlay: manifest.name,
          dependency: name,
          range,
          loaded: loaded.manifest.version,
        });
      }
    }
  }

  /**
   * Loads several overlays in dependency order (dependencies first). A missing dependency or a cycle is refused,
   * naming it, before anything is loaded.
   */
  async loadAll(sources: readonly { source: string | Uint8Array; manifest?: unknown; options?: LoadOptions }[]): Promise<OverlayHandle[]> {
    const items = await Promise.all(
      sources.map(async (s) => {
        const manifest = parseManifest(s.manifest ?? s.options?.manifest ?? (typeof s.source === 'string' ? await readManifestBeside(s.source) : undefined));
        return { ...s, manifest };
      }),
    );
    const byName = new Map(items.map((item) => [item.manifest.name, item]));
    const order: typeof items = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (name: string, path: string[]): void => {
      if (state.get(name) === 'done') return;
      if (state.get(name) === 'visiting') {
        const cycle = [...path.slice(path.indexOf(name)), name];
        throw new DependencyError(`Overlay dependencies form a cycle: ${cycle.join(' → ')}.`, { cycle });
      }
      const item = byName.get(name);
      if (item === undefined) return;
      state.set(name, 'visiting');
      for (const dependency of Object.keys(item.manifest.dependencies)) {
        if (!byName.has(dependency) && !this.#byName.has(dependency)) {
          throw new DependencyError(`Overlay "${name}" depends on "${dependency}", which is neither loaded nor in this batch.`, { overlay: name, dependency });
        }
        visit(dependency, [...path, name]);
      }
      state.set(name, 'done');
      order.push(item);
    };
    for (const item of items) visit(item.manifest.name, []);
    const handles: OverlayHandle[] = [];
    for (const item of order) handles.push(await this.load(item.source, { ...item.options, manifest: item.manifest }));
    return handles;
  }

  /**
   * Loads every `<name>.wasm` of a folder with the `<name>.manifest.json` beside it (what `forge-kernel build`
   * writes), in dependency order. `grant: 'declared'` grants each overlay the capabilities its manifest declares:
   * only for a folder you trust.
   */
  async loadDirectory(dir: string, options: { grant: 'declared' | readonly Capability[]; mode?: 'strict' | 'relaxed' }): Promise<OverlayHandle[]> {
    let files: string[];
    try {
      files = (await readdir(dir)).filter((f) => f.endsWith('.wasm')).sort();
    } catch (error) {
      throw new ForgeError('OVERLAY_DIR_UNREADABLE', `Cannot read the overlay folder ${dir}: ${(error as Error).message}.`, { details: { dir } });
    }
    if (files.length === 0) throw new ForgeError('OVERLAY_DIR_EMPTY', `${dir} holds no .wasm overlays: forge-kernel build <sources> --out ${dir} makes some.`, { details: { dir } });
    const sources = await Promise.all(
      files.map(async (file) => {
        const source = join(dir, file);
        const manifest = await readManifestBeside(source);
        const grant = options.grant === 'declared' ? parseManifest(manifest).capabilities : options.grant;
        return { source, manifest, options: { grant, ...(options.mode === undefined ? {} : { mode: options.mode }) } };
      }),
    );
    return this.loadAll(sources);
  }

  list(): OverlayHandle[] {
    return [...this.#entries.values()].map((entry) => this.#handle(entry));
  }

  /**
   * Loads a wasm overlay outside the registry (no actor, no breaker, nothing published: its events are returned by
   * each call), as the registry would load it, for a replay of recorded calls on another version. Close it after.
   */
  async loadDetached(source: string | Uint8Array, options: { manifest?: unknown; grant?: readonly Capability[]; mode?: 'strict' | 'relaxed' } = {}): Promise<OverlayEngine> {
    const bytes = typeof source === 'string' ? await readBytes(source) : source;
    const rawManifest = options.manifest ?? (typeof source === 'string' ? await readManifestBeside(source) : undefined);
    if (rawManifest === undefined) throw new ForgeError('INVALID_MANIFEST', 'Loading wasm bytes needs their manifest: pass { manifest } (forge-kernel build writes <name>.manifest.json).');
    return this.#loadWasm(bytes, parseManifest(rawManifest), options, false);
  }

  /** Loads wasm with the registry's cache, host functions and ceilings; `publishing`: its events reach the kernel. */
  #loadWasm(bytes: Uint8Array, manifest: OverlayManifest, options: { grant?: readonly Capability[]; mode?: 'strict' | 'relaxed' }, publishing: boolean): Promise<OverlayEngine> {
    return loadWasmOverlay(bytes, {
      manifest,
      grant: options.grant ?? [],
      mode: options.mode ?? 'strict',
      logger: this.#options.logger,
      ...(this.#options.cache === undefined ? {} : { cache: this.#options.cache }),
      ...(this.#options.hostFunctions === undefined ? {} : { hostFunctions: this.#options.hostFunctions }),
      ...(this.#options.maxMemoryPages === undefined ? {} : { maxMemoryPages: this.#options.maxMemoryPages }),
      ...(this.#options.maxFuel === undefined ? {} : { maxFuel: this.#options.maxFuel }),
      ...(!publishing || this.#options.onEvents === undefined ? {} : { onEvents: this.#onEvents }),
    });
  }

  /** An overlay as a run records it (name, version, sha256, mode, grant), without building a whole handle. */
  describe(idOrName: string): { name: string; version: string; sha256: string; mode: string; grant: string[] } | undefined {
    const entry = this.#find(idOrName);
    return entry === undefined ? undefined : { name: entry.manifest.name, version: entry.manifest.version, sha256: entry.manifest.sha256, mode: entry.engine.mode, grant: [...entry.grant] };
  }

  /**
   * Whether a call with this trust would be admitted now (loaded, active, breaker closed, trust enough), without
   * making one: a phase served from the cache must pass what its calls would have had to.
   */
  admits(idOrName: string, trust: number): boolean {
    const entry = this.#find(idOrName);
    return entry !== undefined && entry.actor.getSnapshot().value === 'active' && entry.breaker.getSnapshot().value === 'closed' && trust >= entry.manifest.trustRequired;
  }

  /**
   * The engine serving an overlay's calls, for a replay (which calls it directly: no breaker, no statistics, no
   * events published). Undefined when no such overlay is loaded.
   */
  engineOf(idOrName: string): OverlayEngine | undefined {
    return this.#find(idOrName)?.engine;
  }

  get(idOrName: string): OverlayHandle | undefined {
    const entry = this.#find(idOrName);
    return entry === undefined ? undefined : this.#handle(entry);
  }

  /** Current overlays taking part in a phase, in load order. */
  byPhase(phase: Phase): OverlayHandle[] {
    return [...this.#byName.values()].filter((e) => e.manifest.phases.includes(phase)).map((e) => this.#handle(e));
  }

  /** Current overlays subscribed to an event type (exact, `domain.*` or `*.action`). */
  bySubscription(type: string): OverlayHandle[] {
    return [...this.#byName.values()].filter((e) => e.manifest.subscribes.some((p) => matches(p, type))).map((e) => this.#handle(e));
  }

  activate(idOrName: string): OverlayHandle {
    const entry = this.#require(idOrName);
    entry.actor.send({ type: entry.actor.getSnapshot().value === 'quarantined' ? 'RELEASE' : 'ACTIVATE' });
    return this.#handle(entry);
  }

  deactivate(idOrName: string): OverlayHandle {
    const entry = this.#require(idOrName);
    entry.actor.send({ type: 'DEACTIVATE' });
    return this.#handle(entry);
  }

  resetCircuit(idOrName: string): OverlayHandle {
    const entry = this.#require(idOrName);
    entry.breaker.send({ type: 'RESET' });
    return this.#handle(entry);
  }

  forceOpenCircuit(idOrName: string): OverlayHandle {
    const entry = this.#require(idOrName);
    entry.breaker.send({ type: 'FORCE_OPEN', at: Date.now() });
    return this.#handle(entry);
  }

  async unload(idOrName: string): Promise<void> {
    await this.#close(this.#require(idOrName));
  }

  /**
   * Calls an export through the overlay's actor and breaker. Caller mistakes (unknown overlay, inactive, trust,
   * bad input) fail without touching the breaker; the overlay's own faults count against it; a `{ ok: false }`
   * result is returned to the caller and counts as a fault.
   */
  async call(idOrName: string, exportName: string, input: unknown, options: CallOptions = {}): Promise<CallResult> {
    const started = performance.now();
    const entry = this.#find(idOrName);
    const record = (outcome: ExecutionRecord['outcome'], fields: Partial<ExecutionRecord> = {}): void => {
      this.history.add({
        overlayId: entry?.id ?? idOrName,
        overlay: entry?.manifest.name ?? idOrName,
        version: entry?.manifest.version ?? '',
        export: exportName,
        outcome,
        fuelUsed: 0,
        durationMs: performance.now() - started,
        correlationId: typeof options === 'object' && options !== null && typeof options.correlationId === 'string' ? options.correlationId : null,
        at: Date.now(),
        code: null,
        ...fields,
      });
    };
    const refuse = (error: ForgeError): never => {
      entry?.stats.turnedAway();
      record('rejected', { code: error.code });
      throw error;
    };
    const malformed = malformedCallOption(options);
    if (malformed !== undefined) return refuse(new InvalidCallInputError('INVALID_INPUT', `Call option ${malformed}.`, { option: malformed.split(' ')[0] }));
    if (entry === undefined) return refuse(new OverlayNotFoundError(idOrName));
    const state = entry.actor.getSnapshot().value;
    if (state !== 'active') return refuse(new OverlayInactiveError(entry.manifest.name, state));
    const trust = options.trust ?? 0;
    if (trust < entry.manifest.trustRequired) return refuse(new InsufficientTrustError(entry.manifest.name, entry.manifest.trustRequired, trust));
    const breakerState = entry.breaker.getSnapshot().value;
    const probe = breakerState === 'halfOpen';
    // A closed breaker admits every call and its ACQUIRE changes nothing: skip that send (≈5 µs each) on the hot path.
    if (breakerState !== 'closed') {
      entry.breaker.send({ type: 'ACQUIRE' });
      if (!entry.breaker.getSnapshot().context.admitted) return refuse(new CircuitOpenError(entry.manifest.name, entry.breaker.getSnapshot().value));
    }

    entry.inFlight++;
    try {
      const result = await this.#calls.run({ correlationId: options.correlationId }, () =>
        entry.engine.call(exportName, input, {
          ...(options.fuel === undefined ? {} : { fuel: options.fuel }),
          ...(options.deadlineMs === undefined ? phaseDeadline(entry.manifest.timeoutMs, options.phaseEndsInMs) : { deadlineMs: options.deadlineMs }),
          ...(options.signal === undefined ? {} : { signal: options.signal }),
          caller: { trust, correlationId: options.correlationId ?? null, runId: options.runId ?? null, capsuleId: options.capsuleId ?? null },
          ...(options.tape === undefined ? {} : { tape: options.tape }),
        }),
      );
      const refused = isErrorResult(result.output);
      if (refused) entry.breaker.send({ type: 'FAILURE', at: Date.now(), probe });
      else if (breakerState !== 'closed' || !successIsNoOp(entry.breaker.getSnapshot().context, result.durationMs)) entry.breaker.send({ type: 'SUCCESS', durationMs: result.durationMs, at: Date.now(), probe });
      entry.stats.ran(!refused, result.durationMs, result.fuelUsed);
      record(refused ? 'error-result' : 'ok', { fuelUsed: result.fuelUsed, durationMs: result.durationMs });
      return result;
    } catch (error) {
      const code = isForgeError(error) ? error.code : 'UNEXPECTED';
      const fault = OVERLAY_FAULTS.has(code);
      if (fault) entry.breaker.send({ type: 'FAILURE', at: Date.now(), probe });
      // Only a half-open breaker tracks its probe: releasing a call admitted while closed changes nothing.
      else if (breakerState !== 'closed') entry.breaker.send({ type: 'RELEASE', probe });
      const fuelUsed = (error as { fuelUsed?: number }).fuelUsed ?? 0;
      if (fault) entry.stats.ran(false, performance.now() - started, fuelUsed);
      else entry.stats.refused(fuelUsed);
      record(fault ? 'fault' : 'rejected', { code, fuelUsed });
      throw error;
    } finally {
      entry.inFlight--;
      if (entry.inFlight === 0) entry.drained?.();
    }
  }

  /**
   * Runs every active overlay's `healthCheck` export (when it has one) in parallel, each with its own deadline.
   * An overlay failing its check three times in a row is quarantined (and a `quarantined` event emitted).
   */
  async health(): Promise<HealthReport[]> {
    const entries = [...this.#entries.values()].filter((e) => e.current);
    return Promise.all(
      entries.map(async (entry): Promise<HealthReport> => {
        const report = (healthy: boolean, detail: string): HealthReport => ({
          overlayId: entry.id,
          name: entry.manifest.name,
          healthy,
          state: entry.actor.getSnapshot().value,
          breaker: entry.breaker.getSnapshot().value,
          detail,
        });
        if (entry.actor.getSnapshot().value !== 'active') return report(false, `not active (${entry.actor.getSnapshot().value})`);
        if (!entry.engine.exports.includes('healthCheck')) return report(entry.breaker.getSnapshot().value === 'closed', 'no healthCheck export; breaker state only');
        try {
          const result = await entry.engine.call('healthCheck', {}, { deadlineMs: HEALTH_CHECK_TIMEOUT_MS });
          if (isErrorResult(result.output)) throw new ForgeError('UNHEALTHY', JSON.stringify(result.output));
          entry.actor.send({ type: 'HEALTH_OK' });
          return report(true, 'ok');
        } catch (error) {
          const reason = isForgeError(error) ? `${error.code}: ${error.message}` : String(error);
          entry.actor.send({ type: 'HEALTH_FAILED', reason });
          return report(false, reason);
        }
      }),
    );
  }

  /** Call statistics of every loaded overlay, by id: counts, success rate, p50/p95/max duration, fuel. */
  stats(): Record<string, OverlayStats & { name: string; version: string }> {
    return Object.fromEntries([...this.#entries.values()].map((entry) => [entry.id, { name: entry.manifest.name, version: entry.manifest.version, ...entry.stats.snapshot() }]));
  }

  /**
   * Notes an event meant for an overlay that is not active (deactivated, quarantined): it is not delivered, and not
   * retried or dead-lettered either; it is counted as skipped. True when the overlay should receive events now.
   */
  accepts(idOrName: string): boolean {
    const entry = this.#find(idOrName);
    if (entry === undefined || entry.actor.getSnapshot().value === 'active') return entry !== undefined;
    entry.stats.skippedEvents++;
    return false;
  }

  /** Unloads everything (the kernel's stop). */
  async close(): Promise<void> {
    await Promise.all([...this.#entries.values()].map((entry) => this.#retire(entry)));
  }

  #find(idOrName: string): Entry | undefined {
    return this.#entries.get(idOrName) ?? this.#byName.get(idOrName);
  }

  #require(idOrName: string): Entry {
    const entry = this.#find(idOrName);
    if (entry === undefined) throw new OverlayNotFoundError(idOrName);
    return entry;
  }

  #handle(entry: Entry): OverlayHandle {
    const { value } = entry.actor.getSnapshot();
    return {
      id: entry.id,
      name: entry.manifest.name,
      version: entry.manifest.version,
      sha256: entry.manifest.sha256,
      grant: entry.grant,
      mode: entry.engine.mode,
      state: value,
      breaker: entry.breaker.getSnapshot().value,
      phases: entry.manifest.phases,
      subscribes: entry.manifest.subscribes,
      calls: entry.stats.calls,
      faults: entry.stats.faults,
      fuelUsed: entry.stats.fuelUsed,
      current: entry.current,
    };
  }
}

/** `{ "ok": false, … }`: the overlay refused its input (an error result, counted as a fault). */
function isErrorResult(output: unknown): boolean {
  return typeof output === 'object' && output !== null && (output as { ok?: unknown }).ok === false;
}

function waitFor<A extends Actor<typeof overlayMachine>>(actor: A, done: (snapshot: ReturnType<A['getSnapshot']>) => boolean): Promise<void> {
  return new Promise((resolve) => {
    if (done(actor.getSnapshot() as ReturnType<A['getSnapshot']>)) {
      resolve();
      return;
    }
    const subscription = actor.subscribe((snapshot) => {
      if (done(snapshot as ReturnType<A['getSnapshot']>)) {
        subscription.unsubscribe();
        resolve();
      }
    });
  });
}

async function readBytes(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    throw new ForgeError('NOT_FOUND', `Cannot read overlay ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** The manifest `forge-kernel build` wrote beside a .wasm, validated; errors point at its `file:line:column`. */
async function readManifestBeside(path: string): Promise<OverlayManifest> {
  const file = `${path.replace(/\.wasm$/, '')}.manifest.json`;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ForgeError('INVALID_MANIFEST', `No readable manifest beside ${path} (${file}): ${(error as Error).message}. Pass { manifest }.`, { cause: error });
  }
  return parseManifestText({ file, text });
}
