import { copy, type AuditEntry, type ChainRecord, type DeadLetterRecord, type HopRecord, type OverlayRegistration, type RunSnapshot, type Store } from './store.ts';

/** The default store: everything in this process's memory (nothing survives a restart; no graph for overlays). */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  readonly #chains = new Map<string, ChainRecord>();
  readonly #hops = new Map<string, HopRecord[]>();
  readonly #runs = new Map<string, RunSnapshot>();
  readonly #overlays = new Map<string, OverlayRegistration>();
  readonly #audit: AuditEntry[] = [];
  readonly #deadLetters = new Map<string, DeadLetterRecord>();

  start(): Promise<void> {
    return Promise.resolve();
  }

  saveChain(chain: ChainRecord): Promise<void> {
    this.#chains.set(chain.id, copy(chain));
    return Promise.resolve();
  }

  appendHop(hop: HopRecord): void {
    const hops = this.#hops.get(hop.chainId) ?? [];
    hops.push(copy(hop));
    this.#hops.set(hop.chainId, hops);
  }

  loadChains(filter: { status?: ChainRecord['status'] } = {}): Promise<ChainRecord[]> {
    return Promise.resolve([...this.#chains.values()].filter((c) => filter.status === undefined || c.status === filter.status).map(copy));
  }

  loadHops(chainId: string): Promise<HopRecord[]> {
    return Promise.resolve((this.#hops.get(chainId) ?? []).map(copy));
  }

  saveRunSnapshot(snapshot: RunSnapshot): Promise<void> {
    this.#runs.set(snapshot.runId, copy(snapshot));
    return Promise.resolve();
  }

  loadRunSnapshot(runId: string): Promise<RunSnapshot | undefined> {
    const found = this.#runs.get(runId);
    return Promise.resolve(found === undefined ? undefined : copy(found));
  }

  listRunSnapshots(filter: { status?: string } = {}): Promise<RunSnapshot[]> {
    return Promise.resolve([...this.#runs.values()].filter((r) => filter.status === undefined || r.status === filter.status).map(copy));
  }

  deleteRunSnapshot(runId: string): Promise<void> {
    this.#runs.delete(runId);
    return Promise.resolve();
  }

  saveOverlay(registration: OverlayRegistration): Promise<void> {
    this.#overlays.set(registration.id, copy(registration));
    return Promise.resolve();
  }

  listOverlays(): Promise<OverlayRegistration[]> {
    return Promise.resolve([...this.#overlays.values()].map(copy));
  }

  removeOverlay(id: string): Promise<void> {
    this.#overlays.delete(id);
    return Promise.resolve();
  }

  appendAudit(entry: AuditEntry): void {
    this.#audit.push(copy(entry));
  }

  listAudit(filter: { capsuleId?: string; runId?: string } = {}): Promise<AuditEntry[]> {
    return Promise.resolve(this.#audit.filter((a) => (filter.capsuleId === undefined || a.capsuleId === filter.capsuleId) && (filter.runId === undefined || a.runId === filter.runId)).map(copy));
  }

  saveDeadLetter(letter: DeadLetterRecord): Promise<void> {
    this.#deadLetters.set(letter.id, copy(letter));
    return Promise.resolve();
  }

  listDeadLetters(): Promise<DeadLetterRecord[]> {
    return Promise.resolve([...this.#deadLetters.values()].map(copy));
  }

  removeDeadLetter(id: string): Promise<void> {
    this.#deadLetters.delete(id);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
