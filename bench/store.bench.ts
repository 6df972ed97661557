import { randomUUID } from 'node:crypto';
import neo4j from 'neo4j-driver';
import { startServices, stopServices } from '../scripts/services/index.ts';
import { Neo4jStore } from '../src/store/neo4j-store.ts';
import type { HopRecord } from '../src/store/store.ts';
import { row, type BenchOptions, type BenchRow } from './harness.ts';

/** Cascade-event persistence on the project's real Neo4j: write-behind batches vs one transaction per event. */
export async function storeBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  const names = process.env.NEO4J_URI === undefined ? (['neo4j'] as const) : ([] as const);
  const { endpoints, started } = await startServices({ names });
  const uri = process.env.NEO4J_URI ?? endpoints.NEO4J_URI;
  const user = process.env.NEO4J_USER ?? endpoints.NEO4J_USER;
  const password = process.env.NEO4J_PASSWORD ?? endpoints.NEO4J_PASSWORD;
  const store = new Neo4jStore({ uri, user, password });
  try {
    await store.start();
    const count = options.quick ? 200 : 2_000;
    const hops = (chainId: string): HopRecord[] => Array.from({ length: count }, (_, i) => ({ chainId, index: i + 1, from: 'a', to: `o${i % 7}`, eventType: 'insight.detected', at: i }));

    const single = `bench-single-${randomUUID()}`;
    let started_ = performance.now();
    for (const hop of hops(single)) {
      await store.driver.executeQuery(
        `MERGE (c:CascadeChain {id: $h.chainId}) MERGE (e:CascadeEvent {id: $h.chainId + ':' + toString($h.index)}) SET e.index = $h.index, e.to = $h.to, e.at = $h.at MERGE (c)-[:HOP {index: $h.index}]->(e) MERGE (o:TouchedOverlay {name: $h.to}) MERGE (e)-[:TOUCHED]->(o)`,
        { h: hop },
        { routing: neo4j.routing.WRITE },
      );
    }
    const perEvent = (performance.now() - started_) / count;

    const batched = `bench-batched-${randomUUID()}`;
    started_ = performance.now();
    for (const hop of hops(batched)) store.appendHop(hop);
    await store.flush();
    const writeBehind = (performance.now() - started_) / count;

    const snapshot = { value: 'awaitingDecision', context: { capsule: { id: 'c', content: 'x'.repeat(2_000), tags: ['a', 'b'] }, results: { analysis: { risk: 0.7 } } } };
    const rounds = options.quick ? 10 : 50;
    started_ = performance.now();
    for (let i = 0; i < rounds; i++) {
      await store.saveRunSnapshot({ runId: `bench-run-${i}`, version: 1, status: 'paused', snapshot, updatedAt: i });
      await store.loadRunSnapshot(`bench-run-${i}`);
    }
    const roundTrip = (performance.now() - started_) / rounds;

    await store.driver.executeQuery('MATCH (c:CascadeChain) WHERE c.id IN $ids OPTIONAL MATCH (c)-[:HOP]->(e) DETACH DELETE c, e', { ids: [single, batched] });
    await store.driver.executeQuery("MATCH (r:PipelineRunSnapshot) WHERE r.runId STARTS WITH 'bench-run-' DELETE r");
    return [
      // A throughput figure: the ratio is how many times more events per second write-behind persists.
      { ...row('cascade-event persistence: write-behind vs one transaction per event (throughput)', writeBehind, perEvent, 'ms/event', '≥ 10×', null), ratio: perEvent / writeBehind, pass: perEvent / writeBehind >= 10 },
      row('paused pipeline-run snapshot save + load round trip (Neo4j)', roundTrip, null, 'ms', 'reported', null),
    ];
  } finally {
    await store.close();
    await stopServices({ names: started });
  }
}
