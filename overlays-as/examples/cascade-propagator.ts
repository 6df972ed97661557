/* forge:manifest
{
  "name": "cascade-propagator",
  "version": "1.0.0",
  "description": "Spreads insights: publishes insight.detected when a capsule's top category is strong, and insight.urgent for urgent capsules.",
  "phases": ["propagation"],
  "subscribes": ["insight.detected"],
  "capabilities": ["EVENT_PUBLISH", "LOGGING"],
  "fuel": { "run": 3000000 },
  "memoryPages": 16,
  "timeoutMs": 1000
}
*/
import { fail, input, log, ok, publish, Value } from "../sdk/index";

/** Category score from which an insight is worth spreading. */
const STRONG_SCORE: f64 = 2;

export function run(text: string): string {
  const data = input(text);
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
  // A cascade hop: an insight event about another capsule arrives as input.event.
  const event = data.get("event");
  if (event !== null && event.getString("type") == "insight.detected") log.info("insight from " + event.getString("source") + " reached " + id);
  return ok(Value.object().setNumber("propagated", insights.items.length).set("insights", insights));
}
