import type { PhaseOutcome, PhaseSettings, RunConfig, RunData } from '../../actors/pipeline.ts';
import { deepFreeze } from '../bus/event.ts';
import { ForgeError } from '../errors.ts';
import { PHASES, type Phase } from '../manifest.ts';

/** Phase settings when neither the kernel nor the run says otherwise (overlays come from the manifests). */
export const DEFAULT_PHASE_SETTINGS: Readonly<Record<Phase, Readonly<Omit<PhaseSettings, 'overlays'>>>> = deepFreeze({
  ingestion: { enabled: true, required: true, parallel: false, timeoutMs: 3_000, retries: 0, backoffMs: 100 },
  analysis: { enabled: true, required: true, parallel: true, timeoutMs: 10_000, retries: 0, backoffMs: 100 },
  validation: { enabled: true, required: true, parallel: false, timeoutMs: 5_000, retries: 0, backoffMs: 100 },
  consensus: { enabled: true, required: false, parallel: false, timeoutMs: 5_000, retries: 0, backoffMs: 100 },
  execution: { enabled: true, required: true, parallel: false, timeoutMs: 10_000, retries: 1, backoffMs: 100 },
  propagation: { enabled: true, required: true, parallel: true, timeoutMs: 5_000, retries: 0, backoffMs: 100 },
  settlement: { enabled: true, required: true, parallel: false, timeoutMs: 3_000, retries: 0, backoffMs: 100 },
});

/** The trust a run's overlay calls carry unless the kernel or the run sets another (0–100). */
export const DEFAULT_RUN_TRUST = 100;

/** What a phase's custom handler and conditions see of a run. */
export interface PhaseContext {
  runId: string;
  phase: Phase;
  correlationId: string;
  /** Aborted when the run is cancelled or the phase times out. */
  signal: AbortSignal;
}

/** A phase's code that is not an overlay: it cannot be persisted, so it is given to the kernel, not to a run. */
export interface PhaseFunctions {
  /** Runs the phase only when this returns true (a conditional phase). */
  when?: (data: RunData) => boolean;
  /** Runs after the phase's overlays; returns a JSON object merged into the phase's output (or nothing). */
  handler?: (data: RunData, context: PhaseContext) => unknown;
}

/** Observers of runs; a hook that throws or rejects is logged and changes nothing. They are not awaited. */
export interface PipelineHooks {
  prePhase?: (phase: Phase, run: { id: string; data: RunData }) => unknown;
  postPhase?: (phase: Phase, outcome: PhaseOutcome, run: { id: string; data: RunData }) => unknown;
  completion?: (result: RunResult) => unknown;
}

/** Settings of one phase a kernel or a run may override. */
export type PhaseOverrides = Partial<Omit<PhaseSettings, 'overlays'>> & { overlays?: readonly string[] };

/** Per-run options of `kernel.pipelines.start`: plain data, persisted with the run. */
export interface RunOptions {
  /** Phases to skip in this run. */
  skip?: readonly Phase[];
  phases?: Partial<Record<Phase, PhaseOverrides>>;
  correlationId?: string;
  trust?: number;
  /** Deadline for a human decision at consensus (ms); null or absent for none. */
  decisionTimeoutMs?: number | null;
}

/** What a finished run resolves `run.done` with. */
export interface RunResult {
  id: string;
  /** `interrupted`: the kernel stopped first; a checkpointed run continues on the next `restore()`. */
  status: 'completed' | 'failed' | 'cancelled' | 'interrupted';
  correlationId: string;
  phases: PhaseOutcome[];
  data: RunData;
  warnings: string[];
  error: { code: string; message: string; phase?: Phase } | null;
  decision: { approve: boolean; by: string; reason?: string; at: number } | null;
  /** Fuel burned per overlay over the run (instructions). */
  fuel: Record<string, number>;
  /**
   * The events the run's overlays published, in phase order: who published which type, in which attempt (a retried
   * call's earlier attempts included: their events were delivered too). The payloads are on the bus, not here.
   */
  events: { phase: Phase; overlay: string; type: string; attempt: number }[];
  startedAt: number;
  durationMs: number;
  /** In a cluster: the kernel process that drove the run to its end. */
  drivenBy?: string;
}

/** A pipeline configuration or run option is malformed (the caller's mistake). */
export class PipelineConfigError extends ForgeError {
  constructor(field: string, problem: string) {
    super('INVALID_PIPELINE_CONFIG', `Pipeline option ${field} ${problem}`, { details: { field } });
  }
}

/** The input of a run is not a JSON object. */
export class PipelineInputError extends ForgeError {
  constructor(problem: string) {
    super('INVALID_PIPELINE_INPUT', `A pipeline run's input must be a JSON object (the capsule and whatever the overlays read): ${problem}`);
  }
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isPhase = (value: unknown): value is Phase => typeof value === 'string' && (PHASES as readonly string[]).includes(value);

const SETTING_KEYS = new Set(['enabled', 'required', 'parallel', 'timeoutMs', 'retries', 'backoffMs', 'overlays', 'cache']);

/** Validates one phase's overrides (from the kernel's options or a run's), naming the first bad field. */
export function checkPhaseOverrides(raw: unknown, field: string, allowFunctions: boolean): PhaseOverrides & PhaseFunctions {
  if (!isRecord(raw)) throw new PipelineConfigError(field, 'must be an object of phase settings.');
  for (const [key, value] of Object.entries(raw)) {
    const at = `${field}.${key}`;
    if (key === 'when' || key === 'handler') {
      if (!allowFunctions) throw new PipelineConfigError(at, 'is code, which cannot be persisted with a run: give it to createKernel({ pipelines: { phases } }).');
      if (typeof value !== 'function') throw new PipelineConfigError(at, 'must be a function.');
      continue;
    }
    if (!SETTING_KEYS.has(key)) throw new PipelineConfigError(at, `is not a phase setting (one of ${[...SETTING_KEYS].join(', ')}).`);
    if (key === 'enabled' || key === 'required' || key === 'parallel' || key === 'cache') {
      if (typeof value !== 'boolean') throw new PipelineConfigError(at, 'must be true or false.');
    } else if (key === 'overlays') {
      if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v === '')) throw new PipelineConfigError(at, 'must be an array of overlay names.');
    } else if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || (key === 'timeoutMs' && value === 0)) {
      throw new PipelineConfigError(at, key === 'timeoutMs' ? 'must be a positive integer (ms).' : 'must be a non-negative integer.');
    }
  }
  return raw;
}

/** Validates a per-phase record (`phases: { analysis: {…} }`), refusing unknown phases. */
export function checkPhaseRecord(raw: unknown, field: string, allowFunctions: boolean): Partial<Record<Phase, PhaseOverrides & PhaseFunctions>> {
  if (raw === undefined) return {};
  if (!isRecord(raw)) throw new PipelineConfigError(field, 'must be an object keyed by phase.');
  const out: Partial<Record<Phase, PhaseOverrides & PhaseFunctions>> = {};
  for (const [phase, settings] of Object.entries(raw)) {
    if (!isPhase(phase)) throw new PipelineConfigError(`${field}.${phase}`, `is not a phase (one of ${PHASES.join(', ')}).`);
    out[phase] = checkPhaseOverrides(settings, `${field}.${phase}`, allowFunctions);
  }
  return out;
}

function checkTrust(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 100) throw new PipelineConfigError(field, 'must be a number from 0 to 100.');
  return value;
}

function checkDecisionTimeout(value: unknown, field: string): number | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw new PipelineConfigError(field, 'must be a positive integer (ms), or null for none.');
  return value;
}

/** Validates `kernel.pipelines.start`'s options (plain data only). */
export function checkRunOptions(raw: unknown): RunOptions {
  if (raw === undefined) return {};
  if (!isRecord(raw)) throw new PipelineConfigError('options', 'must be an object.');
  const known = new Set(['skip', 'phases', 'correlationId', 'trust', 'decisionTimeoutMs']);
  for (const key of Object.keys(raw)) if (!known.has(key)) throw new PipelineConfigError(`options.${key}`, `is not a run option (one of ${[...known].join(', ')}).`);
  if (raw.skip !== undefined && (!Array.isArray(raw.skip) || !raw.skip.every(isPhase))) throw new PipelineConfigError('options.skip', `must be an array of phases (${PHASES.join(', ')}).`);
  if (raw.correlationId !== undefined && (typeof raw.correlationId !== 'string' || raw.correlationId === '')) throw new PipelineConfigError('options.correlationId', 'must be a non-empty string.');
  if (raw.trust !== undefined) checkTrust(raw.trust, 'options.trust');
  checkDecisionTimeout(raw.decisionTimeoutMs, 'options.decisionTimeoutMs');
  checkPhaseRecord(raw.phases, 'options.phases', false);
  return raw;
}

/** A frozen JSON copy of a run's input; refuses what is not a JSON object. */
export function runData(input: unknown): RunData {
  if (!isRecord(input)) throw new PipelineInputError(`got ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}.`);
  let json: string;
  try {
    json = JSON.stringify(input);
  } catch (error) {
    throw new PipelineInputError(`it is not JSON-serializable (${(error as Error).message}).`);
  }
  return deepFreeze(JSON.parse(json) as RunData);
}

/**
 * One run's configuration: the defaults, then the kernel's settings, then the run's; each phase's overlays are
 * named now, so overlays loaded later do not join a run in flight. Frozen: no run can change another's.
 */
export function resolveRunConfig(
  kernel: { phases: Partial<Record<Phase, PhaseOverrides & PhaseFunctions>>; trust: number; decisionTimeoutMs: number | null },
  run: RunOptions,
  overlaysOf: (phase: Phase) => string[],
): RunConfig {
  const phases = {} as Record<Phase, PhaseSettings>;
  for (const phase of PHASES) {
    const kernelSettings: PhaseOverrides = { ...kernel.phases[phase] };
    delete (kernelSettings as PhaseFunctions).when;
    delete (kernelSettings as PhaseFunctions).handler;
    const merged = { ...DEFAULT_PHASE_SETTINGS[phase], ...kernelSettings, ...run.phases?.[phase] };
    phases[phase] = { ...merged, overlays: [...(merged.overlays ?? overlaysOf(phase))] };
  }
  return deepFreeze({
    phases,
    skip: [...(run.skip ?? [])],
    trust: run.trust ?? kernel.trust,
    decisionTimeoutMs: run.decisionTimeoutMs === undefined ? kernel.decisionTimeoutMs : run.decisionTimeoutMs,
  });
}

/** Fuel per overlay over a run's phases. */
export function fuelByOverlay(outcomes: readonly PhaseOutcome[]): Record<string, number> {
  const fuel: Record<string, number> = {};
  for (const outcome of outcomes) for (const overlay of outcome.overlays) fuel[overlay.name] = (fuel[overlay.name] ?? 0) + overlay.fuelUsed;
  return fuel;
}

/** The events a run's overlays published, phase by phase. */
export function eventsPublished(outcomes: readonly PhaseOutcome[]): RunResult['events'] {
  const events: RunResult['events'] = [];
  for (const outcome of outcomes) for (const overlay of outcome.overlays) for (const event of overlay.published ?? []) events.push({ phase: outcome.phase, overlay: overlay.name, type: event.type, attempt: event.attempt });
  return events;
}

export { checkTrust, checkDecisionTimeout };
