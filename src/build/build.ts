import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { ForgeError } from '../errors.ts';
import { InvalidManifestError, parseManifest, type OverlayManifest } from '../manifest.ts';
import { sha256Hex } from '../wasm/loader.ts';
import { compileAssemblyScript, ROOT_ASCONFIG } from './asc.ts';

/** Where the manifest sits in an overlay's source: a block comment opened with this marker, holding JSON. */
const MANIFEST_MARKER = 'forge:manifest';
/** A stand-in hash so the manifest can be validated before the .wasm (and its real hash) exists. */
const PENDING_HASH = '0'.repeat(64);

/** The source declares no manifest, or declares one that is not JSON. */
export class ManifestSourceError extends ForgeError {
  constructor(file: string, message: string) {
    super('INVALID_MANIFEST', `${file}: ${message}`, { details: { file } });
  }
}

/** The manifest block of an overlay source: its JSON and the line it starts on (for error messages). */
export function readSourceManifest(file: string, source: string): { raw: Record<string, unknown>; line: number } {
  const start = source.indexOf(`/* ${MANIFEST_MARKER}`);
  if (start < 0) {
    throw new ManifestSourceError(file, `no manifest: declare it in a block comment that starts with "/* ${MANIFEST_MARKER}" and holds JSON (see overlays-as/README.md).`);
  }
  const end = source.indexOf('*/', start);
  if (end < 0) throw new ManifestSourceError(file, 'the manifest comment is not closed with */.');
  const line = source.slice(0, start).split('\n').length;
  const text = source.slice(start + 3 + MANIFEST_MARKER.length, end);
  try {
    const raw = JSON.parse(text) as unknown;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('not an object');
    return { raw: raw as Record<string, unknown>, line };
  } catch (error) {
    throw new ManifestSourceError(`${file}:${line}`, `the manifest is not a JSON object (${(error as Error).message}).`);
  }
}

/** One overlay's build outcome. */
export interface BuildResult {
  file: string;
  name?: string;
  status: 'built' | 'skipped' | 'failed';
  wasm?: string;
  manifest?: string;
  sha256?: string;
  bytes?: number;
  durationMs: number;
  error?: { code: string; message: string };
}

export interface BuildOptions {
  /** Output folder for `<name>.wasm` and `<name>.manifest.json` (default `build/overlays`). */
  outDir?: string;
  /** Rebuild even when nothing changed. */
  force?: boolean;
  /** Called once per overlay as it finishes (progress lines). */
  onResult?: (result: BuildResult, index: number, total: number) => void;
}

/** What a built manifest file holds beyond the manifest itself: what it was built from, for rebuild skipping. */
interface BuiltManifest extends OverlayManifest {
  build: { compiler: string; inputs: Record<string, string> };
}

function fileHash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function compilerVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL(import.meta.resolve('assemblyscript/package.json')), 'utf8')) as { version: string };
  return `assemblyscript@${pkg.version}`;
}

/** True when every input recorded in the previous build is unchanged (sources, SDK files, asconfig, compiler). */
function upToDate(previous: BuiltManifest | undefined, wasmFile: string, compiler: string): boolean {
  if (previous?.build === undefined || previous.build.compiler !== compiler || !existsSync(wasmFile)) return false;
  if (sha256Hex(readFileSync(wasmFile)) !== previous.sha256) return false;
  return Object.entries(previous.build.inputs).every(([path, hash]) => existsSync(path) && fileHash(path) === hash);
}

/**
 * Builds AssemblyScript overlays: for each source, validates the manifest declared in it, compiles it with the
 * root asconfig.json, and writes `<name>.wasm` and `<name>.manifest.json` (the manifest with the sha256 of the
 * .wasm and the inputs it was built from). A source whose inputs are unchanged since its last build is skipped.
 */
export async function buildOverlays(files: readonly string[], options: BuildOptions = {}): Promise<BuildResult[]> {
  const outDir = resolve(options.outDir ?? join('build', 'overlays'));
  const compiler = compilerVersion();
  const results: BuildResult[] = [];
  for (const [index, file] of files.entries()) {
    const started = performance.now();
    const entry = resolve(file);
    const shown = relative(process.cwd(), entry) || basename(entry);
    let result: BuildResult;
    try {
      if (!existsSync(entry)) throw new ForgeError('NOT_FOUND', `${shown}: no such file.`);
      const source = readFileSync(entry, 'utf8');
      const { raw, line } = readSourceManifest(shown, source);
      let declared: OverlayManifest;
      try {
        declared = parseManifest({ ...raw, sha256: PENDING_HASH });
      } catch (error) {
        if (error instanceof InvalidManifestError) throw new ManifestSourceError(`${shown}:${line}`, error.message);
        throw error;
      }
      const wasmFile = join(outDir, `${declared.name}.wasm`);
      const manifestFile = join(outDir, `${declared.name}.manifest.json`);
      let previous: BuiltManifest | undefined;
      try {
        previous = JSON.parse(readFileSync(manifestFile, 'utf8')) as BuiltManifest;
      } catch {
        previous = undefined;
      }
      const unchangedManifest = previous !== undefined && JSON.stringify({ ...previous, sha256: PENDING_HASH, build: undefined }) === JSON.stringify({ ...declared, build: undefined });
      if (options.force !== true && unchangedManifest && upToDate(previous, wasmFile, compiler)) {
        result = { file: shown, name: declared.name, status: 'skipped', wasm: wasmFile, manifest: manifestFile, sha256: previous!.sha256, bytes: readFileSync(wasmFile).length, durationMs: performance.now() - started };
      } else {
        const { binary, inputs } = await compileAssemblyScript(entry);
        const built: BuiltManifest = {
          ...declared,
          sha256: sha256Hex(binary),
          build: { compiler, inputs: Object.fromEntries([...inputs, ROOT_ASCONFIG].sort().map((path) => [path, fileHash(path)])) },
        };
        mkdirSync(outDir, { recursive: true });
        writeFileSync(wasmFile, binary);
        writeFileSync(manifestFile, `${JSON.stringify(built, null, 2)}\n`);
        result = { file: shown, name: declared.name, status: 'built', wasm: wasmFile, manifest: manifestFile, sha256: built.sha256, bytes: binary.length, durationMs: performance.now() - started };
      }
    } catch (error) {
      const code = error instanceof ForgeError ? error.code : 'UNEXPECTED';
      result = { file: shown, status: 'failed', durationMs: performance.now() - started, error: { code, message: (error as Error).message } };
    }
    results.push(result);
    options.onResult?.(result, index, files.length);
  }
  return results;
}
