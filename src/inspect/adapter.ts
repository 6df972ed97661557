import type { AnyActorRef, InspectionEvent, Subscription } from 'xstate';
import type { ActorCatalog, ActorKind, CatalogEntry } from './catalog.ts';

/** Our own small inspection schema: what the inspector page, logs and tests consume (not XState's internals). */
export interface InspectionRecord {
  /** Increasing per adapter: a client that reconnects asks for what came after the last one it saw. */
  seq: number;
  type: 'actor.created' | 'actor.transitioned' | 'actor.stopped';
  actorId: string;
  kind: ActorKind;
  label: string;
  /** The state after the record, dotted for nested states (`awaitingDecision.open`). */
  state: string;
  /** The state before a transition. */
  from?: string;
  /** The event that caused a transition. */
  event?: string;
  correlationId?: string;
  /** ms since the epoch. */
  at: number;
}

/** Records kept for clients that connect late (the transition log's history). */
const DEFAULT_BUFFER = 2_000;

/** An XState state value as one string: `idle`, `awaitingDecision.open`, parallel regions joined by commas. */
export function stateName(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value !== 'object' || value === null) return String(value);
  return Object.entries(value as Record<string, unknown>)
    .map(([key, child]) => {
      const inner = stateName(child);
      return typeof child === 'object' && child !== null && Object.keys(child).length === 0 ? key : `${key}.${inner}`;
    })
    .join(',');
}

/**
 * Maps XState inspection events of the kernel's actors to {@link InspectionRecord}s. Off by default: while off it
 * attaches nothing to any actor (XState calls no observer, so `send()` costs what it costs without it); `enable()`
 * attaches an observer to every live actor's system and to each one created afterwards, `disable()` detaches them.
 */
export class InspectionAdapter {
  readonly #catalog: ActorCatalog;
  readonly #subscriptions = new Map<string, Subscription>();
  readonly #lastState = new Map<string, string>();
  readonly #listeners = new Set<(record: InspectionRecord) => void>();
  readonly #buffer: InspectionRecord[] = [];
  readonly #bufferSize: number;
  #seq = 0;
  #enabled = false;

  constructor(catalog: ActorCatalog, options: { bufferSize?: number } = {}) {
    this.#catalog = catalog;
    this.#bufferSize = options.bufferSize ?? DEFAULT_BUFFER;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  enable(): void {
    if (this.#enabled) return;
    this.#enabled = true;
    this.#catalog.listen({ added: (entry) => this.#attach(entry, true), removed: (entry) => this.#detach(entry) });
    for (const entry of this.#catalog.live()) this.#attach(entry, false);
  }

  disable(): void {
    if (!this.#enabled) return;
    this.#enabled = false;
    this.#catalog.listen(undefined);
    for (const subscription of this.#subscriptions.values()) subscription.unsubscribe();
    this.#subscriptions.clear();
    this.#lastState.clear();
  }

  /** Every record from now on; returns the function that stops them. */
  subscribe(listener: (record: InspectionRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The buffered records after `afterSeq` (all of them by default), oldest first. */
  recent(afterSeq = 0): InspectionRecord[] {
    return this.#buffer.filter((r) => r.seq > afterSeq);
  }

  #attach(entry: CatalogEntry, created: boolean): void {
    const state = stateName((entry.actor.getSnapshot() as { value?: unknown }).value);
    this.#lastState.set(entry.id, state);
    if (created) this.#record(entry, 'actor.created', { state });
    this.#subscriptions.get(entry.id)?.unsubscribe();
    this.#subscriptions.set(
      entry.id,
      entry.actor.system.inspect((event: InspectionEvent) => {
        if (event.type !== '@xstate.snapshot' || (event.actorRef as AnyActorRef) !== entry.actor) return;
        const next = stateName((event.snapshot as { value?: unknown }).value);
        const from = this.#lastState.get(entry.id);
        if (next === from) return;
        this.#lastState.set(entry.id, next);
        this.#record(entry, 'actor.transitioned', { state: next, ...(from === undefined ? {} : { from }), event: event.event.type });
      }),
    );
  }

  #detach(entry: CatalogEntry): void {
    this.#subscriptions.get(entry.id)?.unsubscribe();
    this.#subscriptions.delete(entry.id);
    const state = stateName((entry.actor.getSnapshot() as { value?: unknown }).value);
    this.#lastState.delete(entry.id);
    this.#record(entry, 'actor.stopped', { state });
  }

  #record(entry: CatalogEntry, type: InspectionRecord['type'], fields: { state: string; from?: string; event?: string }): void {
    const record: InspectionRecord = {
      seq: ++this.#seq,
      type,
      actorId: entry.id,
      kind: entry.kind,
      label: entry.label,
      ...fields,
      ...(entry.correlationId === undefined ? {} : { correlationId: entry.correlationId }),
      at: Date.now(),
    };
    this.#buffer.push(record);
    if (this.#buffer.length > this.#bufferSize) this.#buffer.shift();
    for (const listener of this.#listeners) listener(record);
  }
}
