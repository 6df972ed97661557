import type { NativeOverlay } from '../wasm/trusted-engine.ts';

/** Authors of the demo capsules, with the trust the security validator checks. */
const AUTHORS = [
  { name: 'ada', trust: 0.92 },
  { name: 'grace', trust: 0.88 },
  { name: 'linus', trust: 0.75 },
  { name: 'mallory', trust: 0.15 },
];

/** Contents by the path they take: approved and stored, escalated to a human (personal data), or rejected (secrets). */
const CONTENTS = {
  clean: [
    'Root cause of the latency bug: the database release pipeline held a lock during deploys.',
    'Quarterly revenue forecast: the finance team expects margin growth from the new pricing.',
    'The engineering roadmap moves the release train to weekly deploys with a canary stage.',
    'Customer research: onboarding friction drops when the first capsule is created for the user.',
  ],
  personal: ['Release notes for the billing pipeline; mail ops@example.com for questions about the rollout'],
  secret: ['Deploy fix: set password = hunter2 and key AKIAIOSFODNN7EXAMPLE in the pipeline config'],
  /** Blank: the normalizer refuses it, so the run fails at ingestion (naming the overlay). */
  malformed: ['   '],
} as const;

export type CapsulePath = keyof typeof CONTENTS;

/**
 * The `n`-th demo capsule: mostly clean; every `personalEvery`-th one (the 4th first, so even a short demo pauses
 * for a decision) escalated to a human, every 17th leaking
 * secrets (rejected at consensus, quarantined), every 50th blank (the run fails at ingestion).
 */
export function demoCapsule(n: number, personalEvery = 25): { capsule: Record<string, unknown>; path: CapsulePath } {
  const path: CapsulePath = n % personalEvery === 3 ? 'personal' : n % 50 === 37 ? 'malformed' : n % 17 === 16 ? 'secret' : 'clean';
  const texts = CONTENTS[path];
  const author = path === 'secret' ? AUTHORS[3]! : AUTHORS[n % 3]!;
  return {
    path,
    capsule: {
      id: `cap-${String(n).padStart(5, '0')}`,
      kind: n % 2 === 0 ? 'insight' : 'note',
      content: texts[n % texts.length]!,
      author: author.name,
      trust: author.trust,
      tags: n % 5 === 0 ? ['urgent', 'ops'] : ['ops'],
      parents: n > 0 ? [`cap-${String(n - 1).padStart(5, '0')}`] : [],
    },
  };
}

/**
 * A deliberately faulty overlay for the demo: it enriches insights (subscribed to `insight.detected`) and fails
 * while `failing()` says so, so its circuit breaker trips, then recovers after its reset wait once it is healthy.
 */
export function faultyEnricher(failing: () => boolean): NativeOverlay {
  return {
    manifest: { name: 'faulty-enricher', version: '1.0.0', description: 'Fails on purpose to show the circuit breaker.', subscribes: ['insight.detected'] },
    exports: {
      run: () => (failing() ? { ok: false, error: { message: 'upstream enrichment service unavailable (simulated)' } } : { ok: true, data: { enriched: true } }),
    },
  };
}
