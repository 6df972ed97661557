/* forge:manifest
{
  "name": "cascade-propagator",
  "version": "1.0.0",
  "description": "Spreads insights: publishes insight.detected when a capsule's top category is strong, insight.urgent for urgent capsules, and relays insights it receives while they are still strong.",
  "phases": ["propagation"],
  "subscribes": ["insight.detected"],
  "capabilities": ["EVENT_PUBLISH", "LOGGING"],
  "fuel": { "run": 3000000 },
  "memoryPages": 16,
  "timeoutMs": 1000
}
*/
import { fail, input, log, ok, publish, Value } from "forge-kernel/overlays-as/sdk";

/** Category score from which an insight is worth spreading. */
const STRONG_SCORE: f64 = 2;

export function run(text: string): string {
  const data = input(text);
  // A cascade hop: an insight about a capsule arrives as input.event; pass it on, weaker, while it is still strong.
  const event = data.get("event");
  if (event !== null && event.isObject()) {
    const payload = event.get("payload");
    const strength = payload !== null ? payload.getNumber("strength", 0) : 0;
    const about = payload !== null ? payload.getString("capsuleId", "") : "";
    log.info("insight " + event.getString("type") + " from " + event.getString("source") + " reached the propagator");
    if (strength - 1 >= STRONG_SCORE) {
      publish("insight.detected", Value.object().setString("capsuleId", about).setString("pattern", "relayed").setNumber("strength", strength - 1));
      return ok(Value.object().setNumber("propagated", 1).setBool("relayed", true));
    }
    return ok(Value.object().setNumber("propagated", 0).setBool("relayed", false));
  }
  const capsule = data.get("capsule");
  if (capsule === null || !capsule.isObject()) return fail("capsule: missing, or not an object");
  const id = capsule.getString("id");
  const insights = Value.array();
  const analysis = data.get("analysis");
  if (analysis !== null) {
    const top = analysis.getString("top");
    const categories = analysis.getArray("categories");
    for (let i = 0; i < categories.length; i++) {
      const c = categories[i];
      if (c.getString("name") == top && c.getNumber("score") >= STRONG_SCORE) {
        const insight = Value.object().setString("capsuleId", id).setString("pattern", "strong-" + top).setString("category", top).setNumber("strength", c.getNumber("score"));
        publish("insight.detected", insight);
        insights.push(insight);
      }
    }
  }
  if (capsule.getStrings("tags").includes("urgent")) {
    const insight = Value.object().setString("capsuleId", id).setString("pattern", "urgent");
    publish("insight.urgent", insight);
    insights.push(insight);
  }
  return ok(Value.object().setNumber("propagated", insights.items.length).set("insights", insights));
}
