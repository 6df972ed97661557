import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ForgeError } from '../errors.ts';

/** The project's asconfig.json (its options apply to every overlay build). */
export const ROOT_ASCONFIG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'asconfig.json');

/** `asc` reported errors; the message carries its diagnostics (file:line:column). */
export class CompileError extends ForgeError {
  constructor(entry: string, diagnostics: string) {
    super('COMPILE_FAILED', `AssemblyScript compilation of ${entry} failed:\n${diagnostics}`, { details: { entry } });
  }
}

/**
 * Compiles one AssemblyScript entry file with the root asconfig.json (`release` target) and returns the .wasm
 * bytes, without writing anything to disk.
 */
export async function compileAssemblyScript(entry: string, options: { target?: 'release' | 'debug'; extraArgs?: readonly string[] } = {}): Promise<Uint8Array> {
  const asc = (await import('assemblyscript/asc')).default;
  let binary: Uint8Array | undefined;
  let diagnostics = '';
  const outFile = join(dirname(resolve(entry)), '__forge_out.wasm');
  const result = await asc.main(
    [resolve(entry), '--config', ROOT_ASCONFIG, '--target', options.target ?? 'release', '--outFile', outFile, ...(options.extraArgs ?? [])],
    {
      stdout: { write: () => true },
      stderr: {
        write: (chunk: string | Uint8Array) => {
          diagnostics += typeof chunk === 'string' ? chunk : new TextDecoder().decode(chunk);
          return true;
        },
      },
      writeFile: (filename: string, contents: Uint8Array | string) => {
        if (filename.endsWith('.wasm') && typeof contents !== 'string') binary = contents;
      },
    },
  );
  if (result.error !== null || binary === undefined) throw new CompileError(entry, diagnostics.trim() || String(result.error?.message ?? 'no output'));
  return binary;
}
