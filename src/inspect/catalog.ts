import type { AnyActorRef } from 'xstate';

/** What kind of kernel actor an entry is: each kind has one machine definition. */
export type ActorKind = 'overlay' | 'breaker' | 'pipeline' | 'cascade';
export const ACTOR_KINDS: readonly ActorKind[] = ['overlay', 'breaker', 'pipeline', 'cascade'];

/** One live kernel actor as the inspector lists it. */
export interface CatalogEntry {
  /** Unique among the kernel's actors: an overlay id, `<overlayId>:breaker`, a run id, a chain id. */
  id: string;
  kind: ActorKind;
  /** A readable name: the overlay's name, the run's capsule, the chain's insight. */
  label: string;
  actor: AnyActorRef;
  /** Facts the inspector shows beside the state (fuel used, current phase, hops, …), read when asked. */
  details: () => Record<string, unknown>;
  /** The correlation id the actor works under, when it has one. */
  correlationId?: string;
}

/** What the catalog tells its listener (the inspection adapter) about. */
export interface CatalogListener {
  added(entry: CatalogEntry): void;
  removed(entry: CatalogEntry): void;
}

/**
 * The kernel's live actors by id, registered by the components that create them (overlay registry, pipelines,
 * cascades). Registering is a map insert, so it stays on even when nobody inspects; ended actors stay listed (with
 * their final state) in a short bounded tail per kind, so a finished run does not vanish from the inspector at once.
 */
export class ActorCatalog {
  readonly #live = new Map<string, CatalogEntry>();
  readonly #ended = new Map<ActorKind, CatalogEntry[]>();
  readonly #endedPerKind: number;
  #listener: CatalogListener | undefined;

  constructor(options: { endedPerKind?: number } = {}) {
    this.#endedPerKind = options.endedPerKind ?? 50;
  }

  add(entry: CatalogEntry): void {
    this.#live.set(entry.id, entry);
    this.#listener?.added(entry);
  }

  /** The actor has stopped (or is about to): it moves to the ended tail of its kind. */
  remove(id: string): void {
    const entry = this.#live.get(id);
    if (entry === undefined) return;
    this.#live.delete(id);
    const ended = this.#ended.get(entry.kind) ?? [];
    ended.push(entry);
    if (ended.length > this.#endedPerKind) ended.shift();
    this.#ended.set(entry.kind, ended);
    this.#listener?.removed(entry);
  }

  get(id: string): CatalogEntry | undefined {
    return this.#live.get(id) ?? [...this.#ended.values()].flat().find((e) => e.id === id);
  }

  live(): CatalogEntry[] {
    return [...this.#live.values()];
  }

  ended(): CatalogEntry[] {
    return [...this.#ended.values()].flat();
  }

  /** One listener at a time (the inspection adapter); undefined detaches it. */
  listen(listener: CatalogListener | undefined): void {
    this.#listener = listener;
  }
}
