import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type binaryenModule from 'binaryen';
import { ForgeError } from '../errors.ts';
import { dependencyRange } from '../package-root.ts';

export type Binaryen = typeof binaryenModule;

/**
 * The meter needs exactly the binaryen it is tested with: another version reads, rewrites or validates modules
 * differently (an older one, hoisted by npm from assemblyscript's own dependency, rejects bulk-memory modules with
 * tens of thousands of validator lines), and the fuel of a module must not depend on what npm happened to install.
 */
export const BINARYEN_VERSION: string = dependencyRange('binaryen') ?? 'unknown';

/** The fuel meter cannot run: binaryen is missing or not the version the meter is tested with. */
export class MeterUnavailableError extends ForgeError {
  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super('METER_UNAVAILABLE', message, options);
  }
}

/** The binaryen package Node resolves from `from` (a file): its entry file, folder and version. */
function resolveBinaryen(from: string): { entry: string; version: string; path: string } {
  const entry = createRequire(from).resolve('binaryen');
  for (let dir = dirname(entry); dirname(dir) !== dir; dir = dirname(dir)) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (manifest.name === 'binaryen') return { entry, version: String(manifest.version), path: dir };
    } catch {
      // not the package folder yet
    }
  }
  return { entry, version: 'unknown', path: dirname(entry) };
}

/**
 * Imports the binaryen that Node resolves from `from` after checking it is {@link BINARYEN_VERSION}; fails with
 * {@link MeterUnavailableError} naming the fix otherwise. Exported for tests; the kernel uses {@link loadBinaryen}.
 */
export async function importBinaryen(from: string = fileURLToPath(import.meta.url)): Promise<Binaryen> {
  let found: { entry: string; version: string; path: string };
  try {
    found = resolveBinaryen(from);
  } catch (error) {
    throw new MeterUnavailableError(`Fuel metering needs the binaryen package ${BINARYEN_VERSION}, which is not installed: reinstall forge-kernel (npm install forge-kernel) so that its dependencies are installed with it.`, { cause: error, details: { expected: BINARYEN_VERSION, found: null } });
  }
  if (found.version !== BINARYEN_VERSION) {
    throw new MeterUnavailableError(
      `Fuel metering needs binaryen ${BINARYEN_VERSION} (the version the meter is tested with), but Node resolves binaryen ${found.version} from ${found.path}. Reinstall forge-kernel so that it gets its own copy (npm install forge-kernel; remove any override or alias of binaryen).`,
      { details: { expected: BINARYEN_VERSION, found: found.version, path: found.path } },
    );
  }
  return ((await import(pathToFileURL(found.entry).href)) as { default: Binaryen }).default;
}

let loading: Promise<Binaryen> | undefined;

/** binaryen for the meter: imported (≈0.6 s) once per process, on the first module that needs metering. */
export function loadBinaryen(): Promise<Binaryen> {
  loading ??= importBinaryen();
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}
