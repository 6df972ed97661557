import type { AnyStateMachine } from 'xstate';
import { cascadeMachine } from '../../actors/cascade.ts';
import { circuitBreakerMachine } from '../../actors/circuit-breaker.ts';
import { overlayMachine } from '../../actors/overlay.ts';
import { pipelineMachine } from '../../actors/pipeline.ts';
import type { ActorKind } from './catalog.ts';

/** The machine behind each kind of kernel actor. */
export const MACHINES: Readonly<Record<ActorKind, AnyStateMachine>> = Object.freeze({
  overlay: overlayMachine,
  breaker: circuitBreakerMachine,
  pipeline: pipelineMachine,
  cascade: cascadeMachine,
});

export interface StateView {
  /** The state's full id, e.g. `pipeline.awaitingDecision.open`. */
  id: string;
  key: string;
  parent: string | null;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  /** The state its parent enters first. */
  initial: boolean;
}

export interface TransitionView {
  source: string;
  target: string;
  /** The event, readable: `PHASE_DONE`, `after resetWait`, `always`, `done load`. */
  event: string;
  guard?: string;
}

/** A machine as plain states and transitions: what Mermaid, DOT and the inspector's layout are drawn from. */
export interface Statechart {
  id: string;
  states: StateView[];
  transitions: TransitionView[];
}

interface NodeLike {
  id: string;
  key: string;
  type: StateView['type'];
  states: Record<string, NodeLike>;
  initial?: { target: readonly NodeLike[] };
  transitions: Map<string, readonly TransitionLike[]>;
  always?: readonly TransitionLike[];
  invoke: readonly { id: string; src: unknown }[];
  parent?: NodeLike;
}

interface TransitionLike {
  eventType: string;
  target?: readonly NodeLike[];
  guard?: unknown;
}

function guardName(guard: unknown): string | undefined {
  if (guard === undefined || guard === null) return undefined;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && 'type' in guard) {
    const { type, params } = guard as { type: string; params?: Record<string, unknown> };
    return params === undefined ? type : `${type}(${Object.values(params).map(String).join(', ')})`;
  }
  return typeof guard === 'function' ? guard.name || 'guard' : 'guard';
}

/** `xstate.after.resetWait.breaker.open` → `after resetWait`; invoked actors' done/error events by their logic's name. */
function eventName(type: string, node: NodeLike): string {
  if (type === '') return 'always';
  const after = /^xstate\.after\.([^.]+)\./.exec(type);
  if (after !== null) return `after ${after[1]}`;
  const settled = /^xstate\.(done|error)\.actor\.(.+)$/.exec(type);
  if (settled !== null) {
    const invoked = node.invoke.find((i) => i.id === settled[2]);
    const src = typeof invoked?.src === 'string' ? invoked.src : (settled[2] ?? '');
    return `${settled[1]} ${src}`;
  }
  return type;
}

/**
 * The states and transitions of a machine (from its state nodes: `toJSON()` leaves out eventless transitions).
 * Transitions defined on the root apply in every top-level state, so they are drawn from each non-final one;
 * transitions without a target (actions only) are drawn as self-loops.
 */
export function statechart(machine: AnyStateMachine): Statechart {
  const root = machine.root as unknown as NodeLike;
  const states: StateView[] = [];
  const transitions: TransitionView[] = [];
  const add = (node: NodeLike, sources: readonly NodeLike[]): void => {
    const all = [...[...node.transitions.values()].flat(), ...(node.always ?? [])];
    for (const t of all) {
      for (const source of sources) {
        const targets = t.target === undefined || t.target.length === 0 ? [source] : t.target;
        for (const target of targets) {
          const guard = guardName(t.guard);
          transitions.push({ source: source.id, target: target.id, event: eventName(t.eventType, node), ...(guard === undefined ? {} : { guard }) });
        }
      }
    }
  };
  const walk = (node: NodeLike, parent: NodeLike | null): void => {
    const initialIds = new Set((node.initial?.target ?? []).map((t) => t.id));
    for (const child of Object.values(node.states)) {
      states.push({ id: child.id, key: child.key, parent: parent === null ? null : node.id, type: child.type, initial: initialIds.has(child.id) });
      add(child, [child]);
      walk(child, node);
    }
  };
  walk(root, null);
  add(root, Object.values(root.states).filter((s) => s.type !== 'final'));
  // Root-level states have `parent: null`; nested ones name their compound parent.
  for (const state of states) if (state.parent === root.id) state.parent = null;
  return { id: root.id, states, transitions };
}

/** The ids of the states a snapshot value is in, outermost first (`{ awaitingDecision: 'open' }` → both). */
export function activeStateIds(machineId: string, value: unknown): string[] {
  const out: string[] = [];
  const visit = (prefix: string, v: unknown): void => {
    if (typeof v === 'string') out.push(`${prefix}.${v}`);
    else if (typeof v === 'object' && v !== null) {
      for (const [key, child] of Object.entries(v as Record<string, unknown>)) {
        out.push(`${prefix}.${key}`);
        visit(`${prefix}.${key}`, child);
      }
    }
  };
  visit(machineId, value);
  return out;
}

const mermaidId = (id: string): string => id.replace(/[^A-Za-z0-9_]/g, '_');
const mermaidText = (text: string): string => text.replace(/[:;#{}\n"]/g, ' ');
const label = (t: TransitionView): string => (t.guard === undefined ? t.event : `${t.event} [${t.guard}]`);

/** A Mermaid `stateDiagram-v2` (pasteable into Markdown); nested states become composite states. */
export function toMermaid(chart: Statechart): string {
  const lines = ['stateDiagram-v2'];
  const childrenOf = (parent: string | null): StateView[] => chart.states.filter((s) => s.parent === parent);
  const emit = (parent: string | null, indent: string): void => {
    for (const state of childrenOf(parent)) {
      const id = mermaidId(state.id);
      if (state.initial) lines.push(`${indent}[*] --> ${id}`);
      lines.push(`${indent}state "${mermaidText(state.key)}" as ${id}`);
      if (state.type === 'compound' || state.type === 'parallel') {
        lines.push(`${indent}state ${id} {`);
        emit(state.id, `${indent}  `);
        lines.push(`${indent}}`);
      }
      if (state.type === 'final') lines.push(`${indent}${id} --> [*]`);
    }
  };
  emit(null, '  ');
  for (const t of chart.transitions) lines.push(`  ${mermaidId(t.source)} --> ${mermaidId(t.target)}: ${mermaidText(label(t))}`);
  return `${lines.join('\n')}\n`;
}

const dotString = (text: string): string => `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/** A Graphviz DOT digraph; nested states become clusters (edges to or from them attach to their initial state). */
export function toDot(chart: Statechart): string {
  const lines = [`digraph ${dotString(chart.id)} {`, '  rankdir=LR;', '  compound=true;', '  node [shape=box, style=rounded, fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];'];
  const byId = new Map(chart.states.map((s) => [s.id, s]));
  const childrenOf = (parent: string | null): StateView[] => chart.states.filter((s) => s.parent === parent);
  const isCluster = (s: StateView | undefined): boolean => s !== undefined && (s.type === 'compound' || s.type === 'parallel');
  /** A cluster cannot be an edge's end: use its initial leaf, and clip the edge at the cluster. */
  const leaf = (id: string): string => {
    let state = byId.get(id);
    while (isCluster(state)) state = childrenOf(state!.id).find((c) => c.initial) ?? childrenOf(state!.id)[0];
    return state?.id ?? id;
  };
  const emit = (parent: string | null, indent: string): void => {
    const children = childrenOf(parent);
    const initial = children.find((c) => c.initial);
    if (initial !== undefined) {
      const start = `${parent ?? chart.id}.__initial`;
      lines.push(`${indent}${dotString(start)} [shape=point, width=0.12, label=""];`);
      lines.push(`${indent}${dotString(start)} -> ${dotString(leaf(initial.id))}${isCluster(initial) ? ` [lhead=${dotString(`cluster_${initial.id}`)}]` : ''};`);
    }
    for (const state of children) {
      if (isCluster(state)) {
        lines.push(`${indent}subgraph ${dotString(`cluster_${state.id}`)} {`, `${indent}  label=${dotString(state.key)};`, `${indent}  style=rounded;`);
        emit(state.id, `${indent}  `);
        lines.push(`${indent}}`);
      } else {
        lines.push(`${indent}${dotString(state.id)} [label=${dotString(state.key)}${state.type === 'final' ? ', peripheries=2' : ''}];`);
      }
    }
  };
  emit(null, '  ');
  for (const t of chart.transitions) {
    const attrs = [`label=${dotString(label(t))}`];
    if (isCluster(byId.get(t.source))) attrs.push(`ltail=${dotString(`cluster_${t.source}`)}`);
    if (isCluster(byId.get(t.target)) && t.source !== t.target) attrs.push(`lhead=${dotString(`cluster_${t.target}`)}`);
    lines.push(`  ${dotString(leaf(t.source))} -> ${dotString(leaf(t.target))} [${attrs.join(', ')}];`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
