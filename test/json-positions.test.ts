import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonMembers, positionAt } from '../src/json-positions.ts';

describe('jsonMembers', () => {
  it('finds every key and array item by path, escapes and nesting included', () => {
    const text = ' {"a\\"b": [1, {"c": "}]"}], "d": {"e": null}, "f": []}';
    const { offsets, duplicates } = jsonMembers(text);
    expect(offsets.get('')).toBe(1);
    expect(text.slice(offsets.get('a"b'))).toMatch(/^"a\\"b"/);
    expect(text.slice(offsets.get('a"b[0]'))).toMatch(/^1/);
    expect(text.slice(offsets.get('a"b[1].c'))).toMatch(/^"c"/);
    expect(text.slice(offsets.get('d.e'))).toMatch(/^"e"/);
    expect(text.slice(offsets.get('f'))).toMatch(/^"f"/);
    expect(duplicates).toEqual([]);
  });

  it('reports keys repeated within one object, not across objects', () => {
    const { duplicates } = jsonMembers('{"a": {"x": 1}, "b": {"x": 2}, "a": 3}');
    expect(duplicates.map((d) => d.path)).toEqual(['a']);
  });

  it('walks any JSON that JSON.parse accepts, finding every top-level key of an object', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), fc.integer({ min: 0, max: 4 }), (value, indent) => {
        const text = JSON.stringify(value, null, indent);
        const { offsets } = jsonMembers(text);
        for (const key of Object.keys(value)) {
          if (key.includes('.') || key.includes('[')) continue;
          expect(text.startsWith(JSON.stringify(key), offsets.get(key))).toBe(true);
        }
      }),
    );
  });
});

describe('positionAt', () => {
  it('counts lines and columns from 1', () => {
    expect(positionAt('ab\ncd', 0)).toEqual({ line: 1, column: 1 });
    expect(positionAt('ab\ncd', 4)).toEqual({ line: 2, column: 2 });
  });
});
