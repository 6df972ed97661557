import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ForgeError } from '../errors.ts';

/** The project's asconfig.json (its options apply to every overlay build). */
export const ROOT_ASCONFIG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'asconfig.json');

/** `asc` reported errors; the message carries its diagnostics as `file:line:column: message` lines. */
export class CompileError extends ForgeError {
  constructor(entry: string, diagnostics: string) {
    super('COMPILE_FAILED', `AssemblyScript compilation of ${entry} failed:\n${diagnostics}`, { details: { entry } });
  }
}

/** Reformats asc diagnostics as `file:line:column: message` lines. */
export function formatDiagnostics(text: string): string {
  const lines: string[] = [];
  // asc colours its output when it believes a terminal reads it (FORCE_COLOR, CI): parse the plain text.
  for (const block of stripVTControlCharacters(text).split(/\n(?=(?:ERROR|WARNING) )/)) {
    const head = /^(ERROR|WARNING) (\w+): (.*)$/m.exec(block);
    const where = /in (.+?)\((\d+),(\d+)\)/.exec(block);
    if (head === null) continue;
    lines.push(where === null ? `${head[1]}: ${head[3]} [${head[2]}]` : `${where[1]}:${where[2]}:${where[3]}: ${head[1]!.toLowerCase()}: ${head[3]} [${head[2]}]`);
  }
  return lines.length > 0 ? lines.join('\n') : text.trim();
}

/** A compiled overlay: the .wasm bytes and the source files the compiler read (the standard library excluded). */
export interface CompileOutput {
  binary: Uint8Array;
  inputs: string[];
}

/**
 * Compiles one AssemblyScript entry file with the root asconfig.json (\`release\` target), in memory: nothing is
 * written to disk.
 */
export async function compileAssemblyScript(entry: string): Promise<CompileOutput> {
  const asc = (await import('assemblyscript/asc')).default;
  const file = resolve(entry);
  let binary: Uint8Array | undefined;
  let diagnostics = '';
  const inputs = new Set<string>();
  const result = await asc.main([file, '--config', ROOT_ASCONFIG, '--target', 'release', '--noColors', '--outFile', join(dirname(file), '__forge_out.wasm')], {
    stdout: { write: () => true },
    stderr: {
      write: (chunk: string | Uint8Array) => {
        diagnostics += typeof chunk === 'string' ? chunk : new TextDecoder().decode(chunk);
        return true;
      },
    },
    readFile: (filename: string, baseDir: string) => {
      const path = resolve(baseDir, filename);
      try {
        const text = readFileSync(path, 'utf8');
        inputs.add(path);
        return text;
      } catch {
        return null;
      }
    },
    writeFile: (filename: string, contents: Uint8Array | string) => {
      if (filename.endsWith('.wasm') && typeof contents !== 'string') binary = contents;
    },
  });
  if (result.error !== null || binary === undefined) throw new CompileError(entry, formatDiagnostics(diagnostics) || String(result.error?.message ?? 'no output'));
  return { binary, inputs: [...inputs] };
}
