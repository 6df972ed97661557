import { describe, expect, it } from 'vitest';
import { closest, DEFAULT_FUEL_BUDGET, DEFAULT_MEMORY_PAGES, fuelBudget, parseManifest, parseManifestText } from '../src/manifest.ts';

const base = { name: 'capsule-classifier', version: '1.2.3', sha256: 'a'.repeat(64) };

describe('parseManifest', () => {
  it('fills in defaults for a minimal manifest', () => {
    const manifest = parseManifest(base);
    expect(manifest).toMatchObject({ ...base, phases: [], subscribes: [], capabilities: [], trustRequired: 0, memoryPages: DEFAULT_MEMORY_PAGES, dependencies: {}, database: { timeoutMs: 5_000, rowCap: 1_000, maxReplyBytes: 1024 * 1024 }, graph: { writes: { labels: [], relationships: [] } } });
    expect(fuelBudget(manifest, 'run')).toBe(DEFAULT_FUEL_BUDGET);
  });

  it('keeps a full manifest as declared', () => {
    const full = {
      ...base,
      description: 'scores capsules',
      phases: ['analysis', 'validation'],
      subscribes: ['capsule.created', 'insight.*'],
      capabilities: ['LOGGING', 'EVENT_PUBLISH'],
      trustRequired: 40,
      fuel: { run: 2_000_000, healthCheck: 10_000 },
      memoryPages: 32,
      timeoutMs: 1_500,
      database: { timeoutMs: 2_000, rowCap: 50, maxReplyBytes: 65_536 },
      graph: { writes: { labels: ['Capsule', 'Insight'], relationships: ['DERIVED_FROM'] } },
      dependencies: { 'ingestion-normalizer': '^1.0.0' },
    };
    const manifest = parseManifest(full);
    expect(manifest).toEqual(full);
    expect(fuelBudget(manifest, 'healthCheck')).toBe(10_000);
  });

  it.each([
    [null, '(root)'],
    [{ ...base, name: 'Bad Name' }, 'name'],
    [{ ...base, version: '1.2' }, 'version'],
    [{ ...base, version: 'v1.2.3' }, 'version'],
    [{ ...base, sha256: 'xyz' }, 'sha256'],
    [{ ...base, phases: ['digestion'] }, 'phases[0]'],
    [{ ...base, phases: 'analysis' }, 'phases'],
    [{ ...base, capabilities: ['ROOT_SHELL'] }, 'capabilities[0]'],
    [{ ...base, capabilities: ['LOGGING', 'LOGGING'] }, 'capabilities[1]'],
    [{ ...base, subscribes: ['Capsule Created'] }, 'subscribes[0]'],
    [{ ...base, trustRequired: 101 }, 'trustRequired'],
    [{ ...base, fuel: { run: -1 } }, 'fuel.run'],
    [{ ...base, fuel: { run: 1.5 } }, 'fuel.run'],
    [{ ...base, memoryPages: 0 }, 'memoryPages'],
    [{ ...base, memoryPages: 70_000 }, 'memoryPages'],
    [{ ...base, dependencies: { 'capsule-classifier': '^1.0.0' } }, 'dependencies.capsule-classifier'],
    [{ ...base, dependencies: { other: 42 } }, 'dependencies.other'],
    [{ ...base, database: { rowCap: 0 } }, 'database.rowCap'],
    [{ ...base, database: 'fast' }, 'database'],
    [{ ...base, timeoutMS: 1000 }, 'timeoutMS'],
    [{ ...base, memorypages: 2 }, 'memorypages'],
    [{ ...base, database: { rowcap: 2 } }, 'database.rowcap'],
    [{ ...base, build: 'yesterday' }, 'build'],
    [{ ...base, database: { maxReplyBytes: 5 * 1024 * 1024 } }, 'database.maxReplyBytes'],
    [{ ...base, graph: { writes: { labels: ['AuditEntry'] } } }, 'graph.writes.labels[0]'],
    [{ ...base, graph: { writes: { labels: ['ForgeAnything'] } } }, 'graph.writes.labels[0]'],
    [{ ...base, graph: { writes: { labels: ['Bad Label'] } } }, 'graph.writes.labels[0]'],
    [{ ...base, graph: { writes: { labels: ['A', 'A'] } } }, 'graph.writes.labels[1]'],
    [{ ...base, graph: { writes: { relationships: ['HOP'] } } }, 'graph.writes.relationships[0]'],
    [{ ...base, graph: { writes: { label: ['A'] } } }, 'graph.writes.label'],
    [{ ...base, graph: { reads: {} } }, 'graph.reads'],
    [{ ...base, graph: [] }, 'graph'],
  ])('rejects %j naming the field %s', (raw, field) => {
    expect(() => parseManifest(raw)).toThrow(expect.objectContaining({ code: 'INVALID_MANIFEST', details: { field } }) as Error);
  });
});

describe('strict manifests', () => {
  it.each([
    ['timeoutMS', 'timeoutMs'],
    ['memorypages', 'memoryPages'],
    ['capabilites', 'capabilities'],
    ['Phases', 'phases'],
    ['trust', undefined],
    ['color', undefined],
  ])('refuses the unknown field %s, suggesting %s', (key, suggestion) => {
    const attempt = () => parseManifest({ ...base, [key]: 1 });
    expect(attempt).toThrow(expect.objectContaining({ code: 'INVALID_MANIFEST', details: { field: key } }) as Error);
    expect(attempt).toThrow(suggestion === undefined ? /is not a manifest field\. The fields are/ : `did you mean "${suggestion}"?`);
  });

  it('accepts what forge-kernel build records about a build', () => {
    expect(parseManifest({ ...base, build: { compiler: 'assemblyscript@0.28.20', inputs: {} } }).name).toBe(base.name);
  });

  it('suggests only near names', () => {
    expect(closest('rowcap', ['timeoutMs', 'rowCap'])).toBe('rowCap');
    expect(closest('zzz', ['timeoutMs', 'rowCap'])).toBeUndefined();
  });
});

describe('parseManifestText', () => {
  const file = 'scorer.manifest.json';
  const text = `{\n  "name": "capsule-scorer",\n  "version": "1.0.0",\n  "sha256": "${'a'.repeat(64)}",\n  "fuel": { "run": 0 }\n}`;

  it('points a wrong value at the line and column of its key', () => {
    expect(() => parseManifestText({ file, text })).toThrow(expect.objectContaining({ message: expect.stringMatching(/^scorer\.manifest\.json:5:13: .*"fuel\.run"/) as string, details: expect.objectContaining({ field: 'fuel.run', line: 5, column: 13 }) as object }) as Error);
  });

  it('points a JSON syntax error at its place, and a missing field at the manifest', () => {
    expect(() => parseManifestText({ file, text: '{\n  "name": "x",\n  oops\n}' })).toThrow(/scorer\.manifest\.json:3:3: .*not valid JSON/);
    expect(() => parseManifestText({ file, text: '\n\n  {"version": "1.0.0"}' })).toThrow(/scorer\.manifest\.json:3:3: .*"name"/);
  });

  it('reads a manifest inside a larger text by its span, with positions in the whole text', () => {
    const source = `// header\n/* forge:manifest ${text.replace('"run": 0', '"run": 5')} */`;
    const start = source.indexOf('{');
    expect(parseManifestText({ file: 's.ts', text: source, start, end: source.lastIndexOf('*/') }).fuel).toEqual({ run: 5 });
    const wrong = source.replace('1.0.0', '1.0');
    expect(() => parseManifestText({ file: 's.ts', text: wrong, start, end: wrong.lastIndexOf('*/') })).toThrow(/^s\.ts:4:3: /);
  });

  it('refuses a key given twice (JSON.parse would keep the last silently)', () => {
    expect(() => parseManifestText({ file, text: text.replace('"version": "1.0.0"', '"version": "1.0.0", "version": "2.0.0"') })).toThrow(/:3:23: .*"version" is given twice/);
  });
});
