/* forge:manifest
{
  "name": "ingestion-normalizer",
  "version": "1.0.0",
  "description": "Validates a capsule and normalizes it: collapsed whitespace, lower-case kind and tags, sorted unique tags and parents.",
  "phases": ["ingestion"],
  "capabilities": ["LOGGING"],
  "fuel": { "run": 5000000 },
  "memoryPages": 32,
  "timeoutMs": 1000
}
*/
import { fail, input, log, ok, Value } from "forge-kernel/overlays-as/sdk";

const KINDS: string[] = ["note", "insight", "dataset", "decision", "observation"];
/** Longest content accepted (characters). */
const MAX_CONTENT: i32 = 65536;
const MAX_ID: i32 = 128;
const MAX_TAGS: i32 = 32;

/** Collapses runs of whitespace to one space and trims the ends. */
function collapse(text: string): string {
  const parts = new Array<string>();
  let start = -1;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x20;
    const space = c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d;
    if (!space && start < 0) start = i;
    if (space && start >= 0) {
      parts.push(text.substring(start, i));
      start = -1;
    }
  }
  return parts.join(" ");
}

/** Trims, lower-cases, drops empties and duplicates, and sorts. */
function normalizeList(items: Array<string>, lower: bool): Array<string> {
  const out = new Array<string>();
  for (let i = 0; i < items.length; i++) {
    let item = items[i].trim();
    if (lower) item = item.toLowerCase();
    if (item.length > 0 && !out.includes(item)) out.push(item);
  }
  out.sort();
  return out;
}

export function run(text: string): string {
  const data = input(text);
  const capsule = data.get("capsule");
  if (capsule === null || !capsule.isObject()) return fail("capsule: missing, or not an object");

  const id = capsule.getString("id").trim();
  if (id.length == 0 || id.length > MAX_ID) return fail("capsule.id: must be a non-empty string of at most 128 characters");
  const kind = capsule.getString("kind").trim().toLowerCase();
  if (!KINDS.includes(kind)) return fail("capsule.kind: must be one of " + KINDS.join(", "));
  const rawContent = capsule.get("content");
  if (rawContent === null || !rawContent.isString()) return fail("capsule.content: must be a string");
  const content = collapse(rawContent.string);
  if (content.length == 0) return fail("capsule.content: is empty");
  if (content.length > MAX_CONTENT) return fail("capsule.content: longer than 65536 characters");
  const author = capsule.getString("author").trim();
  if (author.length == 0) return fail("capsule.author: must be a non-empty string");
  const trust = capsule.get("trust");
  if (trust === null || !trust.isNumber() || trust.number < 0 || trust.number > 1) return fail("capsule.trust: must be a number from 0 to 1");
  const tagsValue = capsule.get("tags");
  if (tagsValue !== null && !tagsValue.isArray()) return fail("capsule.tags: must be an array of strings");
  const tags = normalizeList(capsule.getStrings("tags"), true);
  if (tags.length > MAX_TAGS) return fail("capsule.tags: more than 32 tags");
  const parents = normalizeList(capsule.getStrings("parents"), false);
  if (parents.includes(id)) return fail("capsule.parents: a capsule cannot be its own parent");

  let changes = 0;
  if (content != rawContent.string) changes++;
  if (kind != capsule.getString("kind")) changes++;
  if (tags.length != capsule.getArray("tags").length) changes++;
  const normalized = Value.object()
    .setString("id", id)
    .setString("kind", kind)
    .setString("content", content)
    .setString("author", author)
    .setNumber("trust", trust.number)
    .set("tags", Value.strings(tags))
    .set("parents", Value.strings(parents));
  log.debug("normalized " + id + " with " + changes.toString() + " change(s)");
  return ok(Value.object().set("capsule", normalized).setNumber("changes", changes));
}

export function healthCheck(text: string): string {
  return ok(Value.object().setString("status", "ok"));
}
