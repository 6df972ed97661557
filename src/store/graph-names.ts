/**
 * Names in the graph: what an overlay may call a label, a relationship type or a property, and what belongs to the
 * kernel. The kernel's records (chains, runs, registrations, audit, dead letters) live under labels no overlay may
 * declare or write, and every node an overlay writes carries its owner in a property no overlay may set.
 */

/** A label, relationship type or property name an overlay may use: a plain identifier (never quoted, never escaped). */
export const GRAPH_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;

/** The labels of the kernel's own records (src/store/neo4j-store.ts). */
export const KERNEL_LABELS: readonly string[] = Object.freeze(['CascadeChain', 'CascadeEvent', 'TouchedOverlay', 'PipelineRunSnapshot', 'OverlayRegistration', 'AuditEntry', 'DeadLetter']);
/** The relationship types of the kernel's own records. */
export const KERNEL_RELATIONSHIPS: readonly string[] = Object.freeze(['HOP', 'TOUCHED']);
/** Property that records which overlay wrote a node; with the prefix reserved, no overlay can set or forge it. */
export const OWNER_PROPERTY = 'forge_owner';
const RESERVED_PROPERTY_PREFIX = 'forge_';

/** Why `name` cannot be an overlay's label (undefined when it can). */
export function labelRefusal(name: string): string | undefined {
  if (!GRAPH_NAME.test(name)) return 'is not a plain identifier (a letter, then letters, digits or _; at most 64)';
  if (KERNEL_LABELS.includes(name) || name.toLowerCase().startsWith('forge')) return "is the kernel's own (its labels, and every label starting with Forge, are reserved)";
  return undefined;
}

/** Why `name` cannot be an overlay's relationship type (undefined when it can). */
export function relationshipRefusal(name: string): string | undefined {
  if (!GRAPH_NAME.test(name)) return 'is not a plain identifier (a letter, then letters, digits or _; at most 64)';
  if (KERNEL_RELATIONSHIPS.includes(name) || name.toUpperCase().startsWith('FORGE')) return "is the kernel's own (its types, and every type starting with FORGE, are reserved)";
  return undefined;
}

/** Why `name` cannot be a property an overlay writes (undefined when it can). */
export function propertyRefusal(name: string): string | undefined {
  if (!GRAPH_NAME.test(name)) return 'is not a plain identifier (a letter, then letters, digits or _; at most 64)';
  if (name.toLowerCase().startsWith(RESERVED_PROPERTY_PREFIX)) return `starts with "${RESERVED_PROPERTY_PREFIX}", which the kernel reserves (it records a node's owner there)`;
  return undefined;
}
