import { describe, expect, it } from 'vitest';
import { DEFAULT_FUEL_BUDGET, DEFAULT_MEMORY_PAGES, fuelBudget, parseManifest } from '../src/manifest.ts';

const base = { name: 'capsule-classifier', version: '1.2.3', sha256: 'a'.repeat(64) };

describe('parseManifest', () => {
  it('fills in defaults for a minimal manifest', () => {
    const manifest = parseManifest(base);
    expect(manifest).toMatchObject({ ...base, phases: [], subscribes: [], capabilities: [], trustRequired: 0, memoryPages: DEFAULT_MEMORY_PAGES, dependencies: {}, database: { timeoutMs: 5_000, rowCap: 1_000 } });
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
      database: { timeoutMs: 2_000, rowCap: 50 },
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
  ])('rejects %j naming the field %s', (raw, field) => {
    expect(() => parseManifest(raw)).toThrow(expect.objectContaining({ code: 'INVALID_MANIFEST', details: { field } }) as Error);
  });
});
