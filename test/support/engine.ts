import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/logger.ts';
import { MeteredModuleCache } from '../../src/wasm/metered-cache.ts';

/** One metered-module cache for all engine tests (on disk under .forge/, so binaryen runs once per module). */
export const testCache = new MeteredModuleCache({ dir: join(resolve(import.meta.dirname, '..', '..'), '.forge', 'cache', 'metered-test') });

/** A JSON logger whose lines the test can read. */
export function captureLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return {
    logger: createLogger({ destination, level: 'debug', format: 'json' }),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
