import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildOverlays, type BuildResult } from '../build/build.ts';
import { EXAMPLES_SOURCE_DIR } from '../build/examples.ts';
import type { CliIO, Command } from './command.ts';

const HELP = `Usage: forge-kernel build [files or folders…] [--out dir] [--force] [--json]

Compiles AssemblyScript overlays with the package's asconfig.json and writes <name>.wasm and
<name>.manifest.json (the manifest declared in the source, plus the sha256 of the .wasm and what it was built from).
A folder means every .ts file directly in it. Without files, the example overlays shipped with forge-kernel.
Unchanged sources are skipped. The same sources give the same bytes, sha256 and fuel in any folder.

The manifest is checked strictly: an unknown or misspelled field, a wrong value, a host function the module imports
without its capability declared, or a fuel budget for an export the module lacks fails the build at file:line:column.

Options:
  --out <dir>   output folder (default: build/overlays)
  --force       rebuild even when nothing changed
  --json        print the results as JSON
  -h, --help    show this help

Exit status: 0 when every overlay built (or was up to date), 1 when one failed, 2 on a usage mistake.`;

/** Expands folders to the overlay sources directly inside them (files that declare a manifest). */
function expand(paths: readonly string[]): string[] {
  const files: string[] = [];
  for (const path of paths) {
    let isDir = false;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      // a missing path is reported by the build, per file
    }
    if (!isDir) {
      files.push(path);
      continue;
    }
    for (const name of readdirSync(path).sort()) {
      if (name.endsWith('.ts') && !name.endsWith('.test.ts') && !name.endsWith('.d.ts')) files.push(join(path, name));
    }
  }
  return files;
}

function line(result: BuildResult, index: number, total: number): string {
  const where = `[${index + 1}/${total}]`;
  if (result.status === 'failed') return `${where} ${result.file}: FAILED ${result.error?.code}\n${result.error?.message}\n`;
  const size = `${((result.bytes ?? 0) / 1024).toFixed(1)} KiB`;
  return `${where} ${result.name} ${result.status === 'built' ? `built in ${(result.durationMs / 1000).toFixed(1)} s` : 'up to date'} (${size}) → ${result.wasm}\n`;
}

async function run(args: readonly string[], io: CliIO): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], allowPositionals: true, options: { out: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' } } });
  } catch (error) {
    io.stderr(`forge-kernel build: ${(error as Error).message}\n`);
    return 2;
  }
  const files = expand(parsed.positionals.length > 0 ? parsed.positionals : [EXAMPLES_SOURCE_DIR]);
  if (files.length === 0) {
    io.stderr('forge-kernel build: no overlay sources found.\n');
    return 2;
  }
  const json = parsed.values.json === true;
  const results = await buildOverlays(files, {
    ...(parsed.values.out === undefined ? {} : { outDir: parsed.values.out }),
    force: parsed.values.force === true,
    onResult: (result, index, total) => {
      if (!json) (result.status === 'failed' ? io.stderr : io.stdout)(line(result, index, total));
    },
  });
  if (json) io.stdout(`${JSON.stringify(results, null, 2)}\n`);
  return results.some((r) => r.status === 'failed') ? 1 : 0;
}

export const buildCommand: Command = { name: 'build', summary: 'compile AssemblyScript overlays to .wasm + manifest', help: HELP, run };
