import { createLogger, type Logger, type LoggerConfig } from './logger.ts';
import type { BreakerConfig } from '../actors/circuit-breaker.ts';
import { OverlayRegistry } from './overlays/registry.ts';
import type { PublishedEvent } from './wasm/engine.ts';
import type { HostFunction } from './wasm/host-functions.ts';
import { MeteredModuleCache } from './wasm/metered-cache.ts';

export interface KernelOptions {
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
  readonly overlays: OverlayRegistry;
  /** Unloads every overlay once its calls in flight have finished. */
  stop(): Promise<void>;
}

function isLogger(value: unknown): value is Logger {
  return typeof value === 'object' && value !== null && typeof (value as Logger).child === 'function' && typeof (value as Logger).info === 'function';
}

/** Creates a kernel on the embedded defaults. */
export function createKernel(options: KernelOptions = {}): Promise<Kernel> {
  const logger = isLogger(options.logger) ? options.logger : createLogger(options.logger);
  const cache = new MeteredModuleCache(options.cacheDir === undefined ? {} : { dir: options.cacheDir });
  const overlays = new OverlayRegistry({
    logger,
    cache,
    ...(options.hostFunctions === undefined ? {} : { hostFunctions: options.hostFunctions }),
    ...(options.historyLimit === undefined ? {} : { historyLimit: options.historyLimit }),
    onEvents: (events) => {
      if (options.onEvents !== undefined) options.onEvents(events);
      else for (const event of events) logger.debug({ event: event.type, source: event.source }, 'overlay event');
    },
  });
  let stopped = false;
  return Promise.resolve({
    logger,
    overlays,
    async stop() {
      if (stopped) return;
      stopped = true;
      await overlays.close();
    },
  });
}

export type { BreakerConfig };
