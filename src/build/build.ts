import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { ForgeError, isForgeError } from '../errors.ts';
import { closest, InvalidManifestError, manifestErrorAt, parseManifestText, type ManifestText, type OverlayManifest } from '../manifest.ts';
import { KERNEL_HOST_FUNCTIONS } from '../wasm/host-functions.ts';
import { scanModule } from '../wasm/binary.ts';
import { checkImports, sha256Hex } from '../wasm/loader.ts';
import { compileAssemblyScript, inputPath } from './asc.ts';

/** Where the manifest sits in an overlay's source: a block comment opened with this marker, holding JSON. */
const MANIFEST_MARKER = 'forge:manifest';
/** A stand-in hash so the manifest can be validated before the .wasm (and its real hash) exists. */
const PENDING_HASH = '0'.repeat(64);

/** The source declares no manifest block, or does not close it. */
export class ManifestSourceError extends ForgeError {
  constructor(file: string, message: string) {
    super('INVALID_MANIFEST', `${file}: ${message}`, { details: { file } });
  }
}

/** Where the manifest's JSON is in an overlay source: the span between the marker and the closing `*\/`. */
export function findSourceManifest(file: string, source: string): ManifestText {
  const open = source.indexOf(`/* ${MANIFEST_MARKER}`);
  if (open < 0) {
    throw new ManifestSourceError(file, `no manifest: declare it in a block comment that starts with "/* ${MANIFEST_MARKER}" and holds JSON (see overlays-as/README.md).`);
  }
  const end = source.indexOf('*/', open);
  if (end < 0) throw new ManifestSourceError(`${file}:${source.slice(0, open).split('\n').length}`, 'the manifest comment is not closed with */.');
  return { file, text: source, start: open + 3 + MANIFEST_MARKER.length, end };
}

/**
 * The source's manifest, ready to validate before the .wasm exists: the fields the build computes are refused (an
 * author who wrote them would be overruled silently) and the hash is a stand-in.
 */
function declaredInSource(raw: Record<string, unknown>): Record<string, unknown> {
  for (const field of ['sha256', 'build']) {
    if (field in raw) throw new InvalidManifestError(field, 'is computed by forge-kernel build: remove it from the source.');
  }
  return { ...raw, sha256: PENDING_HASH };
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
  /** Called once per overlay as it starts (progress lines for slow builds). */
  onStart?: (file: string, index: number, total: number) => void;
  /** Called once per overlay as it finishes (progress lines). */
  onResult?: (result: BuildResult, index: number, total: number) => void;
}

/**
 * What a built manifest file holds beyond the manifest itself: what it was built from, for rebuild skipping. No
 * absolute path: inputs are named relative to the source's folder, the kernel's files as `~lib/forge-kernel/…`.
 */
export interface BuiltManifest extends OverlayManifest {
  /** `entry`: the source file built (its name, in the folder the inputs are relative to). */
  build: { compiler: string; entry: string; inputs: Record<string, string> };
}

function compilerVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL(import.meta.resolve('assemblyscript/package.json')), 'utf8')) as { version: string };
  return `assemblyscript@${pkg.version}`;
}

function readBuiltManifest(file: string): BuiltManifest | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as BuiltManifest;
  } catch {
    return undefined;
  }
}

/**
 * True when `manifestFile` records a build of the source file `entry` that is still current: the same entry, the
 * .wasm beside it with the recorded hash, and every input (sources, SDK files, asconfig) and the compiler unchanged.
 */
export function builtUpToDate(manifestFile: string, entry: string, declared?: OverlayManifest): boolean {
  const previous = readBuiltManifest(manifestFile);
  const entryDir = dirname(entry);
  const wasmFile = join(dirname(manifestFile), basename(manifestFile, '.manifest.json') + '.wasm');
  if (previous?.build === undefined || previous.build.compiler !== compilerVersion() || previous.build.entry !== basename(entry) || !existsSync(wasmFile)) return false;
  if (declared !== undefined && JSON.stringify({ ...previous, sha256: PENDING_HASH, build: undefined }) !== JSON.stringify({ ...declared, build: undefined })) return false;
  if (sha256Hex(readFileSync(wasmFile)) !== previous.sha256) return false;
  return Object.entries(previous.build.inputs).every(([name, hash]) => {
    const path = inputPath(name, entryDir);
    return existsSync(path) && createHash('sha256').update(readFileSync(path)).digest('hex') === hash;
  });
}

/**
 * What the manifest claims that the compiled module contradicts, as manifest errors at the field: a host function
 * imported without its capability declared, a fuel budget for an export the module does not have.
 */
function checkAgainstModule(binary: Uint8Array, manifest: OverlayManifest, where: ManifestText): void {
  const shape = scanModule(binary);
  try {
    // A service may offer host functions of its own (createKernel({ hostFunctions })): the kernel that loads the
    // overlay checks those; the build checks the ones every kernel has.
    checkImports(shape, { manifest, grant: manifest.capabilities, hostFunctions: KERNEL_HOST_FUNCTIONS, allowUnknownHostFunctions: true });
  } catch (error) {
    const { capability, declared } = isForgeError(error) ? error.details : {};
    if (typeof capability === 'string' && declared === false) {
      throw manifestErrorAt(where, 'capabilities', `must include "${capability}": the module imports ${String((error as ForgeError).details.import)}, which needs it.`);
    }
    throw error;
  }
  const exports = shape.exports.filter((e) => e.kind === 'function').map((e) => e.name);
  for (const exportName of Object.keys(manifest.fuel)) {
    if (exports.includes(exportName)) continue;
    const suggestion = closest(exportName, exports.filter((e) => !e.startsWith('__')));
    throw manifestErrorAt(where, `fuel.${exportName}`, `names no export of the module${suggestion === undefined ? '' : `: did you mean "${suggestion}"?`}`);
  }
}

/** How a path is shown to the person who ran the build: relative to the working folder. */
function shownPath(path: string): string {
  return relative(process.cwd(), path) || basename(path);
}

/**
 * Builds AssemblyScript overlays: for each source, validates the manifest declared in it, compiles it with the
 * package's asconfig.json, checks the module against the manifest, and writes `<name>.wasm` and
 * `<name>.manifest.json` (the manifest with the sha256 of the .wasm and the inputs it was built from). A source
 * whose inputs are unchanged since its last build is skipped.
 */
export async function buildOverlays(files: readonly string[], options: BuildOptions = {}): Promise<BuildResult[]> {
  const outDir = resolve(options.outDir ?? join('build', 'overlays'));
  const results: BuildResult[] = [];
  /** Which source each overlay name came from in this build: two sources of one name would overwrite each other. */
  const sources = new Map<string, string>();
  for (const [index, file] of files.entries()) {
    const started = performance.now();
    const entry = resolve(file);
    const shown = shownPath(entry);
    options.onStart?.(shown, index, files.length);
    let result: BuildResult;
    try {
      if (!existsSync(entry)) throw new ForgeError('NOT_FOUND', `${shown}: no such file.`);
      const where = findSourceManifest(shown, readFileSync(entry, 'utf8'));
      const declared = parseManifestText(where, declaredInSource);
      const earlier = sources.get(declared.name);
      if (earlier !== undefined && earlier !== entry) throw manifestErrorAt(where, 'name', `is also the name of ${shownPath(earlier)} in this build: each overlay needs a name of its own.`);
      sources.set(declared.name, entry);
      const wasmFile = join(outDir, `${declared.name}.wasm`);
      const manifestFile = join(outDir, `${declared.name}.manifest.json`);
      if (options.force !== true && builtUpToDate(manifestFile, entry, declared)) {
        const sha256 = readBuiltManifest(manifestFile)!.sha256;
        result = { file: shown, name: declared.name, status: 'skipped', wasm: wasmFile, manifest: manifestFile, sha256, bytes: readFileSync(wasmFile).length, durationMs: performance.now() - started };
      } else {
        const { binary, inputs } = await compileAssemblyScript(entry, dirname(shown));
        checkAgainstModule(binary, declared, where);
        const built: BuiltManifest = {
          ...declared,
          sha256: sha256Hex(binary),
          build: { compiler: compilerVersion(), entry: basename(entry), inputs: Object.fromEntries([...inputs].sort(([a], [b]) => (a < b ? -1 : 1))) },
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
