import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BINARYEN_VERSION } from './binaryen.ts';
import { DEFAULT_MAX_STACK_BYTES, FUEL_COSTS } from './fuel-meter.ts';
import { meterOffThread } from './meter-thread.ts';

/**
 * Bumped whenever the meter's output changes for the same input, so stale cached modules are never used
 * (the fuel costs are part of the key too).
 */
const METER_VERSION = 6;

/** Where metered modules are kept between processes unless configured: `FORGE_CACHE_DIR` or `~/.cache/forge-kernel`. */
export function defaultCacheDir(): string {
  return process.env.FORGE_CACHE_DIR ?? join(homedir(), '.cache', 'forge-kernel');
}

/**
 * Metered modules by content: the sha256 of the original bytes plus the meter's version, costs, stack limit and
 * binaryen version.
 * Kept in memory and, unless `dir` is false, on disk, so binaryen is imported and a module instrumented once per
 * module, not once per load or per process. A miss of both is metered in the meter's worker thread; hits stay here.
 */
export class MeteredModuleCache {
  readonly #memory = new Map<string, Promise<Uint8Array>>();
  readonly #dir: string | false;
  /** How many modules this cache instrumented (misses of both memory and disk), for tests and stats. */
  instrumented = 0;

  constructor(options: { dir?: string | false } = {}) {
    this.#dir = options.dir ?? join(defaultCacheDir(), 'metered');
  }

  /** The metered bytes of a module whose sha256 is `hash`. */
  get(bytes: Uint8Array, hash: string, maxStackBytes = DEFAULT_MAX_STACK_BYTES): Promise<Uint8Array> {
    const key = createHash('sha256').update(`${hash}:${METER_VERSION}:${JSON.stringify(FUEL_COSTS)}:${maxStackBytes}:${BINARYEN_VERSION}`).digest('hex');
    let entry = this.#memory.get(key);
    if (entry === undefined) {
      entry = this.#load(key, bytes, maxStackBytes);
      this.#memory.set(key, entry);
      entry.catch(() => this.#memory.delete(key));
    }
    return entry;
  }

  async #load(key: string, bytes: Uint8Array, maxStackBytes: number): Promise<Uint8Array> {
    const file = this.#dir === false ? undefined : join(this.#dir, `${key}.wasm`);
    if (file !== undefined) {
      try {
        return new Uint8Array(readFileSync(file));
      } catch {
        // not cached on disk yet
      }
    }
    const metered = await meterOffThread(bytes, { maxStackBytes });
    this.instrumented++;
    if (file !== undefined && this.#dir !== false) {
      try {
        mkdirSync(this.#dir, { recursive: true });
        const temporary = `${file}.${process.pid}.tmp`;
        writeFileSync(temporary, metered);
        renameSync(temporary, file);
      } catch {
        // A read-only or full disk only costs the next process a re-instrumentation.
      }
    }
    return metered;
  }
}
