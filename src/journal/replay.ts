import { ForgeError, isForgeError } from '../errors.ts';
import type { OverlayEngine } from '../wasm/engine.ts';
import type { HostCallRecord, HostTape } from '../wasm/host-functions.ts';
import { JournalEntryError, JournalInputError, type JournalEntry } from './journal.ts';

/** The overlay asked the host for something other than what the recorded call asked (a replay cannot answer it). */
export class ReplayDivergenceError extends ForgeError {
  constructor(message: string) {
    super('REPLAY_DIVERGED', message);
  }
}

/** One recorded call whose replay differs: where (entry, phase, overlay, JSON path) and what each side said. */
export interface CallDifference {
  seq: number;
  phase: string;
  overlay: string;
  attempt: number;
  /** What differs: the output (at `path`), the fuel, the error, or the host calls the overlay made. */
  what: 'output' | 'fuel' | 'error' | 'host';
  /** JSONPath of the first differing value of the output (`$` for the whole). */
  path?: string;
  recorded: unknown;
  replayed: unknown;
}

export interface ReplayReport {
  id: string;
  /** Recorded calls replayed. */
  calls: number;
  /**
   * Recorded calls not replayed: refused before they ran (overlay not loaded or inactive, breaker open, trust too
   * low), cut short by their phase (cancelled, timed out: where they stopped is not recorded), or of a native
   * (trusted TypeScript) overlay, whose code the sandbox does not contain and may act on the world.
   */
  skipped: { seq: number; overlay: string; reason: string }[];
  /** True when every replayed call gave the recorded output, error and fuel. */
  identical: boolean;
  /** The first difference, if any (entry, phase, overlay, JSON path). */
  firstDivergence: CallDifference | null;
  /** Every call that differs (a shadow run of a new version lists each). */
  differences: CallDifference[];
  /** The overlays replayed: the version the run recorded and the one replayed (a candidate given with `overlays`). */
  overlays: { name: string; recorded: { version: string; sha256: string } | null; replayed: { version: string; sha256: string }; candidate: boolean }[];
  /** Fuel of all calls, recorded and replayed. */
  fuel: { recorded: number; replayed: number };
  durationMs: number;
}

/** Finds the engine a recorded call replays on: the candidate for its name, or the overlay as the run had it. */
export type ReplayEngines = (name: string, recorded: { version: string; sha256: string } | null) => { engine: OverlayEngine; candidate: boolean } | undefined;

/**
 * Re-executes every recorded overlay call of a run with its recorded input, the host calls answered from the
 * recording (no host function runs, nothing is published), and compares output, error and fuel with the recording.
 */
export async function replayRun(id: string, entries: readonly JournalEntry[], engines: ReplayEngines): Promise<ReplayReport> {
  const started = performance.now();
  const recordedCalls = callsOf(id, entries);
  const skipped: ReplayReport['skipped'] = [];
  const overlays = new Map<string, ReplayReport['overlays'][number]>();
  const differences: CallDifference[] = [];
  const fuel = { recorded: 0, replayed: 0 };
  let calls = 0;
  for (const { entry, call, recorded } of recordedCalls) {
    if (call.error !== undefined && NOT_REPLAYED.has(call.error.code)) {
      skipped.push({ seq: entry.seq, overlay: call.overlay, reason: call.error.code });
      continue;
    }
    const found = engines(call.overlay, recorded);
    if (found === undefined) throw new ForgeError('OVERLAY_NOT_FOUND', `Replay of ${id} needs overlay "${call.overlay}"${recorded === null ? '' : ` ${recorded.version} (sha256 ${recorded.sha256})`}: load it, or give its module.`, { details: { overlay: call.overlay } });
    const { engine, candidate } = found;
    if (engine.mode === 'trusted') {
      skipped.push({ seq: entry.seq, overlay: call.overlay, reason: 'native overlay (not sandboxed: not re-run)' });
      continue;
    }
    if (!overlays.has(call.overlay)) overlays.set(call.overlay, { name: call.overlay, recorded: recorded === null ? null : { version: recorded.version, sha256: recorded.sha256 }, replayed: { version: engine.manifest.version, sha256: engine.manifest.sha256 }, candidate });
    calls++;
    fuel.recorded += call.fuelUsed;
    const differ = (what: CallDifference['what'], recordedValue: unknown, replayedValue: unknown, path?: string): void => {
      differences.push({ seq: entry.seq, phase: call.phase, overlay: call.overlay, attempt: call.attempt, what, ...(path === undefined ? {} : { path }), recorded: recordedValue, replayed: replayedValue });
    };
    const tape = playback(call);
    try {
      const result = await engine.call('run', call.input, { tape: tape.tape, publish: false, caller: { runId: id } });
      fuel.replayed += result.fuelUsed;
      if (call.error !== undefined) differ('error', call.error, null);
      else {
        const path = firstDifference(call.output, result.output);
        if (path !== undefined) differ('output', valueAt(call.output, path), valueAt(result.output, path), path);
      }
      if (result.fuelUsed !== call.fuelUsed) differ('fuel', call.fuelUsed, result.fuelUsed);
      if (tape.unused() > 0 && call.error === undefined) differ('host', call.host, `${tape.unused()} recorded host call(s) not asked for`);
    } catch (error) {
      const code = isForgeError(error) ? error.code : 'UNEXPECTED';
      fuel.replayed += (error as { fuelUsed?: number }).fuelUsed ?? 0;
      if (code === 'REPLAY_DIVERGED') differ('host', call.host ?? [], (error as Error).message);
      else if (call.error?.code !== code) differ('error', call.error ?? null, { code, message: (error as Error).message });
      else if (((error as { fuelUsed?: number }).fuelUsed ?? 0) !== call.fuelUsed) differ('fuel', call.fuelUsed, (error as { fuelUsed?: number }).fuelUsed ?? 0);
    }
  }
  return { id, calls, skipped, identical: differences.length === 0, firstDivergence: differences[0] ?? null, differences, overlays: [...overlays.values()], fuel, durationMs: performance.now() - started };
}

/** A recorded call as a replay needs it, from a run's `run.call` or a chain's `chain.call`. */
interface RecordedCall {
  entry: JournalEntry;
  call: { phase: string; overlay: string; attempt: number; input: unknown; output?: unknown; error?: { code: string; message: string }; fuelUsed: number; host?: HostCallRecord[] };
  recorded: { version: string; sha256: string } | null;
}

/**
 * The calls a journal records: a run's (the overlays as its start recorded them), or a chain's (each call names its
 * overlay's version; its "phase" is the event it handled). Anything else cannot be replayed.
 */
function callsOf(id: string, entries: readonly JournalEntry[]): RecordedCall[] {
  const first = entries[0];
  if (first?.kind === 'run.started') {
    if (!Array.isArray(first.body.overlays) || typeof first.body.input !== 'object' || first.body.input === null) throw new JournalEntryError('JOURNAL_CORRUPT', id, first.seq, 'run.started holds no input or no overlays.');
    const recordedOverlays = new Map(first.body.overlays.map((o) => [o.name, o]));
    return entries.flatMap((entry) => {
      if (entry.kind !== 'run.call') return [];
      const call = entry.body;
      if (typeof call !== 'object' || call === null || typeof call.overlay !== 'string' || typeof call.phase !== 'string' || typeof call.fuelUsed !== 'number') throw new JournalEntryError('JOURNAL_CORRUPT', id, entry.seq, 'run.call does not describe a call.');
      const recorded = recordedOverlays.get(call.overlay);
      return [{ entry, call, recorded: recorded === undefined ? null : { version: recorded.version, sha256: recorded.sha256 } }];
    });
  }
  if (first?.kind === 'chain.started') {
    return entries.flatMap((entry) => {
      if (entry.kind !== 'chain.call') return [];
      const call = entry.body;
      if (typeof call !== 'object' || call === null || typeof call.overlay !== 'string' || typeof call.event !== 'string' || typeof call.fuelUsed !== 'number') throw new JournalEntryError('JOURNAL_CORRUPT', id, entry.seq, 'chain.call does not describe a call.');
      return [{ entry, call: { ...call, phase: `event ${call.event}` }, recorded: typeof call.version === 'string' && typeof call.sha256 === 'string' ? { version: call.version, sha256: call.sha256 } : null }];
    });
  }
  throw new JournalInputError(`${id} has no recorded start: only a run's or a chain's journal can be replayed.`);
}

/**
 * Recorded outcomes of calls that did not run to their end in the sandbox: refused by the registry before they ran,
 * or cut short by their phase (where they stopped is not recorded). They are not replayed.
 */
const NOT_REPLAYED = new Set(['OVERLAY_NOT_FOUND', 'OVERLAY_INACTIVE', 'CIRCUIT_OPEN', 'TRUST_INSUFFICIENT', 'INVALID_INPUT', 'CANCELLED', 'PHASE_TIMEOUT']);

/** A tape answering a call's host calls from its recording, in order. */
function playback(call: { host?: HostCallRecord[] }): { tape: HostTape; unused: () => number } {
  const recorded: readonly HostCallRecord[] = call.host ?? [];
  let next = 0;
  return {
    unused: () => recorded.length - next,
    tape: {
      replay: (fn, args) => {
        const expected = recorded[next];
        if (expected === undefined) throw new ReplayDivergenceError(`the overlay called ${fn} beyond the ${recorded.length} host call(s) it made when recorded.`);
        if (expected.fn !== fn || JSON.stringify(expected.args) !== JSON.stringify(args)) {
          throw new ReplayDivergenceError(`host call ${next + 1} was ${expected.fn}(${JSON.stringify(expected.args).slice(1, -1)}) when recorded, and is ${fn}(${JSON.stringify(args).slice(1, -1)}) now.`);
        }
        next++;
        if (expected.error !== undefined) throw new ForgeError(expected.error.code, expected.error.message);
        return expected.result;
      },
    },
  };
}

/** The JSONPath of the first place two JSON values differ (depth first, keys in order), or undefined when equal. */
export function firstDifference(a: unknown, b: unknown, path = '$'): string | undefined {
  if (Object.is(a, b)) return undefined;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return path;
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (i >= a.length || i >= b.length) return `${path}[${i}]`;
      const inner = firstDifference(a[i], b[i], `${path}[${i}]`);
      if (inner !== undefined) return inner;
    }
    return undefined;
  }
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(left), ...Object.keys(right)])];
  for (const key of keys) {
    const step = /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
    if (!(key in left) || !(key in right)) return step;
    const inner = firstDifference(left[key], right[key], step);
    if (inner !== undefined) return inner;
  }
  return undefined;
}

/** The value at a JSONPath made by firstDifference (undefined where the path leaves the value). */
function valueAt(value: unknown, path: string): unknown {
  let current = value;
  for (const [, name, index, quoted] of path.slice(1).matchAll(/\.([A-Za-z_$][\w$]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/g)) {
    if (typeof current !== 'object' || current === null) return undefined;
    const key = name ?? (index === undefined ? (JSON.parse(quoted!) as string) : Number(index));
    current = (current as Record<string | number, unknown>)[key];
  }
  return current;
}
