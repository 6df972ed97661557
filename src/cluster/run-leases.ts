import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';

/** A lease lasts this long without renewal (ms): a process that died gives up its runs after it. */
export const LEASE_TTL_MS = 5_000;
/** Leases are renewed this often (ms). */
const RENEW_MS = 1_000;

/**
 * Which kernel process drives which pipeline run, as leases in a JetStream key-value bucket: a claim is an atomic
 * create (only one process can win it), the holder renews its leases every second, and a lease not renewed for 5 s
 * expires, so another process can claim the run and continue it from its last checkpoint.
 */
export class RunLeases {
  readonly #kv: KV;
  readonly #processId: string;
  readonly #held = new Set<string>();
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;

  private constructor(kv: KV, processId: string, logger: Logger) {
    this.#kv = kv;
    this.#processId = processId;
    this.#logger = logger;
  }

  static async open(nc: NatsConnection, processId: string, logger: Logger, bucket = 'forge_run_leases'): Promise<RunLeases> {
    const leases = new RunLeases(await new Kvm(nc).create(bucket, { history: 1, ttl: LEASE_TTL_MS }), processId, logger);
    leases.#timer = setInterval(() => void leases.#renew(), RENEW_MS);
    leases.#timer.unref();
    return leases;
  }

  /** Claims the run for this process; false when another process holds it. */
  async claim(runId: string): Promise<boolean> {
    if (this.#held.has(runId)) return true;
    try {
      await this.#kv.create(runId, this.#processId);
      this.#held.add(runId);
      return true;
    } catch {
      const entry = await this.#kv.get(runId).catch(() => null);
      if (entry !== null && entry.operation === 'PUT') return false;
      // A deleted or expired entry leaves a marker create() refuses: take it over only if nobody wrote since.
      try {
        await this.#kv.update(runId, this.#processId, entry?.revision ?? 0);
        this.#held.add(runId);
        return true;
      } catch {
        return false;
      }
    }
  }

  async release(runId: string): Promise<void> {
    if (!this.#held.delete(runId)) return;
    await this.#kv.delete(runId).catch(() => undefined);
  }

  holds(runId: string): boolean {
    return this.#held.has(runId);
  }

  async #renew(): Promise<void> {
    for (const runId of this.#held) {
      await this.#kv.put(runId, this.#processId).catch((err: unknown) => this.#logger.warn({ err, runId }, 'could not renew a run lease'));
    }
  }

  /** Stops renewing; leases still held are released (their runs' checkpoints stay for another process). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all([...this.#held].map((runId) => this.release(runId)));
  }
}
