/* forge:manifest
{
  "name": "governance-voter",
  "version": "1.0.0",
  "description": "Votes on a capsule at consensus: approves low risk, rejects failed validation, and asks for a human decision above the risk threshold or when personal data is present.",
  "phases": ["consensus"],
  "capabilities": [],
  "fuel": { "run": 2000000 },
  "memoryPages": 16,
  "timeoutMs": 1000,
  "dependencies": { "analysis-classifier": "^1.0.0", "security-validator": "^1.0.0" }
}
*/
import { fail, input, ok, Value } from "forge-kernel/overlays-as/sdk";

/** Risk at or above which a human decides (overridable by the run's policy.escalateAbove). */
const ESCALATE_ABOVE: f64 = 0.4;

function vote(decision: string, reason: string, risk: f64): string {
  return ok(Value.object().setString("decision", decision).setBool("needsDecision", decision == "escalate").setString("reason", reason).setNumber("risk", risk));
}

export function run(text: string): string {
  const data = input(text);
  const analysis = data.get("analysis");
  const validation = data.get("validation");
  if (analysis === null || !analysis.isObject()) return fail("analysis: missing; the voter needs the classifier's output");
  if (validation === null || !validation.isObject()) return fail("validation: missing; the voter needs the validator's output");
  const risk = analysis.getNumber("risk", 1);
  const policy = data.get("policy");
  const threshold = policy !== null ? policy.getNumber("escalateAbove", ESCALATE_ABOVE) : ESCALATE_ABOVE;
  if (!validation.getBool("passed", false)) {
    const reason = validation.getNumber("secrets", 0) > 0 ? "secrets in content" : "author not trusted";
    return vote("reject", reason, risk);
  }
  if (risk >= threshold) return vote("escalate", "risk " + risk.toString() + " at or above " + threshold.toString(), risk);
  if (validation.getNumber("personalData", 0) > 0) return vote("escalate", "personal data present", risk);
  return vote("approve", "low risk", risk);
}
