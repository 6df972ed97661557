import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { CascadeError } from '../cascade/cascades.ts';

/** Compare-and-set attempts before a hop gives up under contention. */
const MAX_CAS_ATTEMPTS = 20;
/** How long finished chains stay readable in the bucket (ms). */
const CHAIN_RETENTION_MS = 24 * 60 * 60 * 1_000;

/** A chain's global state: what every kernel process checks a hop against. */
export interface GlobalChain {
  id: string;
  source: string;
  status: 'active' | 'completed';
  hops: number;
  maxHops: number;
  visited: string[];
  /** Absolute deadline (ms since the epoch). */
  expiresAt: number;
}

/**
 * The hop and cycle limits of cascade chains across kernel processes. Each chain's state lives in a JetStream
 * key-value bucket; a hop reads it, checks it (active, not expired, not a cycle, within the hop budget) and writes
 * it back only if nobody else wrote in between (compare-and-set on the entry's revision), retrying on a conflict.
 * So two processes racing to extend the same chain cannot both take its last hop, or both visit an overlay.
 */
export class ChainGuard {
  readonly #kv: KV;

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  static async open(nc: NatsConnection, bucket = 'forge_chains'): Promise<ChainGuard> {
    return new ChainGuard(await new Kvm(nc).create(bucket, { history: 1, ttl: CHAIN_RETENTION_MS }));
  }

  /** Records a new chain (its source already visited). */
  async register(chain: Omit<GlobalChain, 'status' | 'hops'> & { hops?: number }): Promise<void> {
    await this.#kv.create(chain.id, JSON.stringify({ status: 'active', hops: 0, ...chain }));
  }

  async get(chainId: string): Promise<GlobalChain | undefined> {
    const entry = await this.#kv.get(chainId);
    return entry === null || entry.operation !== 'PUT' ? undefined : entry.json<GlobalChain>();
  }

  /** Takes one hop to `to`, or throws the CascadeError that says why it may not. */
  async hop(chainId: string, to: string, now = Date.now()): Promise<GlobalChain> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const entry = await this.#kv.get(chainId);
      if (entry === null || entry.operation !== 'PUT') throw new CascadeError('CASCADE_NOT_FOUND', `No cascade "${chainId}" in the cluster.`, { chainId });
      const chain = entry.json<GlobalChain>();
      if (chain.status !== 'active' || now >= chain.expiresAt) throw new CascadeError('CASCADE_NOT_ACTIVE', `Cascade ${chainId} is ${chain.status === 'active' ? 'expired' : chain.status}.`, { chainId });
      if (chain.visited.includes(to)) throw new CascadeError('CASCADE_CYCLE', `Cascade ${chainId} already reached ${to}: a cycle.`, { chainId, to });
      if (chain.hops >= chain.maxHops) throw new CascadeError('CASCADE_HOP_LIMIT', `Cascade ${chainId} used its ${chain.maxHops} hops.`, { chainId, maxHops: chain.maxHops });
      const next: GlobalChain = { ...chain, hops: chain.hops + 1, visited: [...chain.visited, to] };
      try {
        await this.#kv.update(chainId, JSON.stringify(next), entry.revision);
        return next;
      } catch {
        // Another process wrote first: read again and re-check.
      }
    }
    throw new CascadeError('CASCADE_NOT_ACTIVE', `Cascade ${chainId} is contended: ${MAX_CAS_ATTEMPTS} hop attempts conflicted.`, { chainId });
  }

  async complete(chainId: string): Promise<void> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const entry = await this.#kv.get(chainId);
      if (entry === null || entry.operation !== 'PUT') return;
      try {
        await this.#kv.update(chainId, JSON.stringify({ ...entry.json<GlobalChain>(), status: 'completed' }), entry.revision);
        return;
      } catch {
        // A hop landed in between: complete the newer state.
      }
    }
  }
}
