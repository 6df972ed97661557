import { ForgeError, InvalidInputError, isForgeError, readableMessage } from './errors.ts';
import { createLogger, type Logger, type LoggerConfig } from './logger.ts';
import { CypherGuard } from './store/cypher-guard.ts';
import { graphHostFunctions, type GraphHostOptions } from './store/graph-host.ts';
import { MemoryStore, type MemoryStoreOptions } from './store/memory-store.ts';
import { Neo4jStore } from './store/neo4j-store.ts';
import type { Store } from './store/store.ts';
import { JournalUnavailableError, type Journal, type JournalEntry, type RecordedOverlay } from './journal/journal.ts';
import { replayRun, type ReplayReport } from './journal/replay.ts';
import { MemoryJournal } from './journal/memory-journal.ts';
import { JournalProjector, type ProjectionStatus } from './journal/projector.ts';
import { SqliteJournal, type SqliteJournalOptions } from './journal/sqlite-journal.ts';
import { JetStreamJournal, type JetStreamJournalOptions } from './journal/jetstream-journal.ts';
import type { BreakerConfig } from '../actors/circuit-breaker.ts';
import { OverlayRegistry } from './overlays/registry.ts';
import type { CallResult, OverlayEngine, PublishedEvent } from './wasm/engine.ts';
import type { Capability } from './wasm/abi.ts';
import type { HostCallRecord, HostFunction } from './wasm/host-functions.ts';
import { MeteredModuleCache } from './wasm/metered-cache.ts';
import { AsyncLocalStorage } from 'node:async_hooks';
import { EventBus, type Bus, type BusOptions } from './bus/bus.ts';
import { NatsBus, type NatsBusOptions } from './bus/nats-bus.ts';
import { ChainGuard } from './cluster/chain-guard.ts';
import { RunLeases } from './cluster/run-leases.ts';
import { Membership, type ClusterMember, type MemberStatus } from './cluster/membership.ts';
import { hostname } from 'node:os';
import { detached, type BusEvent } from './bus/event.ts';
import { CascadeError, CascadeManager, type CascadeView } from './cascade/cascades.ts';
import type { OverlayHandle } from './overlays/registry.ts';
import { Pipelines, RunNotFoundError, type PipelineOptions, type PipelinesDependencies, type RunResult } from './pipeline/pipelines.ts';
import { InspectionAdapter } from './inspect/adapter.ts';
import { ActorCatalog } from './inspect/catalog.ts';
import { Inspector } from './inspect/server.ts';

/** Where the kernel keeps what it must not lose: in memory (the default), or in Neo4j (which also gives overlays a graph). */
export type StoreOption = ({ kind: 'memory' } & MemoryStoreOptions) | { kind: 'neo4j'; uri: string; user: string; password: string; database?: string; secret?: string } | Store;

/**
 * Where pipeline runs are journaled (the source of truth for them: restore folds the journal): in memory, in a
 * SQLite file (durable in one process, no services), a Journal of your own, or false (runs kept as store snapshots).
 */
export type JournalOption =
  | 'memory'
  | { kind: 'memory'; maxStreams?: number }
  | ({ kind: 'sqlite' } & Omit<SqliteJournalOptions, 'logger'>)
  /** NATS JetStream, for a cluster: `servers` default to the NATS bus's, `name` to the bus's stream. */
  | ({ kind: 'jetstream' } & Partial<Omit<JetStreamJournalOptions, 'logger'>>)
  | Journal
  | false;

export interface KernelOptions {
  store?: StoreOption;
  /**
   * The run journal. Default: in memory with the kernel's own memory store; none with Neo4j or a Store object (runs
   * are then snapshots in that store).
   */
  journal?: JournalOption;
  /** A pino logger, or options for the kernel's own (JSON to stdout by default). */
  logger?: Logger | LoggerConfig;
  /** Where metered modules are cached on disk; false keeps them in memory only. Default `~/.cache/forge-kernel`. */
  cacheDir?: string | false;
  /** Kernel host functions offered to overlays beyond the builtins (gated by their capabilities). */
  hostFunctions?: readonly HostFunction[];
  /**
   * Ceilings no manifest can pass: `maxMemoryPages` (64 KiB pages, tables included; default 4,096 = 256 MiB) caps
   * what an overlay's `memoryPages` may ask for; `maxFuel` (instructions, default none) caps any call's fuel budget
   * (a manifest asking for more is refused at load with FUEL_LIMIT).
   */
  limits?: { maxMemoryPages?: number; maxFuel?: number };
  /**
   * Overlays' graph access (with the Neo4j store): procedures a read may call (default none), and ceilings over every
   * manifest's `database` limits: transaction timeout (ms, default 30,000), reply bytes (default 4 MiB), rows.
   */
  graph?: { allowProcedures?: readonly string[]; maxTimeoutMs?: number; maxReplyBytes?: number; maxRows?: number };
  /** Also told of every event overlays publish (they are published on the bus in any case). */
  onEvents?: (events: readonly PublishedEvent[]) => void;
  /**
   * The event bus: in-process by default (options: capacity, retries, timeouts, …), or NATS JetStream across
   * processes with `{ transport: 'nats', servers }` (which also gives `cluster()` its members).
   */
  bus?: Omit<BusOptions, 'store' | 'logger'> | ({ transport: 'nats' } & Omit<NatsBusOptions, 'store' | 'logger'>);
  /** Live cascade chains at most. */
  maxLiveChains?: number;
  /** Bounded execution history (default 1,000 calls). */
  historyLimit?: number;
  /** Pipeline runs: per-phase settings and code, hooks, concurrency limits, checkpoints. */
  pipelines?: PipelineOptions;
  /** Inspection from the start (default off: `inspector.listen()` turns it on while it serves). */
  inspect?: boolean;
}

/** The service's fuel ceiling, checked: a positive whole number of instructions. */
function fuelCeiling(fuel: unknown): number {
  if (typeof fuel !== 'number' || !Number.isSafeInteger(fuel) || fuel < 1) throw new InvalidInputError(`limits.maxFuel must be a positive whole number of instructions, got ${JSON.stringify(fuel)}.`);
  return fuel;
}

/** The service's memory ceiling, checked: a whole number of pages a wasm32 memory can have. */
function memoryCeiling(pages: unknown): number {
  if (typeof pages !== 'number' || !Number.isInteger(pages) || pages < 1 || pages > 65_536) {
    throw new InvalidInputError(`limits.maxMemoryPages must be a whole number of 64 KiB pages from 1 to 65536, got ${JSON.stringify(pages)}.`);
  }
  return pages;
}

/** The graph host functions' options from the kernel's, checked. */
function graphOptions(store: Neo4jStore, graph: KernelOptions['graph'] = {}): GraphHostOptions {
  const ceiling = (value: unknown, name: string): number | undefined => {
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) throw new InvalidInputError(`graph.${name} must be a positive whole number, got ${JSON.stringify(value)}.`);
    return value;
  };
  const procedures = graph.allowProcedures ?? [];
  if (!Array.isArray(procedures) || procedures.some((p) => typeof p !== 'string' || !/^[A-Za-z_][\w.]*$/.test(p))) {
    throw new InvalidInputError(`graph.allowProcedures must be an array of procedure names such as "db.labels", got ${JSON.stringify(procedures)}.`);
  }
  const timeoutMs = ceiling(graph.maxTimeoutMs, 'maxTimeoutMs');
  const maxReplyBytes = ceiling(graph.maxReplyBytes, 'maxReplyBytes');
  const rowCap = ceiling(graph.maxRows, 'maxRows');
  return {
    driver: store.driver,
    ...(store.database === undefined ? {} : { database: store.database }),
    guard: new CypherGuard({ allowProcedures: procedures }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(maxReplyBytes === undefined ? {} : { maxReplyBytes }),
    ...(rowCap === undefined ? {} : { rowCap }),
  };
}

/** An embedded Forge Kernel: create one per service (no globals), stop it on shutdown. */
/** Cascade chains: an insight spreading from overlay to overlay over the bus. */
export interface Cascades {
  /** Starts a chain and publishes its first insight event (payload gets the chain's `cascadeId`). */
  start(source: string, insightType: string, data?: Record<string, unknown>, options?: { maxHops?: number; ttlMs?: number; correlationId?: string }): Promise<CascadeView>;
  /** Adds an insight to a live chain: publishes it with the chain's `cascadeId` and correlation id, and counts it. */
  append(chainId: string, insightType: string, data?: Record<string, unknown>, source?: string): Promise<CascadeView>;
  propagate(chainId: string, toOverlay: string): Promise<CascadeView>;
  complete(chainId: string): Promise<CascadeView>;
  get(chainId: string): CascadeView | undefined;
  active(): CascadeView[];
}

export interface Kernel {
  readonly logger: Logger;
  readonly store: Store;
  /** The run journal (undefined when runs are kept as store snapshots). */
  readonly journal: Journal | undefined;
  /**
   * The audit projection: with a journal and Neo4j, completed runs' audit entries are written behind from the
   * journal (runs never wait for Neo4j). Its position and lag; null without one.
   */
  projection(): ProjectionStatus | null;
  readonly overlays: OverlayRegistry;
  readonly bus: Bus;
  readonly cascades: Cascades;
  readonly pipelines: Pipelines;
  /** The live web inspector (`listen({ port, host, token })`) and the inspection records behind it. */
  readonly inspector: Inspector;
  /**
   * Re-executes every overlay call a journaled run recorded, with its recorded input and host-call answers (nothing
   * runs on the host, nothing is published), and reports whether outputs and fuel are identical, or the first
   * difference (entry, phase, overlay, JSON path). With `overlays`, those overlays' calls run on the given versions
   * instead: a shadow test of a new version against recorded traffic, every differing call listed.
   */
  replay(id: string, options?: ReplayOptions): Promise<ReplayReport>;
  /** The kernel processes sharing this kernel's NATS (heartbeats, with what each runs); just this one in process. */
  cluster(): Promise<ClusterMember[]>;
  /** Halts pipeline runs at a phase boundary (checkpointed), drains the bus, persists chains, and unloads every overlay once its calls in flight have finished. */
  stop(): Promise<void>;
}

export interface ReplayOptions {
  /** Versions to replay instead, by overlay name: a .wasm path (its manifest beside it) or { wasm, manifest }. */
  overlays?: Record<string, string | { wasm: Uint8Array; manifest: unknown }>;
  /** The run's entries (e.g. read from a `forge-kernel journal export`), instead of this kernel's journal. */
  entries?: readonly JournalEntry[];
}

function isLogger(value: unknown): value is Logger {
  return typeof value === 'object' && value !== null && typeof (value as Logger).child === 'function' && typeof (value as Logger).info === 'function';
}

function isStore(value: unknown): value is Store {
  return typeof value === 'object' && value !== null && typeof (value as Store).saveRunSnapshot === 'function';
}

function openStore(option: StoreOption | undefined, logger: Logger): Store {
  if (option === undefined) return new MemoryStore();
  if (isStore(option)) return option;
  if (option.kind === 'memory') {
    return new MemoryStore({ ...(option.auditLimit === undefined ? {} : { auditLimit: option.auditLimit }), ...(option.deadLetterLimit === undefined ? {} : { deadLetterLimit: option.deadLetterLimit }) });
  }
  if (option.kind === 'neo4j') {
    if (typeof option.uri !== 'string' || typeof option.user !== 'string' || typeof option.password !== 'string') {
      throw new ForgeError('INVALID_CONFIG', 'store: { kind: "neo4j" } needs uri, user and password (npm run services:start prints them).');
    }
    return new Neo4jStore({ ...option, logger });
  }
  throw new ForgeError('INVALID_CONFIG', `store.kind must be "memory" or "neo4j", got ${JSON.stringify((option as { kind?: unknown }).kind)}.`);
}

function isJournal(value: unknown): value is Journal {
  return typeof value === 'object' && value !== null && typeof (value as Journal).append === 'function' && typeof (value as Journal).read === 'function';
}

function openJournal(option: JournalOption | undefined, storeOption: StoreOption | undefined, busOption: KernelOptions['bus'], logger: Logger): Journal | undefined {
  // By default, runs are journaled in memory with the kernel's own memory store; a store the embedder hands over (or
  // Neo4j) keeps them as snapshots.
  if (option === undefined) return storeOption === undefined || (!isStore(storeOption) && storeOption.kind === 'memory') ? new MemoryJournal() : undefined;
  if (option === false) return undefined;
  if (option === 'memory') return new MemoryJournal();
  if (isJournal(option)) return option;
  if (typeof option === 'object' && option !== null && option.kind === 'memory') return new MemoryJournal(option.maxStreams === undefined ? {} : { maxStreams: option.maxStreams });
  if (typeof option === 'object' && option !== null && option.kind === 'sqlite') return new SqliteJournal({ ...option, logger: logger.child({ component: 'journal' }) });
  if (typeof option === 'object' && option !== null && option.kind === 'jetstream') {
    // In a cluster the journal is on the bus's NATS and named after its stream, unless told otherwise.
    const nats = busOption !== undefined && 'transport' in busOption && busOption.transport === 'nats' ? busOption : undefined;
    const servers = option.servers ?? nats?.servers;
    if (servers === undefined) throw new ForgeError('INVALID_CONFIG', 'journal: { kind: "jetstream" } needs servers (or a NATS bus to share them with).');
    return new JetStreamJournal({
      servers,
      name: option.name ?? nats?.stream ?? 'default',
      ...(option.replicas === undefined ? {} : { replicas: option.replicas }),
      ...(option.timeoutMs === undefined ? {} : { timeoutMs: option.timeoutMs }),
      logger: logger.child({ component: 'journal' }),
    });
  }
  throw new ForgeError('INVALID_CONFIG', `journal must be "memory", { kind: "sqlite", path }, { kind: "jetstream" }, a Journal or false, got ${JSON.stringify(option)}.`);
}

/** Pipelines from the kernel's options; bad options close what the kernel had opened before they are reported. */
async function createPipelines(deps: PipelinesDependencies, options: PipelineOptions | undefined, release: () => Promise<void>): Promise<Pipelines> {
  try {
    return new Pipelines(deps, options);
  } catch (error) {
    await release();
    throw error;
  }
}

/**
 * Creates a kernel: in-memory by default; with `store: { kind: 'neo4j', … }` its state lives in Neo4j and overlays
 * granted DATABASE_READ / DATABASE_WRITE get `db_read` / `db_write` on that graph.
 */
export async function createKernel(options: KernelOptions = {}): Promise<Kernel> {
  const logger = isLogger(options.logger) ? options.logger : createLogger(options.logger);
  const cache = new MeteredModuleCache(options.cacheDir === undefined ? {} : { dir: options.cacheDir });
  const store = openStore(options.store, logger);
  await store.start();
  let journal: Journal | undefined;
  try {
    journal = openJournal(options.journal, options.store, options.bus, logger);
    await journal?.open();
  } catch (error) {
    await journal?.close();
    await store.close();
    throw error;
  }
  const graph = store instanceof Neo4jStore ? graphHostFunctions(graphOptions(store, options.graph)) : [];
  // With a journal, Neo4j is a projection of it: the audit trail is written behind, and runs never wait for Neo4j.
  const busOption = options.bus;
  const bus: Bus =
    busOption !== undefined && 'transport' in busOption && busOption.transport === 'nats'
      ? await NatsBus.connect({ ...busOption, store, logger }).catch(async (error: unknown) => {
          await journal?.close();
          await store.close();
          throw error;
        })
      : new EventBus({ ...(busOption as Omit<BusOptions, 'store' | 'logger'> | undefined), store, logger });
  // A cluster is the kernels sharing an event stream; its key-value buckets are named after it.
  const chainGuard = bus instanceof NatsBus ? await ChainGuard.open(bus.connection, `forge_chains_${bus.clusterName}`) : undefined;
  const leases = bus instanceof NatsBus ? await RunLeases.open(bus.connection, bus.processId, logger, `forge_run_leases_${bus.clusterName}`) : undefined;
  // The projection's position is kept under the journal's identity (a file, a stream), so another journal sharing
  // the Neo4j never inherits it; a memory journal (gone with its process) is not projected.
  const journalIdentity = journal instanceof SqliteJournal ? `sqlite:${journal.path}` : journal instanceof JetStreamJournal ? `jetstream:${journal.streamName}` : undefined;
  const projector = journal?.feed !== undefined && journalIdentity !== undefined && store instanceof Neo4jStore ? new JournalProjector({ journal, store, name: `neo4j ${journalIdentity}`, logger: logger.child({ component: 'projection' }), ...(leases === undefined ? {} : { leader: () => leases.claim('forge_projector_neo4j') }) }) : undefined;
  const catalog = new ActorCatalog();
  const adapter = new InspectionAdapter(catalog);
  if (options.inspect === true) adapter.enable();
  const manager = new CascadeManager({ store, logger, catalog, ...(journal === undefined ? {} : { journal, storeBehind: projector !== undefined }), ...(options.maxLiveChains === undefined ? {} : { maxLiveChains: options.maxLiveChains }) });
  await manager.restore();
  /** The cascade an overlay call belongs to, so the insights it emits continue that chain. */
  const cascadeOfCall = new AsyncLocalStorage<string>();

  const overlays = new OverlayRegistry({
    logger,
    cache,
    store,
    hostFunctions: [...graph, ...(options.hostFunctions ?? [])],
    catalog,
    ...(options.limits?.maxMemoryPages === undefined ? {} : { maxMemoryPages: memoryCeiling(options.limits.maxMemoryPages) }),
    ...(options.limits?.maxFuel === undefined ? {} : { maxFuel: fuelCeiling(options.limits.maxFuel) }),
    ...(options.historyLimit === undefined ? {} : { historyLimit: options.historyLimit }),
    onEvents: (events, from) => {
      options.onEvents?.(events);
      const cascadeId = cascadeOfCall.getStore();
      for (const event of events) {
        if (cascadeId !== undefined) manager.count(cascadeId, 'insights');
        const payload = cascadeId !== undefined && typeof event.payload === 'object' && event.payload !== null && !Array.isArray(event.payload) ? { ...event.payload, cascadeId } : event.payload;
        bus.publish({ type: event.type, payload, source: event.source, ...(from.correlationId === undefined ? {} : { correlationId: from.correlationId }) }).catch((err: unknown) => logger.warn({ err, event: event.type, source: event.source }, 'an overlay event could not be published'));
      }
    },
  });

  // Every active overlay receives the events its manifest subscribes to, through its actor and breaker.
  const subscriptions = new Map<string, () => void>();
  /**
   * The overlays each event (by id) has already taken its chain to: a retried or redelivered delivery (over NATS a
   * new object with the same id) is the same hop, not a cycle. Bounded: the oldest ids go first.
   */
  const hopped = new Map<string, Set<string>>();
  const HOPPED_LIMIT = 10_000;
  /** Deliveries of an event to an overlay so far (a chain call's attempt number); bounded like `hopped`. */
  const attempts = new Map<string, number>();
  const attemptOf = (eventId: string, overlayId: string): number => {
    const key = `${eventId}\u0000${overlayId}`;
    const attempt = (attempts.get(key) ?? 0) + 1;
    attempts.delete(key);
    attempts.set(key, attempt);
    if (attempts.size > HOPPED_LIMIT) attempts.delete(attempts.keys().next().value!);
    return attempt;
  };
  const deliverTo = (overlay: OverlayHandle) => async (event: BusEvent): Promise<void> => {
    // A deactivated or quarantined overlay receives nothing, and its events are neither retried nor dead letters.
    if (!overlays.accepts(overlay.id)) return;
    const cascadeId = typeof event.payload === 'object' && event.payload !== null ? (event.payload as { cascadeId?: unknown }).cascadeId : undefined;
    if (typeof cascadeId === 'string' && hopped.get(event.id)?.has(overlay.id) !== true) {
      try {
        if (chainGuard !== undefined) {
          // Across processes the chain's limits are global: the hop is taken in the cluster's bucket first, then
          // mirrored on this process's chain actor when the chain started here.
          await chainGuard.hop(cascadeId, overlay.name);
          await manager.propagate(cascadeId, overlay.name).catch((error: unknown) => {
            if (!(error instanceof CascadeError)) throw error;
          });
        } else {
          await manager.propagate(cascadeId, overlay.name);
        }
        hopped.set(event.id, (hopped.get(event.id) ?? new Set()).add(overlay.id));
        if (hopped.size > HOPPED_LIMIT) hopped.delete(hopped.keys().next().value!);
      } catch (error) {
        // A cycle, a spent hop budget or a closed chain ends the cascade here: the event is handled, not failed.
        if (error instanceof CascadeError) {
          if (error.code === 'CASCADE_CYCLE' || error.code === 'CASCADE_HOP_LIMIT') manager.halt(cascadeId, error.code === 'CASCADE_CYCLE' ? 'cycle' : 'hop-limit');
          return;
        }
        throw error;
      }
    }
    const input = { event: { id: event.id, type: event.type, source: event.source, payload: event.payload } };
    // A call a live chain caused is journaled with its host calls (a replay of the chain re-executes it).
    const chainCall = typeof cascadeId === 'string' && journal !== undefined && manager.get(cascadeId) !== undefined ? { host: [] as HostCallRecord[], started: performance.now(), attempt: attemptOf(event.id, overlay.id) } : undefined;
    const call = (): Promise<CallResult> => overlays.call(overlay.id, 'run', input, { correlationId: event.correlationId, trust: 100, ...(chainCall === undefined ? {} : { tape: { record: (hostCall: HostCallRecord) => void chainCall.host.push(hostCall) } }) });
    const recordCall = (outcome: { output: unknown } | { error: { code: string; message: string } }, fuelUsed: number): void => {
      if (chainCall === undefined) return;
      const described = overlays.describe(overlay.name);
      manager.recordCall(cascadeId as string, { overlay: overlay.name, version: described?.version ?? 'unknown', sha256: described?.sha256 ?? 'unknown', event: event.type, attempt: chainCall.attempt, input, ...outcome, fuelUsed, durationMs: performance.now() - chainCall.started, ...(chainCall.host.length > 0 ? { host: chainCall.host } : {}) });
    };
    let output: unknown;
    try {
      const result = await (typeof cascadeId === 'string' ? cascadeOfCall.run(cascadeId, call) : call());
      output = result.output;
      recordCall({ output }, result.fuelUsed);
    } catch (error) {
      recordCall({ error: { code: isForgeError(error) ? error.code : 'UNEXPECTED', message: String((error as Error).message) } }, (error as { fuelUsed?: number }).fuelUsed ?? 0);
      if (typeof cascadeId === 'string') manager.count(cascadeId, 'errors');
      throw error;
    }
    if (typeof cascadeId === 'string') manager.count(cascadeId, typeof output === 'object' && output !== null && (output as { ok?: unknown }).ok === false ? 'errors' : 'actions');
    // An overlay that answers { ok: false } did not handle the event: the bus retries it, then dead-letters it.
    if (typeof output === 'object' && output !== null && (output as { ok?: unknown }).ok === false) {
      const message = (output as { error?: { message?: unknown } }).error?.message;
      throw new ForgeError('OVERLAY_ERROR', `Overlay "${overlay.name}" could not handle ${event.type}: ${typeof message === 'string' ? readableMessage(message) : 'it answered ok: false'}.`, { details: { overlay: overlay.name, event: event.id } });
    }
  };
  const subscribe = (overlay: OverlayHandle): void => {
    if (overlay.subscribes.length === 0 || subscriptions.has(overlay.id)) return;
    subscriptions.set(overlay.id, bus.subscribe({ name: overlay.name, patterns: overlay.subscribes, target: overlay.name, accepts: () => overlays.accepts(overlay.id) }, deliverTo(overlay)));
  };
  overlays.on('loaded', subscribe);
  if (bus instanceof NatsBus) {
    // Across processes a copy that is not active stops taking its group's events, so the active copies elsewhere get
    // them all (in one process the bus skips them instead, and counts them).
    overlays.on('state', ({ overlayId, state }: { overlayId: string; state: string }) => {
      const overlay = overlays.get(overlayId);
      if (overlay === undefined) return;
      if (state === 'active') subscribe(overlay);
      else if (state !== 'terminated') {
        subscriptions.get(overlayId)?.();
        subscriptions.delete(overlayId);
      }
    });
  }
  overlays.on('unloaded', ({ overlayId }: { overlayId: string }) => {
    subscriptions.get(overlayId)?.();
    subscriptions.delete(overlayId);
  });

  const cascades: Cascades = {
    async start(source, insightType, data = {}, startOptions = {}) {
      const chain = await manager.start(source, insightType, startOptions);
      await chainGuard?.register({ id: chain.id, source, maxHops: chain.maxHops, visited: [...chain.visited], expiresAt: chain.expiresAt });
      manager.count(chain.id, 'insights');
      // A chain is the kernel's own causal root: started from a handler, it does not inherit the handler's hops.
      await detached(() => bus.publish({ type: insightType, payload: { ...data, cascadeId: chain.id }, source, correlationId: chain.correlationId }));
      return manager.get(chain.id) ?? chain;
    },
    async append(chainId, insightType, data = {}, source = 'kernel') {
      const chain = manager.get(chainId);
      if (chain === undefined || chain.status !== 'active') throw new CascadeError(chain === undefined ? 'CASCADE_NOT_FOUND' : 'CASCADE_NOT_ACTIVE', `No live cascade "${chainId}" to add an insight to.`, { chainId });
      if (typeof insightType !== 'string' || !/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/.test(insightType)) throw new CascadeError('INVALID_INPUT', `An insight type is "domain.action", got ${JSON.stringify(insightType)}.`);
      if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new CascadeError('INVALID_INPUT', 'An insight\'s data is an object.');
      manager.count(chainId, 'insights');
      await bus.publish({ type: insightType, payload: { ...data, cascadeId: chainId }, source, correlationId: chain.correlationId });
      return manager.get(chainId) ?? chain;
    },
    propagate: (chainId, to) => manager.propagate(chainId, to),
    complete: async (chainId) => {
      const view = await manager.complete(chainId);
      await chainGuard?.complete(chainId);
      return view;
    },
    get: (chainId) => manager.get(chainId),
    active: () => manager.active(),
  };

  const pipelines = await createPipelines(
    {
      store,
      ...(journal === undefined ? {} : { journal }),
      auditBehind: projector !== undefined,
      describeOverlay: (name) => overlays.describe(name),
      admits: (name, trust) => overlays.admits(name, trust),
      logger,
      callOverlay: (name, input, call) => overlays.call(name, 'run', input, call),
      overlaysOf: (phase) => overlays.byPhase(phase).map((overlay) => overlay.name),
      watchOverlays: (changed) => {
        overlays.on('loaded', changed);
        overlays.on('unloaded', changed);
      },
      catalog,
      ...(leases === undefined || !(bus instanceof NatsBus)
        ? {}
        : {
            leases,
            processId: bus.processId,
            clusterName: bus.clusterName,
            queue: {
              enqueue: async (runId: string) => void (await bus.publish({ type: 'pipeline.enqueued', payload: { runId }, source: 'pipeline' })),
              settled: async (result: RunResult) => void (await bus.publish({ type: 'pipeline.settled', payload: result, source: 'pipeline' })),
            },
          }),
      publish: (type, payload, correlationId) => {
        // Run events nobody subscribes to are not built (a publish costs ≈8 µs; a run has nine events).
        if (!bus.listens(type)) return;
        // A run's events are the kernel's own: never a consequence of whatever handler started or resumed the run.
        detached(() => bus.publish({ type, payload, source: 'pipeline', correlationId })).catch((err: unknown) =>
          logger.error({ err, event: type, runId: payload.runId, correlationId }, 'a pipeline event could not be published: subscribers waiting for it will not hear of the run'),
        );
      },
    },
    options.pipelines,
    async () => {
      await overlays.close();
      await journal?.close();
      await store.close();
    },
  );

  const memberStatus = (): MemberStatus => ({ overlays: overlays.list().map((o) => o.name), activeRuns: pipelines.stats().active });
  const membership = bus instanceof NatsBus ? await Membership.join(bus.connection, { processId: bus.processId, status: memberStatus, logger, bucket: `forge_members_${bus.clusterName}` }) : undefined;
  const startedAt = Date.now();
  const cluster = async (): Promise<ClusterMember[]> => {
    if (membership !== undefined) return membership.members();
    return [{ processId: `${hostname()}-${process.pid}`, host: hostname(), pid: process.pid, startedAt, lastSeen: Date.now(), transport: 'memory', self: true, ...memberStatus() }];
  };
  if (bus instanceof NatsBus) {
    // The cluster's pipeline work queue: one process of the group takes each new run; every process hears results.
    bus.subscribe({ name: 'forge-pipeline-runners', types: ['pipeline.enqueued'] }, (event) => pipelines.offered((event.payload as { runId: string }).runId));
    bus.subscribe({ name: 'forge-run-results', types: ['pipeline.settled'], broadcast: true }, (event) => pipelines.settledElsewhere(event.payload as RunResult));
  }

  const inspector = new Inspector({
    catalog,
    adapter,
    logger,
    cluster,
    // Call statistics per overlay and per phase, for the inspector's statistics panel.
    stats: () => ({ overlays: Object.entries(overlays.stats()).map(([id, s]) => ({ id, ...s })), phases: pipelines.stats().phases, projection: projector?.status() ?? null }),
    controls: {
      decide: (runId, decision, by, reason) => pipelines.resume(runId, { decision, by, ...(reason === undefined ? {} : { reason }) }),
      resume: (runId) => pipelines.resume(runId),
      cancel: async (runId) => {
        const run = pipelines.get(runId);
        if (run === undefined) throw new RunNotFoundError(runId);
        return run.cancel('cancelled from the inspector');
      },
      resetBreaker: (overlay) => overlays.resetCircuit(overlay),
      forceOpenBreaker: (overlay) => overlays.forceOpenCircuit(overlay),
      activate: (overlay) => overlays.activate(overlay),
      deactivate: (overlay) => overlays.deactivate(overlay),
    },
  });

  const replay = async (id: string, replayOptions: ReplayOptions = {}): Promise<ReplayReport> => {
    if (typeof id !== 'string' || id === '') throw new InvalidInputError('replay needs a run id.');
    if (typeof replayOptions !== 'object' || replayOptions === null) throw new InvalidInputError('replay options must be an object.');
    const { overlays: versions = {}, entries: given } = replayOptions;
    if (typeof versions !== 'object' || versions === null || Array.isArray(versions)) throw new InvalidInputError('replay options.overlays maps overlay names to a .wasm path or { wasm, manifest }.');
    if (given !== undefined && !Array.isArray(given)) throw new InvalidInputError('replay options.entries must be an array of journal entries.');
    if (given === undefined && journal === undefined) throw new JournalUnavailableError('This kernel keeps no journal (journal: false): pass the run\'s entries.');
    const entries: readonly JournalEntry[] = given ?? (await journal!.read(id));
    if (entries.length === 0) throw new RunNotFoundError(id);
    const first = entries[0];
    const started: RecordedOverlay[] = first?.kind === 'run.started' && Array.isArray(first.body.overlays) ? first.body.overlays : [];
    const candidates = new Map<string, OverlayEngine>();
    try {
      for (const [name, source] of Object.entries(versions)) {
        const live = overlays.get(name);
        const recorded = started.find((o) => o.name === name);
        const mode = live?.mode ?? recorded?.mode ?? 'strict';
        if (mode !== 'strict' && mode !== 'relaxed') throw new InvalidInputError(`replay: ${name} runs in ${mode} mode: only wasm overlays can be replayed on another version.`);
        const grant = (live?.grant ?? recorded?.grant ?? []) as Capability[];
        const engine =
          typeof source === 'string'
            ? await overlays.loadDetached(source, { grant, mode })
            : typeof source === 'object' && source !== null && source.wasm instanceof Uint8Array
              ? await overlays.loadDetached(source.wasm, { manifest: source.manifest, grant, mode })
              : undefined;
        if (engine === undefined) throw new InvalidInputError(`replay options.overlays.${name} must be a .wasm path or { wasm, manifest }.`);
        candidates.set(name, engine);
        if (engine.manifest.name !== name) throw new InvalidInputError(`replay options.overlays.${name} is overlay "${engine.manifest.name}", not "${name}".`);
      }
      return await replayRun(id, entries, (name) => {
        const candidate = candidates.get(name);
        if (candidate !== undefined) return { engine: candidate, candidate: true };
        const engine = overlays.engineOf(name);
        return engine === undefined ? undefined : { engine, candidate: false };
      });
    } finally {
      await Promise.all([...candidates.values()].map((engine) => engine.close()));
    }
  };

  let stopped = false;
  projector?.start();
  return {
    logger,
    store,
    journal,
    projection: () => projector?.status() ?? null,
    overlays,
    bus,
    cascades,
    pipelines,
    inspector,
    replay,
    cluster,
    async stop() {
      if (stopped) return;
      stopped = true;
      await inspector.close();
      await pipelines.stop();
      await projector?.stop();
      // Interrupted runs keep their checkpoints; releasing their leases lets another process continue them.
      await leases?.close();
      await membership?.leave();
      const { undelivered } = await bus.stop();
      if (undelivered.length > 0) logger.warn({ undelivered: undelivered.length }, 'events not delivered before stop');
      await manager.persistAll();
      manager.stop();
      await manager.journaled();
      await overlays.close();
      await journal?.close();
      await store.close();
    },
  };
}

export type { BreakerConfig };
