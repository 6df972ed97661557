import { createActor } from 'xstate';
import { circuitBreakerMachine } from '../actors/circuit-breaker.ts';
import { InspectionAdapter } from '../src/inspect/adapter.ts';
import { ActorCatalog } from '../src/inspect/catalog.ts';
import { paired, row, type BenchOptions, type BenchRow } from './harness.ts';

/**
 * What inspection costs a `send()`: an actor listed in the catalog with inspection switched off (after having been
 * on) against one that was never inspected, and with inspection on, against the same baseline.
 */
export async function inspectBenchmarks(options: BenchOptions): Promise<BenchRow[]> {
  const iterations = options.quick ? 20_000 : 200_000;
  const event = { type: 'SUCCESS', durationMs: 1, at: 0, probe: false } as const;
  const bare = createActor(circuitBreakerMachine).start();
  const catalog = new ActorCatalog();
  const adapter = new InspectionAdapter(catalog, { bufferSize: 100 });
  const listed = createActor(circuitBreakerMachine).start();
  catalog.add({ id: 'listed', kind: 'breaker', label: 'bench', actor: listed, details: () => ({}) });
  adapter.enable();
  adapter.disable();
  const sendAll = (actor: typeof bare) => () => {
    for (let i = 0; i < iterations; i++) actor.send(event);
  };
  const [off, baseline] = await paired(sendAll(listed), sendAll(bare), iterations, options);
  adapter.enable();
  const [on, baseline2] = await paired(sendAll(listed), sendAll(bare), iterations, options);
  adapter.disable();
  return [
    row('send() with the inspection adapter off vs an actor never inspected', off, baseline, 'ns/send', '≤ 1.05× (noise)', (r) => r !== null && r <= 1.05),
    row('send() with the inspection adapter on vs an actor never inspected', on, baseline2, 'ns/send', 'reported', null),
  ];
}
