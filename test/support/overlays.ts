import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { compileAssemblyScript, ROOT_ASCONFIG } from '../../src/build/asc.ts';
import { sha256Hex } from '../../src/wasm/loader.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const CACHE = join(ROOT, '.forge', 'cache', 'test-overlays');
const SDK = join(ROOT, 'overlays-as', 'sdk');

/**
 * Compiles an AssemblyScript file under overlays-as/ (cached by its source, the SDK and the asconfig) and returns the bytes
 * with a valid manifest for them.
 */
export async function buildFixture(file: string, manifest: Record<string, unknown> = {}): Promise<{ bytes: Uint8Array; manifest: Record<string, unknown> }> {
  const entry = join(ROOT, 'overlays-as', file);
  const hash = createHash('sha256').update(readFileSync(entry)).update(readFileSync(ROOT_ASCONFIG));
  for (const sdkFile of readdirSync(SDK).sort()) hash.update(readFileSync(join(SDK, sdkFile)));
  const key = hash.digest('hex').slice(0, 24);
  const cached = join(CACHE, `${key}.wasm`);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(cached));
  } catch {
    bytes = (await compileAssemblyScript(entry)).binary;
    mkdirSync(CACHE, { recursive: true });
    writeFileSync(cached, bytes);
  }
  return { bytes, manifest: { name: 'fixture', version: '1.0.0', ...manifest, sha256: sha256Hex(bytes) } };
}
