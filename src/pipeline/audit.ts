import type { AuditEntry } from '../store/store.ts';

/** What a completed run's audit entry is made of: its data, its decision, its warnings and its fuel per overlay. */
export interface AuditSource {
  data: Record<string, unknown>;
  decision: { approve: boolean; by: string } | null;
  warnings: readonly string[];
  fuel: Record<string, number>;
}

/**
 * A completed run's entry in the settlement audit trail. Its id is the run's (`aud_<runId>`): written twice (a
 * projector resuming after a crash, or two processes projecting one journal), it is still one entry.
 */
export function auditEntry(runId: string, source: AuditSource, at: number): AuditEntry {
  const capsule = source.data.capsule as { id?: unknown } | undefined;
  const consensus = source.data.consensus as { decision?: unknown } | undefined;
  return {
    id: `aud_${runId}`,
    runId,
    capsuleId: typeof capsule?.id === 'string' ? capsule.id : '',
    decision: source.decision === null ? (typeof consensus?.decision === 'string' ? consensus.decision : 'none') : source.decision.approve ? 'approve' : 'reject',
    detail: { by: source.decision?.by ?? 'consensus', warnings: source.warnings, fuel: source.fuel },
    at,
  };
}

/** What a completed run's `run.settled` entry carries for its audit entry (the rest is the run's id and the entry's time). */
export type AuditSummary = Omit<AuditEntry, 'id' | 'runId' | 'at'>;

/** The audit entry of a run, from the summary its `run.settled` entry carries. */
export function auditFromSummary(runId: string, summary: AuditSummary, at: number): AuditEntry {
  return { id: `aud_${runId}`, runId, capsuleId: summary.capsuleId, decision: summary.decision, detail: summary.detail, at };
}
