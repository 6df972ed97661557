import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonNestsDeeperThan, MAX_JSON_NESTING } from '../src/json-nesting.ts';

/** The nesting of a parsed JSON value, counted by walking it. */
function depthOf(value: unknown): number {
  if (Array.isArray(value)) return 1 + Math.max(0, ...value.map(depthOf));
  if (typeof value === 'object' && value !== null) return 1 + Math.max(0, ...Object.values(value).map(depthOf));
  return 0;
}

describe('jsonNestsDeeperThan', () => {
  it(`refuses past ${MAX_JSON_NESTING} levels of arrays and objects and takes ${MAX_JSON_NESTING}`, () => {
    const nested = (levels: number, open: string, close: string) => open.repeat(levels) + close.repeat(levels);
    expect(jsonNestsDeeperThan(nested(MAX_JSON_NESTING, '[', ']'))).toBe(false);
    expect(jsonNestsDeeperThan(nested(MAX_JSON_NESTING + 1, '[', ']'))).toBe(true);
    expect(jsonNestsDeeperThan(`${'{"a":'.repeat(MAX_JSON_NESTING + 1)}1${'}'.repeat(MAX_JSON_NESTING + 1)}`)).toBe(true);
    expect(jsonNestsDeeperThan(nested(32_768, '[', ']'))).toBe(true);
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    const text = JSON.stringify({ s: `"${'['.repeat(1_000)}\\"{{{` });
    expect(jsonNestsDeeperThan(text, 1)).toBe(false);
    expect(jsonNestsDeeperThan(JSON.stringify([[`\\`, '[[[']]), 1)).toBe(true);
  });

  it('agrees with the depth of the parsed value for any JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), fc.integer({ min: 0, max: 8 }), (value, limit) => {
        const text = JSON.stringify(value);
        expect(jsonNestsDeeperThan(text, limit)).toBe(depthOf(JSON.parse(text)) > limit);
      }),
    );
  });
});
