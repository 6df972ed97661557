import ElkBundled from 'elkjs/lib/elk.bundled.js';
import type { ELK, ElkExtendedEdge, ElkNode } from 'elkjs/lib/elk-api.js';
import type { Statechart, StateView } from './statechart.ts';

/** A state placed on the canvas (absolute coordinates, px). */
export interface PlacedState {
  id: string;
  key: string;
  type: StateView['type'];
  initial: boolean;
  x: number;
  y: number;
  width: number;
  height: number;
}

/** A transition routed on the canvas: its polyline and where its label goes. */
export interface PlacedTransition {
  source: string;
  target: string;
  label: string;
  points: { x: number; y: number }[];
  labelAt: { x: number; y: number } | null;
}

export interface StatechartLayout {
  width: number;
  height: number;
  states: PlacedState[];
  transitions: PlacedTransition[];
}

/** Rough text metrics for the inspector's 12 px sans-serif (ELK needs label sizes; the page renders real text). */
const CHAR_WIDTH = 7;
const LINE_HEIGHT = 16;

// elkjs is CommonJS: its module.exports is the constructor, which the ESM default import yields at run time.
const elk = new (ElkBundled as unknown as new () => ELK)();

/**
 * Lays a statechart out with ELK's layered algorithm (left to right, nested states inside their parents, edges
 * routed orthogonally with their labels placed), in absolute coordinates the inspector page draws as SVG.
 */
export async function layoutStatechart(chart: Statechart): Promise<StatechartLayout> {
  const nodeOf = (state: StateView): ElkNode => {
    const children = chart.states.filter((s) => s.parent === state.id);
    return {
      id: state.id,
      ...(children.length === 0 ? { width: Math.max(64, state.key.length * CHAR_WIDTH + 28), height: 34 } : {}),
      labels: [{ text: state.key, width: state.key.length * CHAR_WIDTH, height: LINE_HEIGHT }],
      ...(children.length === 0 ? {} : { children: children.map(nodeOf), layoutOptions: { 'elk.padding': '[top=30,left=14,bottom=14,right=14]' } }),
    };
  };
  const labelOf = (t: Statechart['transitions'][number]): string => (t.guard === undefined ? t.event : `${t.event} [${t.guard}]`);
  const edges: ElkExtendedEdge[] = chart.transitions.map((t, i) => ({
    id: `e${i}`,
    sources: [t.source],
    targets: [t.target],
    labels: [{ text: labelOf(t), width: labelOf(t).length * 6, height: 14 }],
  }));
  const graph: ElkNode = {
    id: chart.id,
    layoutOptions: {
      'elk.algorithm': 'layered',
      'elk.direction': 'RIGHT',
      'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
      'elk.edgeRouting': 'ORTHOGONAL',
      // Keep the phases in their declared order despite the cycles through paused and awaitingDecision.
      'elk.layered.considerModelOrder.strategy': 'NODES_AND_EDGES',
      'elk.layered.cycleBreaking.strategy': 'MODEL_ORDER',
      'elk.layered.spacing.nodeNodeBetweenLayers': '50',
      'elk.spacing.nodeNode': '24',
      'elk.spacing.edgeLabel': '2',
      'elk.json.edgeCoords': 'ROOT',
      'elk.json.shapeCoords': 'ROOT',
    },
    children: chart.states.filter((s) => s.parent === null).map(nodeOf),
    edges,
  };
  const laid = await elk.layout(graph);

  const byId = new Map(chart.states.map((s) => [s.id, s]));
  const states: PlacedState[] = [];
  const collect = (node: ElkNode): void => {
    for (const child of node.children ?? []) {
      const state = byId.get(child.id)!;
      states.push({ id: state.id, key: state.key, type: state.type, initial: state.initial, x: child.x ?? 0, y: child.y ?? 0, width: child.width ?? 0, height: child.height ?? 0 });
      collect(child);
    }
  };
  collect(laid);
  const routed = new Map(((laid.edges ?? [])).map((e) => [e.id, e]));
  const transitions = chart.transitions.map((t, i): PlacedTransition => {
    const edge = routed.get(`e${i}`);
    const points = (edge?.sections ?? []).flatMap((s) => [s.startPoint, ...(s.bendPoints ?? []), s.endPoint]);
    const label = edge?.labels?.[0];
    return { source: t.source, target: t.target, label: labelOf(t), points, labelAt: label?.x === undefined || label.y === undefined ? null : { x: label.x, y: label.y } };
  });
  return { width: laid.width ?? 0, height: laid.height ?? 0, states, transitions };
}
