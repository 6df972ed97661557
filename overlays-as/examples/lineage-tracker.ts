/* forge:manifest
{
  "name": "lineage-tracker",
  "version": "1.0.0",
  "description": "Records a settled capsule's lineage (links to its parents) and an audit entry with a digest of its content.",
  "phases": ["settlement"],
  "capabilities": ["EVENT_PUBLISH"],
  "fuel": { "run": 3000000 },
  "memoryPages": 16,
  "timeoutMs": 1000
}
*/
import { fail, input, ok, publish, Value } from "forge-kernel/overlays-as/sdk";

const PHASES: string[] = ["ingestion", "analysis", "validation", "consensus", "execution", "propagation"];

/** FNV-1a over the UTF-16 code units: a stable digest for the audit trail (not a security hash). */
function digest(text: string): string {
  let h: u32 = 2166136261;
  for (let i = 0; i < text.length; i++) {
    h ^= <u32>text.charCodeAt(i);
    h *= 16777619;
  }
  const hex = h.toString(16);
  return "fnv1a:" + "00000000".substring(hex.length) + hex;
}

export function run(text: string): string {
  const data = input(text);
  const capsule = data.get("capsule");
  if (capsule === null || !capsule.isObject()) return fail("capsule: missing, or not an object");
  const id = capsule.getString("id");
  const lineage = Value.array();
  const parents = capsule.getStrings("parents");
  for (let i = 0; i < parents.length; i++) {
    lineage.push(Value.object().setString("from", parents[i]).setString("to", id).setString("relation", "derived-from"));
  }
  const passed = new Array<string>();
  for (let i = 0; i < PHASES.length; i++) if (data.has(PHASES[i])) passed.push(PHASES[i]);
  const execution = data.get("execution");
  const audit = Value.object()
    .setString("capsuleId", id)
    .setString("author", capsule.getString("author"))
    .setString("status", execution !== null ? execution.getString("status", "unknown") : "unknown")
    .setString("contentDigest", digest(capsule.getString("content")))
    .set("phases", Value.strings(passed));
  publish("audit.recorded", audit);
  return ok(Value.object().set("lineage", lineage).set("audit", audit));
}
