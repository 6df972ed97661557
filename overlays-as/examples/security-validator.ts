/* forge:manifest
{
  "name": "security-validator",
  "version": "1.0.0",
  "description": "Finds secrets (cloud keys, private keys, API tokens, passwords) and personal data (e-mail, phone, card and social security numbers) in a capsule, and checks its author's trust.",
  "phases": ["validation"],
  "capabilities": ["LOGGING"],
  "trustRequired": 10,
  "fuel": { "run": 20000000 },
  "memoryPages": 64,
  "timeoutMs": 2000
}
*/
import { fail, input, log, ok, Value } from "forge-kernel/overlays-as/sdk";

/** Authors below this trust fail validation. */
const MIN_AUTHOR_TRUST: f64 = 0.3;

function isDigit(c: i32): bool { return c >= 0x30 && c <= 0x39; }
function isUpperOrDigit(c: i32): bool { return (c >= 0x41 && c <= 0x5a) || isDigit(c); }
function isAlnum(c: i32): bool { return isUpperOrDigit(c) || (c >= 0x61 && c <= 0x7a); }
function isEmailChar(c: i32): bool { return isAlnum(c) || c == 0x2e || c == 0x5f || c == 0x2d || c == 0x2b; }

/** How many characters from `at` satisfy `test`. */
function run_(text: string, at: i32, test: (c: i32) => bool): i32 {
  let n = 0;
  while (at + n < text.length && test(text.charCodeAt(at + n))) n++;
  return n;
}

function finding(type: string, category: string, at: i32): Value {
  return Value.object().setString("type", type).setString("category", category).setNumber("at", at);
}

/** Luhn checksum over the digits of a candidate card number. */
function luhn(digits: string): bool {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 0x30;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 == 0;
}

function scanSecrets(text: string, out: Value): void {
  let at = text.indexOf("AKIA");
  while (at >= 0) {
    if (run_(text, at + 4, isUpperOrDigit) >= 16) out.push(finding("aws-access-key", "secret", at));
    at = text.indexOf("AKIA", at + 4);
  }
  at = text.indexOf("-----BEGIN");
  if (at >= 0 && text.indexOf("PRIVATE KEY", at) > at) out.push(finding("private-key", "secret", at));
  for (let p = 0; p < 2; p++) {
    const prefix = p == 0 ? "sk_live_" : "ghp_";
    at = text.indexOf(prefix);
    while (at >= 0) {
      if (run_(text, at + prefix.length, isAlnum) >= 16) out.push(finding(p == 0 ? "api-key" : "github-token", "secret", at));
      at = text.indexOf(prefix, at + prefix.length);
    }
  }
  const lower = text.toLowerCase();
  at = lower.indexOf("password");
  while (at >= 0) {
    let i = at + 8;
    while (i < text.length && text.charCodeAt(i) == 0x20) i++;
    if (i < text.length && (text.charCodeAt(i) == 0x3d || text.charCodeAt(i) == 0x3a)) {
      i++;
      while (i < text.length && text.charCodeAt(i) == 0x20) i++;
      if (i < text.length && text.charCodeAt(i) > 0x20) out.push(finding("password", "secret", at));
    }
    at = lower.indexOf("password", at + 8);
  }
}

function scanPersonalData(text: string, out: Value): void {
  // e-mail: local@domain.tld
  let at = text.indexOf("@");
  while (at >= 0) {
    let start = at;
    while (start > 0 && isEmailChar(text.charCodeAt(start - 1))) start--;
    let domain = run_(text, at + 1, isEmailChar);
    // A sentence's full stop right after the address is not part of its domain ("mail ada@example.com.").
    while (domain > 0 && text.charCodeAt(at + domain) == 0x2e) domain--;
    const host = text.substring(at + 1, at + 1 + domain);
    if (at - start > 0 && host.indexOf(".") > 0 && host.lastIndexOf(".") < host.length - 2) out.push(finding("email", "pii", start));
    at = text.indexOf("@", at + 1);
  }
  // digit runs (spaces and dashes allowed inside): social security numbers, cards, phone numbers
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (!isDigit(c) && !(c == 0x2b && i + 1 < text.length && isDigit(text.charCodeAt(i + 1)))) {
      i++;
      continue;
    }
    const start = i;
    const digits = new Array<string>();
    let shape = "";
    while (i < text.length) {
      const d = text.charCodeAt(i);
      if (isDigit(d)) {
        digits.push(String.fromCharCode(d));
        shape += "d";
      } else if ((d == 0x20 || d == 0x2d) && i + 1 < text.length && isDigit(text.charCodeAt(i + 1)) && digits.length > 0) {
        shape += "-";
      } else if (!(d == 0x2b && i == start)) break;
      i++;
    }
    const number = digits.join("");
    if (shape == "ddd-dd-dddd") out.push(finding("ssn", "pii", start));
    else if (number.length >= 13 && number.length <= 19 && luhn(number)) out.push(finding("card-number", "pii", start));
    else if (number.length >= 10 && number.length <= 15) out.push(finding("phone", "pii", start));
  }
}

export function run(text: string): string {
  const data = input(text);
  const capsule = data.get("capsule");
  if (capsule === null || !capsule.isObject()) return fail("capsule: missing, or not an object");
  const content = capsule.getString("content");
  const findings = Value.array();
  scanSecrets(content, findings);
  scanPersonalData(content, findings);
  const trust = capsule.getNumber("trust", 0);
  const trustOk = trust >= MIN_AUTHOR_TRUST;
  if (!trustOk) findings.push(finding("low-trust-author", "trust", -1));
  let secrets = 0;
  let personal = 0;
  for (let f = 0; f < findings.items.length; f++) {
    const category = findings.items[f].getString("category");
    if (category == "secret") secrets++;
    if (category == "pii") personal++;
  }
  if (secrets > 0) log.warn("secrets found in capsule " + capsule.getString("id"));
  return ok(
    Value.object()
      .setBool("passed", secrets == 0 && trustOk)
      .setNumber("secrets", secrets)
      .setNumber("personalData", personal)
      .setBool("trustOk", trustOk)
      .set("findings", findings),
  );
}
