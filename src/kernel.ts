import { ForgeError } from './errors.ts';
import { createLogger, type Logger, type LoggerConfig } from './logger.ts';
import { graphHostFunctions } from './store/graph-host.ts';
import { MemoryStore } from './store/memory-store.ts';
import { Neo4jStore } from './store/neo4j-store.ts';
import type { Store } from './store/store.ts';
import type { BreakerConfig } from '../actors/circuit-breaker.ts';
import { OverlayRegistry } from './overlays/registry.ts';
import type { PublishedEvent } from './wasm/engine.ts';
import type { HostFunction } from './wasm/host-functions.ts';
import { MeteredModuleCache } from './wasm/metered-cache.ts';

/** Where the kernel keeps what it must not lose: in memory (the default), or in Neo4j (which also gives overlays a graph). */
export type StoreOption = { kind: 'memory' } | { kind: 'neo4j'; uri: string; user: string; password: string; database?: string } | Store;

export interface KernelOptions {
  store?: StoreOption;
  /** A pino logger, or options for the kernel's own (JSON to stdout by default). */
  logger?: Logger | LoggerConfig;
  /** Where metered modules are cached on disk; false keeps them in memory only. Default `~/.cache/forge-kernel`. */
  cacheDir?: string | false;
  /** Kernel host functions offered to overlays beyond the builtins (gated by their capabilities). */
  hostFunctions?: readonly HostFunction[];
  /** Events overlays publish (after their call succeeded). The event bus takes this over in a later release. */
  onEvents?: (events: readonly PublishedEvent[]) => void;
  /** Bounded execution history (default 1,000 calls). */
  historyLimit?: number;
}

/** An embedded Forge Kernel: create one per service (no globals), stop it on shutdown. */
export interface Kernel {
  readonly logger: Logger;
  readonly store: Store;
  readonly overlays: OverlayRegistry;
  /** Unloads every overlay once its calls in flight have finished. */
  stop(): Promise<void>;
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
  if (option.kind === 'memory') return new MemoryStore();
  if (option.kind === 'neo4j') {
    if (typeof option.uri !== 'string' || typeof option.user !== 'string' || typeof option.password !== 'string') {
      throw new ForgeError('INVALID_CONFIG', 'store: { kind: "neo4j" } needs uri, user and password (npm run services:start prints them).');
    }
    return new Neo4jStore({ ...option, logger });
  }
  throw new ForgeError('INVALID_CONFIG', `store.kind must be "memory" or "neo4j", got ${JSON.stringify((option as { kind?: unknown }).kind)}.`);
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
  const graph = store instanceof Neo4jStore ? graphHostFunctions({ driver: store.driver }) : [];
  const overlays = new OverlayRegistry({
    logger,
    cache,
    store,
    hostFunctions: [...graph, ...(options.hostFunctions ?? [])],
    ...(options.historyLimit === undefined ? {} : { historyLimit: options.historyLimit }),
    onEvents: (events) => {
      if (options.onEvents !== undefined) options.onEvents(events);
      else for (const event of events) logger.debug({ event: event.type, source: event.source }, 'overlay event');
    },
  });
  let stopped = false;
  return {
    logger,
    store,
    overlays,
    async stop() {
      if (stopped) return;
      stopped = true;
      await overlays.close();
      await store.close();
    },
  };
}

export type { BreakerConfig };
