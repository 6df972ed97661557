import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ForgeError } from '../errors.ts';
import { packagePath } from '../package-root.ts';
import { defaultCacheDir } from '../wasm/metered-cache.ts';
import { buildOverlays, builtUpToDate, type BuildOptions } from './build.ts';

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
export const EXAMPLES_SOURCE_DIR = packagePath('overlays-as', 'examples');

/** Where the published package carries the examples already built (`npm run build` writes them). */
export const PREBUILT_EXAMPLES_DIR = packagePath('dist', 'examples');

export interface ExampleBuildOptions {
  /** Build into this folder (default: the prebuilt folder when it is current, else `<cache>/examples`). */
  outDir?: string;
  /** Progress: called as each example starts building and as it finishes. */
  onStart?: BuildOptions['onStart'];
  onResult?: BuildOptions['onResult'];
}

/** True when `dir` holds every example built from exactly the sources, SDK and compiler here. */
function examplesCurrent(dir: string): boolean {
  return existsSync(dir) && EXAMPLE_NAMES.every((name) => builtUpToDate(join(dir, `${name}.manifest.json`), join(EXAMPLES_SOURCE_DIR, `${name}.ts`)));
}

/**
 * Returns a folder with the example overlays built (`<name>.wasm` + `<name>.manifest.json` for each). An installed
 * package ships them built, so nothing is compiled; in a checkout (or when the sources changed) they are built into
 * `outDir`, skipping those unchanged since their last build.
 */
export async function buildExampleOverlays(options: ExampleBuildOptions = {}): Promise<string> {
  if (options.outDir === undefined && examplesCurrent(PREBUILT_EXAMPLES_DIR)) return PREBUILT_EXAMPLES_DIR;
  const outDir = options.outDir ?? join(defaultCacheDir(), 'examples');
  const results = await buildOverlays(
    EXAMPLE_NAMES.map((name) => join(EXAMPLES_SOURCE_DIR, `${name}.ts`)),
    { outDir, ...(options.onStart === undefined ? {} : { onStart: options.onStart }), ...(options.onResult === undefined ? {} : { onResult: options.onResult }) },
  );
  const failed = results.find((r) => r.status === 'failed');
  if (failed !== undefined) throw new ForgeError('BUILD_FAILED', `The example overlay ${failed.file} did not build: ${failed.error?.message ?? 'unknown error'}`);
  return outDir;
}
