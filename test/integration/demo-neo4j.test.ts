import { beforeAll, describe, expect, inject, it } from 'vitest';
import { runDemo } from '../../src/demo/demo.ts';
import { buildExamples, EXAMPLES_OUT } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

describe('the demo on Neo4j (real server)', () => {
  const services = inject('services');
  beforeAll(async () => {
    await buildExamples();
  }, budget(120_000));

  it('runs the same demo with runs, checkpoints, decisions, chains and the audit trail in Neo4j', async () => {
    const { summary, kernel } = await runDemo({ capsules: 30, overlaysDir: EXAMPLES_OUT, store: { kind: 'neo4j', uri: services.NEO4J_URI, user: services.NEO4J_USER, password: services.NEO4J_PASSWORD } });
    try {
      expect(summary.store).toBe('neo4j');
      expect(summary.runs.completed + summary.runs.failed).toBe(30);
      expect(summary.decisions.paused).toBeGreaterThanOrEqual(1);
      expect(summary.breaker).toMatchObject({ tripped: true, recovered: true });
      const completed = kernel.pipelines.history().filter((r) => r.status === 'completed');
      const audit = await kernel.store.listAudit({ runId: completed[0]!.id });
      expect(audit).toHaveLength(1);
      // Chains end completed, or stopped by their cycle guard with the reason; none is left active or expired.
      const chains = (await kernel.store.loadChains()).filter((c) => c.source === 'demo');
      expect(chains.filter((c) => c.hops > 0).length).toBeGreaterThanOrEqual(1);
      expect(chains.filter((c) => c.status === 'active' || c.status === 'expired')).toEqual([]);
      expect(chains.filter((c) => c.status === 'stopped').every((c) => c.endReason === 'cycle' || c.endReason === 'hop-limit')).toBe(true);
      expect(summary.cascades.completed + summary.cascades.stopped).toBe(summary.cascades.started);
    } finally {
      await kernel.stop();
    }
  }, budget(180_000));
});
