import { createHash } from 'node:crypto';
import type { OverlayOutcome, PhaseSettings, RunData } from '../../actors/pipeline.ts';
import type { RecordedOverlay } from '../journal/journal.ts';
import type { Phase } from '../manifest.ts';

/** Phase results kept at most (the least recently used go first). */
export const PHASE_CACHE_ENTRIES = 1_000;

/** A phase's reusable result: its output and the overlays that made it. */
export interface CachedPhase {
  output: Record<string, unknown>;
  overlays: readonly OverlayOutcome[];
}

/**
 * The idempotent phase cache: results of phases configured `cache: true`, keyed by the phase, its settings that
 * change what runs, each overlay's name, version and sha256, and a digest of the run's data before the phase (the
 * call's context — run id, correlation id — is not in the key: a cached phase's overlays must not answer from it).
 */
export class PhaseCache {
  readonly #entries = new Map<string, CachedPhase>();
  readonly #describe: (name: string) => RecordedOverlay | undefined;
  readonly #admits: (name: string, trust: number) => boolean;
  readonly #limit: number;

  constructor(describe: (name: string) => RecordedOverlay | undefined, admits: (name: string, trust: number) => boolean, limit = PHASE_CACHE_ENTRIES) {
    this.#describe = describe;
    this.#admits = admits;
    this.#limit = limit;
  }

  /**
   * The key of a phase run on `data` with `trust`, or undefined when the phase cannot be cached: an overlay it names
   * is not loaded, or is native (trusted TypeScript: its sha256 covers its manifest, not its code, and it may act on
   * the world).
   */
  key(phase: Phase, settings: PhaseSettings, data: RunData, trust: number): string | undefined {
    const overlays: [string, string, string][] = [];
    for (const name of settings.overlays) {
      const overlay = this.#describe(name);
      if (overlay === undefined || overlay.mode === 'trusted') return undefined;
      overlays.push([overlay.name, overlay.version, overlay.sha256]);
    }
    return createHash('sha256').update(JSON.stringify([phase, settings.parallel, settings.required, trust, overlays, data])).digest('hex');
  }

  /** Whether every overlay of the phase would admit the run's calls now (a hit must pass what the calls would). */
  admits(settings: PhaseSettings, trust: number): boolean {
    return settings.overlays.every((name) => this.#admits(name, trust));
  }

  get(key: string): CachedPhase | undefined {
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, hit);
    }
    return hit;
  }

  set(key: string, value: CachedPhase): void {
    this.#entries.delete(key);
    this.#entries.set(key, value);
    if (this.#entries.size > this.#limit) this.#entries.delete(this.#entries.keys().next().value!);
  }

  get size(): number {
    return this.#entries.size;
  }
}
