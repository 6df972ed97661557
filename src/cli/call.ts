import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseManifestText, type OverlayManifest } from '../manifest.ts';
import { isCapability, type Capability } from '../wasm/abi.ts';
import { loadWasmOverlay } from '../wasm/engine.ts';
import { sha256Hex } from '../wasm/loader.ts';
import { commandLogger, parseCommandArgs, reportFailure, UsageError, type CliIO, type Command } from './command.ts';

const HELP = `Usage: forge-kernel call <file.wasm> <export> [options]

Runs one export of an overlay in the sandbox and prints its output, fuel and duration.

Options:
  --manifest <file>      the overlay's manifest (default: <file>.manifest.json beside the .wasm; without one,
                         a manifest is made from the bytes, with no capabilities)
  --input <json|@file>   the call's JSON input, inline or read from a file (default: {})
  --fuel <n>             fuel budget for this call (default: the manifest's budget for the export)
  --mode strict|relaxed  engine (default: strict)
  --grant <caps>         comma-separated capabilities to grant (default: all the manifest declares)
  --json                 print { ok, output, fuelUsed, durationMs } or { ok: false, error: { code, message } }
  -h, --help             show this help

Exit status: 0 on success, 1 when the call fails, 2 on a usage mistake.`;

function parse(args: readonly string[]): { file: string; exportName: string; values: Record<string, string | boolean | undefined> } {
  const parsed = parseCommandArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        manifest: { type: 'string' },
        input: { type: 'string' },
        fuel: { type: 'string' },
        mode: { type: 'string' },
        grant: { type: 'string' },
        json: { type: 'boolean' },
      },
    });
  const [file, exportName, ...extra] = parsed.positionals;
  if (file === undefined || exportName === undefined) throw new UsageError('call needs a .wasm file and an export name: forge-kernel call <file.wasm> <export>');
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  return { file, exportName, values: parsed.values };
}

async function readManifest(file: string, explicit: string | undefined, bytes: Uint8Array): Promise<Record<string, unknown> | OverlayManifest> {
  const path = explicit ?? file.replace(/\.wasm$/, '') + '.manifest.json';
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (explicit !== undefined) throw new UsageError(`cannot read the manifest ${explicit}: ${(error as Error).message}`);
    const name = basename(file).replace(/\.wasm$/, '').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '') || 'overlay';
    return { name: /^[a-z]/.test(name) && name.length > 1 ? name : `overlay-${name}`, version: '0.0.0', sha256: sha256Hex(bytes) };
  }
  return parseManifestText({ file: path, text });
}

async function readInput(raw: string | undefined): Promise<unknown> {
  if (raw === undefined) return {};
  const text = raw.startsWith('@') ? await readFile(raw.slice(1), 'utf8').catch((error: Error) => {
    throw new UsageError(`cannot read the input file ${raw.slice(1)}: ${error.message}`);
  }) : raw;
  try {
    return JSON.parse(text);
  } catch {
    throw new UsageError(`--input is not JSON: ${text.slice(0, 60)}`);
  }
}

async function run(args: readonly string[], io: CliIO): Promise<number> {
  const json = args.includes('--json');
  try {
    const { file, exportName, values } = parse(args);
    const mode = (values.mode as string | undefined) ?? 'strict';
    if (mode !== 'strict' && mode !== 'relaxed') throw new UsageError(`--mode must be strict or relaxed, got ${JSON.stringify(mode)}`);
    let fuel: number | undefined;
    if (values.fuel !== undefined) {
      fuel = Number(values.fuel);
      if (!Number.isSafeInteger(fuel) || fuel <= 0) throw new UsageError(`--fuel must be a positive whole number, got ${JSON.stringify(values.fuel)}`);
    }
    const bytes = await readFile(file).catch((error: Error) => {
      throw new UsageError(`cannot read ${file}: ${error.message}`);
    });
    const manifest = await readManifest(file, values.manifest as string | undefined, bytes);
    let grant: Capability[] | undefined;
    if (typeof values.grant === 'string') {
      grant = values.grant.split(',').filter(Boolean).map((c) => {
        if (!isCapability(c)) throw new UsageError(`unknown capability ${JSON.stringify(c)} in --grant`);
        return c;
      });
    }
    const input = await readInput(values.input as string | undefined);
    const logger = commandLogger(io, 'info');
    const overlay = await loadWasmOverlay(bytes, {
      manifest,
      grant: grant ?? (Array.isArray(manifest.capabilities) ? (manifest.capabilities as unknown[]).filter(isCapability) : []),
      mode,
      logger,
      poolSize: 1,
    });
    try {
      const result = await overlay.call(exportName, input, fuel === undefined ? {} : { fuel });
      const durationMs = Math.round(result.durationMs * 1000) / 1000;
      if (json) io.stdout(`${JSON.stringify({ ok: true, output: result.output, fuelUsed: result.fuelUsed, durationMs, events: result.events })}\n`);
      else io.stdout(`${JSON.stringify(result.output, null, 2)}\nfuel: ${result.fuelUsed}  duration: ${durationMs} ms  events: ${result.events.length}\n`);
      return 0;
    } finally {
      await overlay.close();
    }
  } catch (error) {
    return reportFailure(io, 'call', json, error);
  }
}

export const callCommand: Command = { name: 'call', summary: 'run one export of an overlay in the sandbox', help: HELP, run };
