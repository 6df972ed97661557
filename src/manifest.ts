import { CAPABILITIES, isCapability, type Capability } from './wasm/abi.ts';
import { ForgeError } from './errors.ts';
import { jsonMembers, parseErrorOffset, positionAt, type TextPosition } from './json-positions.ts';
import { labelRefusal, relationshipRefusal } from './store/graph-names.ts';

/** The seven pipeline phases, in order. */
export const PHASES = ['ingestion', 'analysis', 'validation', 'consensus', 'execution', 'propagation', 'settlement'] as const;
export type Phase = (typeof PHASES)[number];

/** Fuel for one call of an export the manifest gives no budget for (instructions). */
export const DEFAULT_FUEL_BUDGET = 10_000_000;
/** Memory cap when the manifest names none: 256 pages of 64 KiB = 16 MiB. */
export const DEFAULT_MEMORY_PAGES = 256;
/** Wall-clock deadline of one call when the manifest names none (ms). */
export const DEFAULT_TIMEOUT_MS = 5_000;
/** Largest memory a manifest may ask for: the wasm32 limit, 65,536 pages = 4 GiB. */
const MAX_MEMORY_PAGES = 65_536;

/** What an overlay declares about itself; produced by `forge-kernel build` next to the `.wasm`. */
export interface OverlayManifest {
  /** Lower-case kebab-case, unique within a kernel. */
  name: string;
  /** Semantic version. */
  version: string;
  description: string;
  /** Pipeline phases the overlay takes part in. */
  phases: Phase[];
  /** Event types (or `domain.*` / `*.action` patterns) the overlay subscribes to. */
  subscribes: string[];
  /** Host capabilities it asks for; the embedding service grants a subset at load. */
  capabilities: Capability[];
  /** Minimum caller trust (0–100) for a call to be allowed. */
  trustRequired: number;
  /** Fuel budget per export (instructions); exports not listed get {@link DEFAULT_FUEL_BUDGET}. */
  fuel: Record<string, number>;
  /** Memory cap in 64 KiB pages, enforced by the host. */
  memoryPages: number;
  /** Wall-clock deadline of one call (ms). */
  timeoutMs: number;
  /**
   * Limits of `db_read` / `db_write`: transaction timeout (ms), rows and bytes (JSON) returned at most. The service
   * caps each with a ceiling of its own.
   */
  database: { timeoutMs: number; rowCap: number; maxReplyBytes: number };
  /** What the overlay may write with `db_write`: labels and relationship types (never the kernel's). */
  graph: { writes: { labels: string[]; relationships: string[] } };
  /** Other overlays this one needs: name → semver range. */
  dependencies: Record<string, string>;
  /** sha256 (hex) of the exact `.wasm` bytes; loading fails closed when it differs. */
  sha256: string;
}

/** Where a manifest error is: the file and the line and column of the field. */
export interface ManifestLocation extends TextPosition {
  file: string;
}

/**
 * A manifest field is missing, wrong or unknown; `details.field` names it (`timeoutMs`, `fuel.run`, `phases[0]`,
 * `(root)`), and when the manifest was read from a file, `details.file/line/column` say where it is.
 */
export class InvalidManifestError extends ForgeError {
  readonly field: string;
  readonly reason: string;
  constructor(field: string, reason: string, at?: ManifestLocation) {
    const where = at === undefined ? '' : `${at.file}:${at.line}:${at.column}: `;
    super('INVALID_MANIFEST', `${where}Invalid overlay manifest: "${field}" ${reason}`, { details: { field, ...at } });
    this.field = field;
    this.reason = reason;
  }
}

/** The fields a manifest may hold; `build` is what `forge-kernel build` records about the build (see `src/build/`). */
const MANIFEST_FIELDS = ['name', 'version', 'description', 'phases', 'subscribes', 'capabilities', 'trustRequired', 'fuel', 'memoryPages', 'timeoutMs', 'database', 'graph', 'dependencies', 'sha256', 'build'] as const;
const DATABASE_FIELDS = ['timeoutMs', 'rowCap', 'maxReplyBytes'] as const;
const GRAPH_FIELDS = ['writes'] as const;
const GRAPH_WRITES_FIELDS = ['labels', 'relationships'] as const;

/** Refuses keys of `raw` that are not in `allowed`, suggesting the nearest valid name ("did you mean timeoutMs?"). */
function refuseUnknownKeys(raw: Record<string, unknown>, allowed: readonly string[], prefix: string): void {
  for (const key of Object.keys(raw)) {
    if (allowed.includes(key)) continue;
    const suggestion = closest(key, allowed);
    throw new InvalidManifestError(
      prefix + key,
      `is not a manifest field${suggestion === undefined ? '.' : `: did you mean "${suggestion}"?`} The fields are ${allowed.join(', ')}.`,
    );
  }
}

/** The candidate nearest to `word` (same letters in another case, or a few edits away), if one is near enough. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const lower = word.toLowerCase();
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const candidate of candidates) {
    const distance = candidate.toLowerCase() === lower ? 0 : editDistance(lower, candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

const NAME = /^[a-z][a-z0-9-]{0,62}[a-z0-9]$/;
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
const RANGE = /^[\^~<>=*xX0-9A-Za-z.+| -]+$/;
const EVENT_PATTERN = /^(\*|[a-z][a-z0-9_]*)(\.(\*|[a-z][a-z0-9_]*))+$/;
const SHA256 = /^[0-9a-f]{64}$/;
const EXPORT_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringList<T extends string>(raw: unknown, field: string, check: (v: string) => v is T, what: string): T[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw new InvalidManifestError(field, 'must be an array.');
  const seen = new Set<string>();
  return raw.map((item, i) => {
    if (typeof item !== 'string' || !check(item)) throw new InvalidManifestError(`${field}[${i}]`, `must be ${what}, got ${JSON.stringify(item)}.`);
    if (seen.has(item)) throw new InvalidManifestError(`${field}[${i}]`, `repeats ${JSON.stringify(item)}.`);
    seen.add(item);
    return item;
  });
}

function positiveInteger(raw: unknown, field: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (raw === undefined) return fallback;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw <= 0 || raw > max) {
    throw new InvalidManifestError(field, `must be a whole number from 1 to ${max}, got ${JSON.stringify(raw)}.`);
  }
  return raw;
}

/**
 * Validates a manifest (e.g. parsed from `<name>.manifest.json`) and fills in the defaults. Throws
 * {@link InvalidManifestError} naming the first wrong field.
 */
export function parseManifest(raw: unknown): OverlayManifest {
  if (!isRecord(raw)) throw new InvalidManifestError('(root)', 'must be a JSON object.');
  refuseUnknownKeys(raw, MANIFEST_FIELDS, '');
  const { name, version, sha256 } = raw;
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new InvalidManifestError('name', `must be lower-case kebab-case (2–64 characters), got ${JSON.stringify(name)}.`);
  }
  if (typeof version !== 'string' || !SEMVER.test(version)) {
    throw new InvalidManifestError('version', `must be a semantic version such as 1.2.3, got ${JSON.stringify(version)}.`);
  }
  if (typeof sha256 !== 'string' || !SHA256.test(sha256)) {
    throw new InvalidManifestError('sha256', 'must be the 64 hex digits of the .wasm file\'s sha256.');
  }
  const description = raw.description ?? '';
  if (typeof description !== 'string') throw new InvalidManifestError('description', 'must be a string.');
  if (raw.build !== undefined && !isRecord(raw.build)) throw new InvalidManifestError('build', 'must be an object (forge-kernel build writes it).');

  const phases = stringList(raw.phases, 'phases', (v): v is Phase => (PHASES as readonly string[]).includes(v), `one of ${PHASES.join(', ')}`);
  const subscribes = stringList(raw.subscribes, 'subscribes', (v): v is string => EVENT_PATTERN.test(v), "an event type such as 'capsule.created' or a pattern such as 'capsule.*'");
  const capabilities = stringList(raw.capabilities, 'capabilities', isCapability, `one of ${CAPABILITIES.join(', ')}`);

  const trust = raw.trustRequired ?? 0;
  if (typeof trust !== 'number' || !Number.isInteger(trust) || trust < 0 || trust > 100) {
    throw new InvalidManifestError('trustRequired', `must be a whole number from 0 to 100, got ${JSON.stringify(trust)}.`);
  }

  const fuelRaw = raw.fuel ?? {};
  if (!isRecord(fuelRaw)) throw new InvalidManifestError('fuel', 'must be an object of export name → budget.');
  const fuel: Record<string, number> = {};
  for (const [exportName, budget] of Object.entries(fuelRaw)) {
    if (!EXPORT_NAME.test(exportName)) throw new InvalidManifestError(`fuel.${exportName}`, 'is not an export name.');
    fuel[exportName] = positiveInteger(budget, `fuel.${exportName}`, DEFAULT_FUEL_BUDGET);
  }

  const dependenciesRaw = raw.dependencies ?? {};
  if (!isRecord(dependenciesRaw)) throw new InvalidManifestError('dependencies', 'must be an object of overlay name → semver range.');
  const dependencies: Record<string, string> = {};
  for (const [dependency, range] of Object.entries(dependenciesRaw)) {
    if (!NAME.test(dependency)) throw new InvalidManifestError(`dependencies.${dependency}`, 'is not an overlay name.');
    if (dependency === name) throw new InvalidManifestError(`dependencies.${dependency}`, 'names the overlay itself.');
    if (typeof range !== 'string' || !RANGE.test(range)) throw new InvalidManifestError(`dependencies.${dependency}`, 'must be a semver range such as ^1.0.0.');
    dependencies[dependency] = range;
  }

  return {
    name,
    version,
    description,
    phases,
    subscribes,
    capabilities,
    trustRequired: trust,
    fuel,
    memoryPages: positiveInteger(raw.memoryPages, 'memoryPages', DEFAULT_MEMORY_PAGES, MAX_MEMORY_PAGES),
    timeoutMs: positiveInteger(raw.timeoutMs, 'timeoutMs', DEFAULT_TIMEOUT_MS, 3_600_000),
    database: parseDatabaseLimits(raw.database),
    graph: parseGraph(raw.graph),
    dependencies,
    sha256,
  };
}

/** Transaction timeout of an overlay's graph query when its manifest names none (ms). */
export const DEFAULT_DB_TIMEOUT_MS = 5_000;
/** Rows a graph query returns to an overlay at most when its manifest names no cap. */
export const DEFAULT_DB_ROW_CAP = 1_000;

/** Bytes of JSON a graph query returns to an overlay at most when its manifest names no cap. */
export const DEFAULT_DB_REPLY_BYTES = 1024 * 1024;
/** The most a manifest may ask for: the largest string a host function hands an overlay (4 MiB). */
const MAX_DB_REPLY_BYTES = 4 * 1024 * 1024;

function parseDatabaseLimits(raw: unknown): OverlayManifest['database'] {
  if (raw === undefined) return { timeoutMs: DEFAULT_DB_TIMEOUT_MS, rowCap: DEFAULT_DB_ROW_CAP, maxReplyBytes: DEFAULT_DB_REPLY_BYTES };
  if (!isRecord(raw)) throw new InvalidManifestError('database', 'must be an object { timeoutMs, rowCap, maxReplyBytes }.');
  refuseUnknownKeys(raw, DATABASE_FIELDS, 'database.');
  return {
    timeoutMs: positiveInteger(raw.timeoutMs, 'database.timeoutMs', DEFAULT_DB_TIMEOUT_MS, 600_000),
    rowCap: positiveInteger(raw.rowCap, 'database.rowCap', DEFAULT_DB_ROW_CAP, 100_000),
    maxReplyBytes: positiveInteger(raw.maxReplyBytes, 'database.maxReplyBytes', DEFAULT_DB_REPLY_BYTES, MAX_DB_REPLY_BYTES),
  };
}

function nameList(raw: unknown, field: string, refusal: (name: string) => string | undefined): string[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw new InvalidManifestError(field, 'must be an array of names.');
  const seen = new Set<string>();
  return raw.map((item, i) => {
    const why = typeof item === 'string' ? refusal(item) : 'must be a string';
    if (why !== undefined) throw new InvalidManifestError(`${field}[${i}]`, `${why}, got ${JSON.stringify(item)}.`);
    if (seen.has(item as string)) throw new InvalidManifestError(`${field}[${i}]`, `repeats ${JSON.stringify(item)}.`);
    seen.add(item as string);
    return item as string;
  });
}

function parseGraph(raw: unknown): OverlayManifest['graph'] {
  if (raw === undefined) return { writes: { labels: [], relationships: [] } };
  if (!isRecord(raw)) throw new InvalidManifestError('graph', 'must be an object { writes: { labels, relationships } }.');
  refuseUnknownKeys(raw, GRAPH_FIELDS, 'graph.');
  const writes = raw.writes ?? {};
  if (!isRecord(writes)) throw new InvalidManifestError('graph.writes', 'must be an object { labels, relationships }.');
  refuseUnknownKeys(writes, GRAPH_WRITES_FIELDS, 'graph.writes.');
  return { writes: { labels: nameList(writes.labels, 'graph.writes.labels', labelRefusal), relationships: nameList(writes.relationships, 'graph.writes.relationships', relationshipRefusal) } };
}

/** The fuel budget of one export under a manifest. */
export function fuelBudget(manifest: OverlayManifest, exportName: string): number {
  return manifest.fuel[exportName] ?? DEFAULT_FUEL_BUDGET;
}

/** A manifest's JSON inside a text: a whole `.manifest.json` file, or the manifest block of an overlay source. */
export interface ManifestText {
  /** How the file is named in error messages. */
  file: string;
  text: string;
  /** Where the JSON starts and ends in `text` (default: all of it). */
  start?: number;
  end?: number;
}

/**
 * Parses and validates a manifest read from a file. Every error is an {@link InvalidManifestError} pointing at the
 * `file:line:column` of the field at fault (of the manifest's start when the field is missing), including JSON
 * syntax errors and keys given twice. `prepare` may refuse more (throwing InvalidManifestError for a field) or fill in
 * fields before validation.
 */
export function parseManifestText(where: ManifestText, prepare?: (raw: Record<string, unknown>) => Record<string, unknown>): OverlayManifest {
  // A byte-order mark is not JSON, but editors write it and hide it: skip it like whitespace.
  const start = (where.start ?? 0) + (where.text.startsWith('\uFEFF', where.start ?? 0) ? 1 : 0);
  const json = where.text.slice(start, where.end ?? where.text.length);
  if (json.trim() === '') throw new InvalidManifestError('(root)', 'is empty: write the manifest as a JSON object.', locate(where, start));
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    // V8 counts its own line and column from the start of the JSON; the position given is in the whole file.
    const reason = (error as Error).message.replace(/ \(line \d+ column \d+\)/, '').replace(/ at position \d+/, '');
    throw new InvalidManifestError('(root)', `is not valid JSON: ${reason.replace(/\.$/, '')}.`, locate(where, start + (parseErrorOffset(error) ?? 0)));
  }
  let members: ReturnType<typeof jsonMembers>;
  try {
    members = jsonMembers(where.text, start);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new InvalidManifestError('(root)', 'nests too deeply: a manifest is an object of a few levels.', locate(where, start));
  }
  const repeated = members.duplicates[0];
  if (repeated !== undefined) throw new InvalidManifestError(repeated.path, 'is given twice: keep one.', locate(where, repeated.offset));
  try {
    return parseManifest(isRecord(raw) && prepare !== undefined ? prepare(raw) : raw);
  } catch (error) {
    if (!(error instanceof InvalidManifestError)) throw error;
    throw new InvalidManifestError(error.field, error.reason, locate(where, memberOffset(members.offsets, error.field)));
  }
}

/** An error about `field` of a manifest that {@link parseManifestText} accepted, pointing at the field. */
export function manifestErrorAt(where: ManifestText, field: string, reason: string): InvalidManifestError {
  return new InvalidManifestError(field, reason, locate(where, memberOffset(jsonMembers(where.text, where.start ?? 0).offsets, field)));
}

function locate(where: ManifestText, offset: number): ManifestLocation {
  return { file: where.file, ...positionAt(where.text, offset) };
}

/** The offset of a field's path, or of its nearest enclosing member that is present (a missing field's object). */
function memberOffset(offsets: ReadonlyMap<string, number>, field: string): number {
  for (let path = field; ; ) {
    const offset = offsets.get(path);
    if (offset !== undefined) return offset;
    const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
    if (cut <= 0) return offsets.get('') ?? 0;
    path = path.slice(0, cut);
  }
}
