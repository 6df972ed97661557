import { join, resolve } from 'node:path';
import { ForgeError } from '../errors.ts';
import { defaultCacheDir } from '../wasm/metered-cache.ts';
import { buildOverlays } from './build.ts';

/** The example overlays shipped with the kernel, one per phase, in phase order. */
export const EXAMPLE_NAMES = [
  'ingestion-normalizer',
  'analysis-classifier',
  'security-validator',
  'governance-voter',
  'capsule-processor',
  'cascade-propagator',
  'lineage-tracker',
] as const;
export type ExampleName = (typeof EXAMPLE_NAMES)[number];

/** Where the examples' AssemblyScript sources are. */
export const EXAMPLES_SOURCE_DIR = resolve(import.meta.dirname, '..', '..', 'overlays-as', 'examples');

/**
 * Builds the example overlays into `outDir` (default `<cache>/examples`), skipping those unchanged since the last
 * build, and returns the folder: `<name>.wasm` + `<name>.manifest.json` for each.
 */
export async function buildExampleOverlays(outDir = join(defaultCacheDir(), 'examples')): Promise<string> {
  const results = await buildOverlays(
    EXAMPLE_NAMES.map((name) => join(EXAMPLES_SOURCE_DIR, `${name}.ts`)),
    { outDir },
  );
  const failed = results.find((r) => r.status === 'failed');
  if (failed !== undefined) throw new ForgeError('BUILD_FAILED', `The example overlay ${failed.file} did not build: ${failed.error?.message ?? 'unknown error'}`);
  return outDir;
}
