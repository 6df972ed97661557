import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildExampleOverlays, EXAMPLE_NAMES, type ExampleName } from '../../src/build/examples.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
export const EXAMPLES_OUT = join(ROOT, '.forge', 'cache', 'examples');
export { EXAMPLE_NAMES, type ExampleName };

/** Builds the example overlays (skipped when unchanged) and returns each one's bytes and manifest. */
export async function buildExamples(): Promise<Record<ExampleName, { bytes: Uint8Array; manifest: Record<string, unknown>; wasm: string }>> {
  await buildExampleOverlays({ outDir: EXAMPLES_OUT });
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

/** A clean capsule from a trusted author that mentions an e-mail address: the governance voter escalates it to a human. */
export const PERSONAL_CAPSULE = {
  ...GOOD_CAPSULE,
  id: 'cap-43',
  content: 'Release notes for the database pipeline; mail ada@example.com for questions',
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
