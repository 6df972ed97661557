import { readFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { ForgeError } from '../errors.ts';
import { sha256Hex } from '../wasm/loader.ts';
import { PACKAGE_ROOT, packagePath } from '../package-root.ts';

/** The package's asconfig.json (its options apply to every overlay build). */
export const ROOT_ASCONFIG = packagePath('asconfig.json');

/**
 * How overlays import the SDK, and the prefix under which the compiler names every file of the kernel package
 * (`~lib/forge-kernel/overlays-as/sdk/index.ts`): a name that is the same wherever the package is installed.
 */
export const SDK_IMPORT = 'forge-kernel/overlays-as/sdk';
const PACKAGE_SOURCE_PREFIX = '~lib/forge-kernel/';
/** Files of the package an overlay may import (asc looks for them under any `node_modules/forge-kernel/`). */
const IMPORTABLE = 'overlays-as/sdk/';
const PACKAGE_IN_NODE_MODULES = `node_modules${sep}forge-kernel${sep}`;

/** `asc` reported errors; the message carries its diagnostics as `file:line:column: message` lines and code frames. */
export class CompileError extends ForgeError {
  constructor(entry: string, diagnostics: string) {
    super('COMPILE_FAILED', `AssemblyScript compilation of ${entry} failed:\n${diagnostics}`, { details: { entry } });
  }
}

/**
 * Reformats asc diagnostics as `file:line:column: severity: message [code]` lines, each followed by asc's code frame
 * (the source line with the span underlined). `where` maps the file name asc reports to the one shown.
 */
export function formatDiagnostics(text: string, where: (file: string) => string = (file) => file): string {
  const out: string[] = [];
  // asc colours its output when it believes a terminal reads it (FORCE_COLOR, CI): parse the plain text.
  for (const block of stripVTControlCharacters(text).split(/\n(?=(?:ERROR|WARNING) )/)) {
    const head = /^(ERROR|WARNING) (\w+): (.*)$/m.exec(block);
    if (head === null) continue;
    const location = /└─ in (.+?)\((\d+),(\d+)\)/.exec(block);
    if (location === null) {
      out.push(`${head[1]!.toLowerCase()}: ${head[3]} [${head[2]}]`);
      continue;
    }
    out.push(`${where(location[1]!)}:${location[2]}:${location[3]}: ${head[1]!.toLowerCase()}: ${head[3]} [${head[2]}]`);
    const frame = block
      .slice(head.index + head[0].length, location.index)
      .split('\n')
      .filter((line) => line.trim() !== '' && line.trim() !== ':');
    out.push(...frame.map((line) => `  ${line.trimEnd()}`));
  }
  return out.length > 0 ? out.join('\n') : text.trim();
}

/** A compiled overlay: the .wasm bytes and the source files the compiler read, by the names it gave them. */
export interface CompileOutput {
  binary: Uint8Array;
  /**
   * The sha256 of every file read (the compiler's standard library excluded), by name: the overlay's own files
   * relative to its entry's folder (`scorer.ts`, `../shared/util.ts`), the kernel's SDK and asconfig as
   * `~lib/forge-kernel/<path in the package>`.
   */
  inputs: Map<string, string>;
}

/** The file a name in {@link CompileOutput.inputs} stands for, given the folder of the entry it was built from. */
export function inputPath(name: string, entryDir: string): string {
  return name.startsWith(PACKAGE_SOURCE_PREFIX) ? packagePath(...name.slice(PACKAGE_SOURCE_PREFIX.length).split('/')) : resolve(entryDir, name);
}

/**
 * The path asc asks for, as read from disk and as named in the inputs: an SDK file under any
 * `node_modules/forge-kernel/` is the running kernel's own (so the build never mixes two installed copies, and works
 * in a checkout that has no `node_modules/forge-kernel`); the package's asconfig and sources keep a name relative to
 * the package; everything else is named relative to the entry's folder.
 */
function locate(path: string, entryDir: string): { file: string; name: string } {
  const at = path.lastIndexOf(PACKAGE_IN_NODE_MODULES);
  const inPackage = at < 0 ? '' : path.slice(at + PACKAGE_IN_NODE_MODULES.length).split(sep).join('/');
  if (inPackage.startsWith(IMPORTABLE)) return { file: packagePath(...inPackage.split('/')), name: PACKAGE_SOURCE_PREFIX + inPackage };
  const fromRoot = relative(PACKAGE_ROOT, path);
  if (!fromRoot.startsWith('..') && !fromRoot.startsWith(sep) && (path === ROOT_ASCONFIG || fromRoot.split(sep).join('/').startsWith(IMPORTABLE))) {
    return { file: path, name: PACKAGE_SOURCE_PREFIX + fromRoot.split(sep).join('/') };
  }
  return { file: path, name: relative(entryDir, path).split(sep).join('/') };
}

/**
 * Compiles one AssemblyScript entry file with the package's asconfig.json (`release` target), in memory: nothing
 * is written to disk. The compiler runs from the entry's folder and sees the kernel's SDK under a fixed name, so no
 * absolute path reaches the module: the same sources give the same bytes (and the same fuel) in any folder.
 * `shownDir` is how the entry's folder is named in diagnostics (default: relative to the working directory).
 */
export async function compileAssemblyScript(entry: string, shownDir?: string): Promise<CompileOutput> {
  const asc = await import('assemblyscript/asc').then(
    (loaded) => loaded.default,
    (error: unknown) => {
      throw new ForgeError('COMPILER_UNAVAILABLE', `The AssemblyScript compiler could not be loaded (${(error as Error).message}): reinstall forge-kernel (npm install forge-kernel) so that assemblyscript and its binaryen are installed with it.`, { cause: error });
    },
  );
  const file = resolve(entry);
  const entryDir = dirname(file);
  const shown = shownDir ?? relative(process.cwd(), entryDir);
  let binary: Uint8Array | undefined;
  let diagnostics = '';
  const inputs = new Map<string, string>();
  const args = [basename(file), '--baseDir', entryDir, '--config', ROOT_ASCONFIG, '--target', 'release', '--noColors', '--outFile', '__forge_out.wasm'];
  const result = await asc.main(args, {
    stdout: { write: () => true },
    stderr: {
      write: (chunk: string | Uint8Array) => {
        diagnostics += typeof chunk === 'string' ? chunk : new TextDecoder().decode(chunk);
        return true;
      },
    },
    readFile: (filename: string, baseDir: string) => {
      const found = locate(resolve(entryDir, baseDir, filename), entryDir);
      try {
        const bytes = readFileSync(found.file);
        inputs.set(found.name, sha256Hex(bytes));
        return bytes.toString('utf8');
      } catch {
        return null;
      }
    },
    writeFile: (filename: string, contents: Uint8Array | string) => {
      if (filename.endsWith('.wasm') && typeof contents !== 'string') binary = contents;
    },
  });
  if (result.error !== null || binary === undefined) {
    const where = (name: string) => (name.startsWith('~lib/') ? name : join(shown, name));
    throw new CompileError(join(shown, basename(file)), formatDiagnostics(diagnostics, where) || String(result.error?.message ?? 'no output'));
  }
  return { binary, inputs };
}
