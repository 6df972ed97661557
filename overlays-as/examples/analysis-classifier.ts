/* forge:manifest
{
  "name": "analysis-classifier",
  "version": "1.0.0",
  "description": "Scores a capsule's words and word pairs into categories and derives a risk score.",
  "phases": ["analysis"],
  "capabilities": [],
  "fuel": { "run": 20000000 },
  "memoryPages": 64,
  "timeoutMs": 2000
}
*/
import { fail, input, ok, Value } from "forge-kernel/overlays-as/sdk";

const CATEGORIES: string[] = ["security", "finance", "health", "engineering", "governance"];
const KEYWORDS: string[][] = [
  ["password", "secret", "token", "breach", "vulnerability", "exploit", "malware", "phishing", "credential", "leak", "attack"],
  ["invoice", "payment", "revenue", "budget", "cost", "price", "tax", "bank", "transaction", "refund"],
  ["patient", "diagnosis", "medical", "clinical", "symptom", "treatment", "hospital", "prescription"],
  ["deploy", "build", "latency", "database", "api", "kernel", "server", "bug", "release", "pipeline"],
  ["policy", "compliance", "audit", "regulation", "approval", "consent", "gdpr", "governance", "license"],
];
/** Word pairs that weigh more than their words: "category index", "first second", weight. */
const BIGRAMS: string[] = ["0 data breach", "0 access token", "0 private key", "3 root cause", "4 personal data", "2 medical record", "1 wire transfer"];
const BIGRAM_WEIGHT: f64 = 3;
/** Risk added per point of each category (security weighs most). */
const RISK_WEIGHTS: f64[] = [0.12, 0.05, 0.08, 0.01, 0.03];
/** Authors below this trust add LOW_TRUST_RISK. */
const TRUST_FLOOR: f64 = 0.5;
const LOW_TRUST_RISK: f64 = 0.2;

function words(text: string): Array<string> {
  const out = new Array<string>();
  const lower = text.toLowerCase();
  let start = -1;
  for (let i = 0; i <= lower.length; i++) {
    const c = i < lower.length ? lower.charCodeAt(i) : 0x20;
    const letter = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39);
    if (letter && start < 0) start = i;
    if (!letter && start >= 0) {
      out.push(lower.substring(start, i));
      start = -1;
    }
  }
  return out;
}

export function run(text: string): string {
  const data = input(text);
  const capsule = data.get("capsule");
  if (capsule === null || !capsule.isObject()) return fail("capsule: missing, or not an object");
  const tokens = words(capsule.getString("content") + " " + capsule.getStrings("tags").join(" "));
  const scores = new Array<f64>(CATEGORIES.length);
  for (let t = 0; t < tokens.length; t++) {
    for (let c = 0; c < CATEGORIES.length; c++) if (KEYWORDS[c].includes(tokens[t])) scores[c] += 1;
    if (t + 1 < tokens.length) {
      const pair = tokens[t] + " " + tokens[t + 1];
      for (let b = 0; b < BIGRAMS.length; b++) {
        const entry = BIGRAMS[b];
        if (entry.substring(2) == pair) scores[I32.parseInt(entry.substring(0, 1))] += BIGRAM_WEIGHT;
      }
    }
  }
  let top = -1;
  let risk: f64 = 0;
  const categories = Value.array();
  for (let c = 0; c < CATEGORIES.length; c++) {
    if (scores[c] > 0) categories.push(Value.object().setString("name", CATEGORIES[c]).setNumber("score", scores[c]));
    if (scores[c] > 0 && (top < 0 || scores[c] > scores[top])) top = c;
    risk += scores[c] * RISK_WEIGHTS[c];
  }
  if (capsule.getNumber("trust", 0) < TRUST_FLOOR) risk += LOW_TRUST_RISK;
  risk = Math.min(1, Math.round(risk * 1000) / 1000);
  return ok(
    Value.object()
      .set("categories", categories)
      .set("top", top < 0 ? Value.null() : Value.fromString(CATEGORIES[top]))
      .setNumber("risk", risk)
      .setNumber("words", tokens.length),
  );
}
