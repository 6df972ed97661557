import { hostname } from 'node:os';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';

/** How often a process says it is alive (ms). */
export const HEARTBEAT_MS = 1_000;
/** A process not heard from for this long is gone (ms): the bucket's TTL removes its entry. */
export const MEMBER_TTL_MS = 5_000;

/** A kernel process as `kernel.cluster()` lists it. */
export interface ClusterMember {
  processId: string;
  host: string;
  pid: number;
  startedAt: number;
  /** When its last heartbeat was written (ms since the epoch). */
  lastSeen: number;
  /** The overlays it runs (their names). */
  overlays: string[];
  /** Pipeline runs it is driving. */
  activeRuns: number;
  transport: 'memory' | 'nats';
  /** True for the process that asked. */
  self: boolean;
}

export type MemberStatus = Omit<ClusterMember, 'lastSeen' | 'self' | 'processId' | 'host' | 'pid' | 'startedAt' | 'transport'>;

/**
 * Cluster membership over a NATS JetStream key-value bucket: each kernel process writes a heartbeat (what it runs)
 * every second under its id; entries expire after 5 s without one, so a process that died leaves the list on its
 * own. `members()` lists the live ones.
 */
export class Membership {
  readonly #kv: KV;
  readonly #self: Pick<ClusterMember, 'processId' | 'host' | 'pid' | 'startedAt'>;
  readonly #status: () => MemberStatus;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;

  private constructor(kv: KV, processId: string, status: () => MemberStatus, logger: Logger) {
    this.#kv = kv;
    this.#self = { processId, host: hostname(), pid: process.pid, startedAt: Date.now() };
    this.#status = status;
    this.#logger = logger;
  }

  static async join(nc: NatsConnection, options: { processId: string; status: () => MemberStatus; logger: Logger; bucket?: string }): Promise<Membership> {
    const kv = await new Kvm(nc).create(options.bucket ?? 'forge_members', { ttl: MEMBER_TTL_MS, history: 1 });
    const membership = new Membership(kv, options.processId, options.status, options.logger);
    await membership.#beat();
    membership.#timer = setInterval(() => void membership.#beat(), HEARTBEAT_MS);
    membership.#timer.unref();
    return membership;
  }

  async #beat(): Promise<void> {
    try {
      await this.#kv.put(this.#key(this.#self.processId), JSON.stringify({ ...this.#self, ...this.#status(), lastSeen: Date.now(), transport: 'nats' }));
    } catch (error) {
      this.#logger.warn({ err: error }, 'cluster heartbeat failed');
    }
  }

  #key(processId: string): string {
    return processId.replace(/[^A-Za-z0-9_=-]/g, '_');
  }

  /** The processes heard from within the TTL, this one first. */
  async members(): Promise<ClusterMember[]> {
    const out: ClusterMember[] = [];
    const cutoff = Date.now() - MEMBER_TTL_MS;
    for await (const key of await this.#kv.keys()) {
      const entry = await this.#kv.get(key);
      if (entry === null || entry.operation !== 'PUT') continue;
      const member = entry.json<Omit<ClusterMember, 'self'>>();
      if (member.lastSeen < cutoff) continue;
      out.push({ ...member, self: member.processId === this.#self.processId });
    }
    return out.sort((a, b) => Number(b.self) - Number(a.self) || a.processId.localeCompare(b.processId));
  }

  /** Stops the heartbeat and removes this process from the list. */
  async leave(): Promise<void> {
    clearInterval(this.#timer);
    await this.#kv.delete(this.#key(this.#self.processId)).catch(() => undefined);
  }
}
