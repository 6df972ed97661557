import neo4j, { type Driver } from 'neo4j-driver';
import { isForgeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { GraphQueryError, StoreUnavailableError } from './graph-host.ts';
import type { AuditEntry, ChainRecord, DeadLetterRecord, HopRecord, OverlayRegistration, RunSnapshot, Store } from './store.ts';
import { RecordSeal } from './record-seal.ts';
import { WriteBehindBuffer } from './write-behind.ts';

export interface Neo4jStoreOptions {
  uri: string;
  user: string;
  password: string;
  database?: string;
  logger?: Logger;
  /**
   * The secret run snapshots, audit entries and dead letters are sealed with (AES-256-GCM), since overlays read the
   * same graph. Every process of a deployment must use the same. Default: derived from the user and password, which
   * every process of a deployment shares and no overlay can read.
   */
  secret?: string;
  /** Write-behind batch size and interval for hops and audit entries. */
  batchSize?: number;
  intervalMs?: number;
}

/** Constraints and indexes, created idempotently on start. */
const SCHEMA = [
  'CREATE CONSTRAINT forge_chain_id IF NOT EXISTS FOR (c:CascadeChain) REQUIRE c.id IS UNIQUE',
  'CREATE CONSTRAINT forge_cascade_event_id IF NOT EXISTS FOR (e:CascadeEvent) REQUIRE e.id IS UNIQUE',
  'CREATE CONSTRAINT forge_touched_overlay IF NOT EXISTS FOR (o:TouchedOverlay) REQUIRE o.name IS UNIQUE',
  'CREATE CONSTRAINT forge_run_id IF NOT EXISTS FOR (r:PipelineRunSnapshot) REQUIRE r.runId IS UNIQUE',
  'CREATE CONSTRAINT forge_overlay_id IF NOT EXISTS FOR (o:OverlayRegistration) REQUIRE o.id IS UNIQUE',
  'CREATE CONSTRAINT forge_audit_id IF NOT EXISTS FOR (a:AuditEntry) REQUIRE a.id IS UNIQUE',
  'CREATE CONSTRAINT forge_projection_name IF NOT EXISTS FOR (p:ForgeProjection) REQUIRE p.name IS UNIQUE',
  'CREATE CONSTRAINT forge_dead_letter_id IF NOT EXISTS FOR (d:DeadLetter) REQUIRE d.id IS UNIQUE',
  'CREATE INDEX forge_chain_status IF NOT EXISTS FOR (c:CascadeChain) ON (c.status)',
  'CREATE INDEX forge_run_status IF NOT EXISTS FOR (r:PipelineRunSnapshot) ON (r.status)',
  'CREATE INDEX forge_audit_capsule IF NOT EXISTS FOR (a:AuditEntry) ON (a.capsuleId)',
];

const WRITE_HOPS = `
UNWIND $hops AS h
MERGE (c:CascadeChain {id: h.chainId})
MERGE (e:CascadeEvent {id: h.chainId + ':' + toString(h.index)})
  SET e.index = h.index, e.from = h.from, e.to = h.to, e.eventType = h.eventType, e.at = h.at
MERGE (c)-[:HOP {index: h.index}]->(e)
MERGE (o:TouchedOverlay {name: h.to})
MERGE (e)-[:TOUCHED]->(o)`;

const WRITE_AUDIT = `
UNWIND $entries AS a
MERGE (x:AuditEntry {id: a.id})
  SET x.runId = a.runId, x.capsuleId = a.capsuleId, x.sealed = a.sealed, x.at = a.at`;

function translate(error: unknown): Error {
  if (isForgeError(error)) return error;
  const code = (error as { code?: string }).code;
  if (code === 'ServiceUnavailable' || code === 'SessionExpired' || /connect|ECONNREFUSED|closed/i.test(String((error as Error).message))) {
    return new StoreUnavailableError((error as Error).message, { cause: error });
  }
  return new GraphQueryError((error as Error).message, code, { cause: error });
}

/** How long close() keeps retrying buffered writes against an unreachable Neo4j (ms). */
const CLOSE_TIMEOUT_MS = 10_000;

const num = (value: unknown): number => (neo4j.isInt(value) ? neo4j.integer.toNumber(value) : Number(value));

/**
 * The Neo4j adapter: cascade chains as `(:CascadeChain)-[:HOP]->(:CascadeEvent)-[:TOUCHED]->(:TouchedOverlay)`,
 * run snapshots, overlay registrations, the audit trail and dead letters as nodes (JSON in string properties).
 * Acknowledged writes run in their own transaction before the promise resolves; hops and audit entries go through
 * write-behind buffers (one `UNWIND` transaction per batch). The driver reconnects by itself; a write that finds
 * Neo4j down fails with STORE_UNAVAILABLE (acknowledged writes) or stays buffered and is retried (write-behind).
 */
export class Neo4jStore implements Store {
  readonly kind = 'neo4j' as const;
  readonly driver: Driver;
  readonly #database: string | undefined;
  /** The database it uses (undefined: the server's home database). */
  get database(): string | undefined {
    return this.#database;
  }
  readonly #hops: WriteBehindBuffer<HopRecord>;
  readonly #audit: WriteBehindBuffer<AuditEntry>;
  readonly #seal: RecordSeal;

  constructor(options: Neo4jStoreOptions) {
    this.#seal = new RecordSeal(options.secret ?? `${options.user}\u0000${options.password}`);
    this.driver = neo4j.driver(options.uri, neo4j.auth.basic(options.user, options.password), { maxTransactionRetryTime: 5_000, connectionAcquisitionTimeout: 10_000 });
    this.#database = options.database;
    const onError = (what: string) => (error: unknown, attempt: number) => options.logger?.warn({ err: error, attempt }, `${what} flush failed; retrying (nothing is dropped)`);
    const buffer = { ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }), ...(options.intervalMs === undefined ? {} : { intervalMs: options.intervalMs }) };
    this.#hops = new WriteBehindBuffer({ ...buffer, write: (hops) => this.#write(WRITE_HOPS, { hops }), onError: onError('cascade hop') });
    const sealAudit = (e: AuditEntry) => ({ id: e.id, runId: e.runId, capsuleId: e.capsuleId, at: e.at, sealed: this.#seal.seal(JSON.stringify({ decision: e.decision, detail: e.detail }), `AuditEntry:${e.id}`) });
    this.#audit = new WriteBehindBuffer({ ...buffer, write: (entries) => this.#write(WRITE_AUDIT, { entries: entries.map(sealAudit) }), onError: onError('audit') });
  }

  async #write(query: string, params: Record<string, unknown>): Promise<void> {
    try {
      await this.driver.executeQuery(query, params, { ...(this.#database === undefined ? {} : { database: this.#database }), routing: neo4j.routing.WRITE });
    } catch (error) {
      throw translate(error);
    }
  }

  async #read(query: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>[]> {
    try {
      const { records } = await this.driver.executeQuery(query, params, { ...(this.#database === undefined ? {} : { database: this.#database }), routing: neo4j.routing.READ });
      return records.map((r) => r.toObject());
    } catch (error) {
      throw translate(error);
    }
  }

  async start(): Promise<void> {
    try {
      await this.driver.verifyConnectivity();
    } catch (error) {
      throw translate(error);
    }
    for (const statement of SCHEMA) await this.#write(statement, {});
  }

  saveChain(chain: ChainRecord): Promise<void> {
    return this.#write('MERGE (c:CascadeChain {id: $c.id}) SET c += $c', { c: chain });
  }

  appendHop(hop: HopRecord): void {
    this.#hops.push(hop);
  }

  async loadChains(filter: { status?: ChainRecord['status'] } = {}): Promise<ChainRecord[]> {
    const rows = await this.#read('MATCH (c:CascadeChain) WHERE c.source IS NOT NULL AND ($status IS NULL OR c.status = $status) RETURN c {.*} AS c ORDER BY c.createdAt, c.id', { status: filter.status ?? null });
    return rows.map((r) => {
      const c = r.c as Record<string, unknown>;
      // Chains written before chains counted have no counters: zero.
      const counter = (value: unknown): number => (value === null || value === undefined ? 0 : num(value));
      return {
        ...(c as unknown as ChainRecord),
        hops: num(c.hops),
        maxHops: num(c.maxHops),
        createdAt: num(c.createdAt),
        expiresAt: c.expiresAt === null || c.expiresAt === undefined ? null : num(c.expiresAt),
        insights: counter(c.insights),
        actions: counter(c.actions),
        errors: counter(c.errors),
        endReason: (c.endReason ?? null) as ChainRecord['endReason'],
      };
    });
  }

  async loadHops(chainId: string): Promise<HopRecord[]> {
    const rows = await this.#read('MATCH (:CascadeChain {id: $id})-[:HOP]->(e:CascadeEvent) RETURN e {.*} AS e ORDER BY e.index', { id: chainId });
    return rows.map((r) => {
      const e = r.e as Record<string, unknown>;
      return { chainId, index: num(e.index), from: String(e.from), to: String(e.to), eventType: String(e.eventType), at: num(e.at) };
    });
  }

  saveRunSnapshot(snapshot: RunSnapshot): Promise<void> {
    return this.#write('MERGE (r:PipelineRunSnapshot {runId: $runId}) SET r.version = $version, r.status = $status, r.snapshot = $snapshot, r.updatedAt = $updatedAt', {
      ...snapshot,
      snapshot: this.#seal.seal(JSON.stringify(snapshot.snapshot), `PipelineRunSnapshot:${snapshot.runId}`),
    });
  }

  async loadRunSnapshot(runId: string): Promise<RunSnapshot | undefined> {
    const rows = await this.#read('MATCH (r:PipelineRunSnapshot {runId: $runId}) RETURN r {.*} AS r', { runId });
    return rows[0] === undefined ? undefined : this.#runFromRow(rows[0].r as Record<string, unknown>);
  }

  async listRunSnapshots(filter: { status?: string } = {}): Promise<RunSnapshot[]> {
    const rows = await this.#read('MATCH (r:PipelineRunSnapshot) WHERE $status IS NULL OR r.status = $status RETURN r {.*} AS r ORDER BY r.updatedAt', { status: filter.status ?? null });
    return rows.map((row) => this.#runFromRow(row.r as Record<string, unknown>));
  }

  async replaceRunSnapshot(expected: { status: string; updatedAt: number }, next: RunSnapshot): Promise<boolean> {
    // The write lock first (a write to the node), then the comparison: a second transaction waits for the lock and
    // then reads what the first committed, so exactly one of them replaces the snapshot.
    const query = `MATCH (r:PipelineRunSnapshot {runId: $runId}) SET r.lockedBy = $runId
      WITH r WHERE r.status = $expectedStatus AND r.updatedAt = $expectedUpdatedAt
      SET r.version = $version, r.status = $status, r.snapshot = $snapshot, r.updatedAt = $updatedAt
      RETURN count(r) AS replaced`;
    try {
      const { records } = await this.driver.executeQuery(
        query,
        { ...next, snapshot: this.#seal.seal(JSON.stringify(next.snapshot), `PipelineRunSnapshot:${next.runId}`), expectedStatus: expected.status, expectedUpdatedAt: expected.updatedAt },
        { ...(this.#database === undefined ? {} : { database: this.#database }), routing: neo4j.routing.WRITE },
      );
      return num(records[0]?.get('replaced')) === 1;
    } catch (error) {
      throw translate(error);
    }
  }

  async deleteRunSnapshot(runId: string, expected?: { status: string; updatedAt: number }): Promise<boolean> {
    // As replaceRunSnapshot: the lock first, then the comparison, so a stale driver cannot remove a newer checkpoint.
    const query = `MATCH (r:PipelineRunSnapshot {runId: $runId}) SET r.lockedBy = $runId
      WITH r WHERE $expectedStatus IS NULL OR (r.status = $expectedStatus AND r.updatedAt = $expectedUpdatedAt)
      DELETE r RETURN count(*) AS removed`;
    try {
      const { records } = await this.driver.executeQuery(query, { runId, expectedStatus: expected?.status ?? null, expectedUpdatedAt: expected?.updatedAt ?? null }, {
        ...(this.#database === undefined ? {} : { database: this.#database }),
        routing: neo4j.routing.WRITE,
      });
      return num(records[0]?.get('removed')) === 1;
    } catch (error) {
      throw translate(error);
    }
  }

  saveOverlay(registration: OverlayRegistration): Promise<void> {
    return this.#write('MERGE (o:OverlayRegistration {id: $o.id}) SET o += $o', { o: { ...registration, manifest: JSON.stringify(registration.manifest) } });
  }

  async listOverlays(): Promise<OverlayRegistration[]> {
    const rows = await this.#read('MATCH (o:OverlayRegistration) RETURN o {.*} AS o ORDER BY o.updatedAt');
    return rows.map((r) => {
      const o = r.o as Record<string, unknown>;
      return { ...(o as unknown as OverlayRegistration), manifest: JSON.parse(String(o.manifest)) as unknown, updatedAt: num(o.updatedAt) };
    });
  }

  removeOverlay(id: string): Promise<void> {
    return this.#write('MATCH (o:OverlayRegistration {id: $id}) DELETE o', { id });
  }

  appendAudit(entry: AuditEntry): void {
    this.#audit.push(entry);
  }

  async loadProjection(name: string): Promise<number> {
    const rows = await this.#read('MATCH (p:ForgeProjection {name: $name}) RETURN p.position AS position', { name });
    return rows.length === 0 ? 0 : num(rows[0]!.position);
  }

  saveProjection(name: string, position: number): Promise<void> {
    return this.#write('MERGE (p:ForgeProjection {name: $name}) SET p.position = CASE WHEN p.position IS NULL OR p.position < $position THEN $position ELSE p.position END', { name, position });
  }

  async listAudit(filter: { capsuleId?: string; runId?: string } = {}): Promise<AuditEntry[]> {
    const rows = await this.#read(
      'MATCH (a:AuditEntry) WHERE ($capsuleId IS NULL OR a.capsuleId = $capsuleId) AND ($runId IS NULL OR a.runId = $runId) RETURN a {.*} AS a ORDER BY a.at',
      { capsuleId: filter.capsuleId ?? null, runId: filter.runId ?? null },
    );
    return rows.map((r) => {
      const a = r.a as Record<string, unknown>;
      // Entries written before records were sealed keep decision and detail in plain properties.
      const body = a.sealed === undefined || a.sealed === null ? { decision: a.decision, detail: JSON.parse(String(a.detail)) as unknown } : (JSON.parse(this.#seal.open(a.sealed, `AuditEntry:${String(a.id)}`)) as { decision: unknown; detail: unknown });
      return { id: String(a.id), runId: a.runId as AuditEntry['runId'], capsuleId: a.capsuleId as AuditEntry['capsuleId'], decision: body.decision as AuditEntry['decision'], detail: body.detail, at: num(a.at) };
    });
  }

  saveDeadLetter(letter: DeadLetterRecord): Promise<void> {
    return this.#write('MERGE (d:DeadLetter {id: $id}) SET d.event = $event, d.subscriber = $subscriber, d.error = $error, d.attempts = $attempts, d.at = $at', {
      ...letter,
      event: this.#seal.seal(JSON.stringify(letter.event), `DeadLetter:${letter.id}:event`),
      error: this.#seal.seal(JSON.stringify(letter.error), `DeadLetter:${letter.id}:error`),
    });
  }

  async listDeadLetters(): Promise<DeadLetterRecord[]> {
    const rows = await this.#read('MATCH (d:DeadLetter) RETURN d {.*} AS d ORDER BY d.at');
    return rows.map((r) => {
      const d = r.d as Record<string, unknown>;
      const id = String(d.id);
      return {
        id,
        subscriber: String(d.subscriber),
        event: JSON.parse(this.#seal.open(d.event, `DeadLetter:${id}:event`)) as unknown,
        error: JSON.parse(this.#seal.open(d.error, `DeadLetter:${id}:error`)) as DeadLetterRecord['error'],
        attempts: num(d.attempts),
        at: num(d.at),
      };
    });
  }

  #runFromRow(r: Record<string, unknown>): RunSnapshot {
    const runId = String(r.runId);
    return { runId, version: num(r.version), status: String(r.status), snapshot: JSON.parse(this.#seal.open(r.snapshot, `PipelineRunSnapshot:${runId}`)) as unknown, updatedAt: num(r.updatedAt) };
  }

  removeDeadLetter(id: string): Promise<void> {
    return this.#write('MATCH (d:DeadLetter {id: $id}) DELETE d', { id });
  }

  async flush(): Promise<void> {
    await Promise.all([this.#hops.flush(), this.#audit.flush()]);
  }

  /**
   * Flushes, then closes the driver. If Neo4j stays unreachable past `timeoutMs`, the driver is closed anyway and
   * the call fails with STORE_UNAVAILABLE naming how many buffered writes were not persisted (never silently).
   */
  async close(timeoutMs = CLOSE_TIMEOUT_MS): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const flushed = await Promise.race([
      this.flush().then(() => true),
      new Promise<boolean>((done) => (timer = setTimeout(() => done(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    await this.driver.close();
    if (!flushed) {
      const pending = this.#hops.pending + this.#audit.pending;
      throw new StoreUnavailableError(`${pending} buffered write(s) (cascade hops, audit entries) could not be flushed within ${timeoutMs} ms and were not persisted`);
    }
  }
}


