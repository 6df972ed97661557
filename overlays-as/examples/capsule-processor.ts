/* forge:manifest
{
  "name": "capsule-processor",
  "version": "1.0.0",
  "description": "Derives the state change a consensus decision implies (store or quarantine) and, when the run has a graph, writes it.",
  "phases": ["execution"],
  "capabilities": ["LOGGING", "DATABASE_WRITE"],
  "trustRequired": 20,
  "fuel": { "run": 5000000 },
  "memoryPages": 32,
  "timeoutMs": 5000,
  "graph": { "writes": { "labels": ["Capsule"], "relationships": [] } },
  "dependencies": { "governance-voter": "^1.0.0" }
}
*/
import { dbWrite, fail, input, log, Mutations, ok, Value } from "forge-kernel/overlays-as/sdk";

export function run(text: string): string {
  const data = input(text);
  const capsule = data.get("capsule");
  if (capsule === null || !capsule.isObject()) return fail("capsule: missing, or not an object");
  const consensus = data.get("consensus");
  // A human decision (after an escalation) takes precedence over the voter's.
  const human = data.get("decision");
  let decision = consensus !== null ? consensus.getString("decision") : "";
  if (human !== null && human.isObject()) decision = human.getBool("approve", false) ? "approve" : "reject";
  if (decision == "escalate") return fail("consensus escalated and no decision was made");
  if (decision != "approve" && decision != "reject") return fail("consensus: no decision in the run data");

  const analysis = data.get("analysis");
  const category = analysis !== null ? analysis.getString("top", "uncategorized") : "uncategorized";
  const status = decision == "approve" ? "stored" : "quarantined";
  const change = Value.object()
    .setString("op", decision == "approve" ? "store" : "quarantine")
    .setString("capsuleId", capsule.getString("id"))
    .setString("status", status)
    .setString("category", category);

  const context = data.get("context");
  let written = false;
  if (context !== null && context.getBool("graph", false)) {
    const fields = Value.object()
      .setString("kind", capsule.getString("kind"))
      .setString("author", capsule.getString("author"))
      .setString("category", category)
      .setString("status", status);
    dbWrite(new Mutations().merge("Capsule", Value.object().setString("id", capsule.getString("id")), fields));
    written = true;
    log.info("wrote capsule " + capsule.getString("id") + " as " + status);
  }
  return ok(change.setBool("written", written));
}
