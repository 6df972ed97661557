/**
 * Where things are in a JSON text, for error messages that point at a `file:line:column`. JSON.parse decides what
 * is valid JSON; this only walks text that JSON.parse has already accepted, to find where each member is.
 */

/** A position in a text, both 1-based, as editors show them. */
export interface TextPosition {
  line: number;
  column: number;
}

/** What a walk of a JSON value found: each member's offset, and the members whose key repeats in its object. */
export interface JsonMembers {
  /**
   * Offset in the text of every object key and array item, by path: `name`, `fuel.run`, `phases[0]`
   * (the root value is the path `''`).
   */
  offsets: Map<string, number>;
  /** Keys that appear twice in one object (JSON.parse silently keeps the last): path and offset of the repeat. */
  duplicates: { path: string; offset: number }[];
}

const WHITESPACE = new Set([' ', '\t', '\n', '\r']);

/** Walks the JSON value starting at `start` in `text`, which JSON.parse must have accepted. */
export function jsonMembers(text: string, start = 0): JsonMembers {
  const offsets = new Map<string, number>();
  const duplicates: { path: string; offset: number }[] = [];
  let i = start;
  const skipWhitespace = () => {
    while (i < text.length && WHITESPACE.has(text[i]!)) i++;
  };
  const readString = (): string => {
    const begin = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(begin, i)) as string;
  };
  const walk = (path: string): void => {
    skipWhitespace();
    offsets.set(path, i);
    const open = text[i];
    if (open === '{' || open === '[') {
      const close = open === '{' ? '}' : ']';
      const keys = new Set<string>();
      i++;
      skipWhitespace();
      for (let index = 0; text[i] !== close; index++) {
        skipWhitespace();
        if (open === '{') {
          const at = i;
          const key = readString();
          const member = path === '' ? key : `${path}.${key}`;
          if (keys.has(key)) duplicates.push({ path: member, offset: at });
          keys.add(key);
          skipWhitespace();
          i++; // the colon
          walk(member);
          offsets.set(member, at);
        } else {
          walk(`${path}[${index}]`);
        }
        skipWhitespace();
        if (text[i] === ',') i++;
        skipWhitespace();
      }
      i++;
      return;
    }
    if (open === '"') {
      readString();
      return;
    }
    while (i < text.length && !WHITESPACE.has(text[i]!) && text[i] !== ',' && text[i] !== '}' && text[i] !== ']') i++;
  };
  walk('');
  return { offsets, duplicates };
}

/** The line and column of `offset` in `text` (a leading byte-order mark takes no column, as in editors). */
export function positionAt(text: string, offset: number): TextPosition {
  let line = 1;
  let lineStart = text.startsWith('\uFEFF') && offset > 0 ? 1 : 0;
  for (let i = text.indexOf('\n'); i >= 0 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: offset - lineStart + 1 };
}

/** The offset JSON.parse's error message names (`… at position 42 …`), if it names one. */
export function parseErrorOffset(error: unknown): number | undefined {
  const match = /at position (\d+)/.exec(error instanceof Error ? error.message : String(error));
  return match === null ? undefined : Number(match[1]);
}
