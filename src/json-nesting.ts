/**
 * The deepest nesting of arrays and objects the kernel takes in JSON an overlay hands it (outputs, event payloads,
 * graph parameters and mutations). Real data nests a handful of levels; past a few thousand, serializing it again
 * (`JSON.stringify`, the strict worker's channel, the bus, the stores) overflows the stack.
 */
export const MAX_JSON_NESTING = 128;

/**
 * True when the arrays and objects of the JSON `text` nest deeper than `limit`. Counted on the text, without
 * recursion or parsing, and stopping at the first level too deep; for text that is not JSON the answer means
 * nothing (`JSON.parse` refuses it anyway).
 */
export function jsonNestsDeeperThan(text: string, limit: number = MAX_JSON_NESTING): boolean {
  // Nesting past `limit` takes more than `limit` brackets: shorter text cannot.
  if (text.length <= limit) return false;
  // Nor can text with at most `limit` opening brackets in all: counted with native scans, which is what most text
  // needs (the character walk below costs more than the rest of a small call).
  let opens = 0;
  for (const bracket of ['[', '{']) {
    for (let at = text.indexOf(bracket); at !== -1 && opens <= limit; at = text.indexOf(bracket, at + 1)) opens++;
  }
  if (opens <= limit) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}
