import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildOverlays } from '../../src/build/build.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
export const EXAMPLES_OUT = join(ROOT, '.forge', 'cache', 'examples');
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

/** Builds the example overlays (skipped when unchanged) and returns each one's bytes and manifest. */
export async function buildExamples(): Promise<Record<ExampleName, { bytes: Uint8Array; manifest: Record<string, unknown>; wasm: string }>> {
  const results = await buildOverlays(EXAMPLE_NAMES.map((name) => join(ROOT, 'overlays-as', 'examples', `${name}.ts`)), { outDir: EXAMPLES_OUT });
  const failed = results.find((r) => r.status === 'failed');
  if (failed !== undefined) throw new Error(`example build failed: ${failed.error?.message}`);
  const out = {} as Record<ExampleName, { bytes: Uint8Array; manifest: Record<string, unknown>; wasm: string }>;
  for (const name of EXAMPLE_NAMES) {
    const wasm = join(EXAMPLES_OUT, `${name}.wasm`);
    out[name] = { wasm, bytes: new Uint8Array(readFileSync(wasm)), manifest: JSON.parse(readFileSync(join(EXAMPLES_OUT, `${name}.manifest.json`), 'utf8')) as Record<string, unknown> };
  }
  return out;
}

/** A well-formed capsule with a little of everything the examples look for. */
export const GOOD_CAPSULE = {
  id: 'cap-42',
  kind: 'Insight',
  content: '  Root cause of the   latency bug: the database release pipeline.  ',
  author: 'ada',
  trust: 0.9,
  tags: ['Engineering', 'urgent', 'engineering'],
  parents: ['cap-41', 'cap-40'],
};

/** A capsule that leaks secrets and personal data. */
export const LEAKY_CAPSULE = {
  id: 'cap-666',
  kind: 'note',
  content: 'Data breach! password = hunter2, key AKIAIOSFODNN7EXAMPLE, mail bob@example.com, card 4111 1111 1111 1111, ssn 123-45-6789',
  author: 'mallory',
  trust: 0.2,
  tags: ['security'],
  parents: [],
};
