// JSON for overlays: a small value tree, a parser and a serializer. Objects keep their keys in insertion order,
// so the same input always serializes to the same text (and burns the same fuel).

/** What a JSON value is. */
export enum Kind {
  Null,
  Bool,
  Number,
  String,
  Array,
  Object,
}

/** Deepest nesting the parser accepts: deeper input is refused instead of exhausting the call-depth limit. */
const MAX_DEPTH: i32 = 64;

/** A JSON value. Build with the static constructors, read with the typed getters, print with `toString()`. */
export class Value {
  kind: Kind = Kind.Null;
  bool: bool = false;
  number: f64 = 0;
  string: string = "";
  items: Array<Value> = [];
  keys: Array<string> = [];
  values: Array<Value> = [];

  static null(): Value {
    return new Value();
  }
  static fromBool(b: bool): Value {
    const v = new Value();
    v.kind = Kind.Bool;
    v.bool = b;
    return v;
  }
  static fromNumber(n: f64): Value {
    const v = new Value();
    v.kind = Kind.Number;
    v.number = n;
    return v;
  }
  static fromString(s: string): Value {
    const v = new Value();
    v.kind = Kind.String;
    v.string = s;
    return v;
  }
  static array(): Value {
    const v = new Value();
    v.kind = Kind.Array;
    return v;
  }
  static object(): Value {
    const v = new Value();
    v.kind = Kind.Object;
    return v;
  }
  /** An array of strings. */
  static strings(list: Array<string>): Value {
    const v = Value.array();
    for (let i = 0; i < list.length; i++) v.items.push(Value.fromString(list[i]));
    return v;
  }

  isNull(): bool { return this.kind == Kind.Null; }
  isString(): bool { return this.kind == Kind.String; }
  isNumber(): bool { return this.kind == Kind.Number; }
  isBool(): bool { return this.kind == Kind.Bool; }
  isArray(): bool { return this.kind == Kind.Array; }
  isObject(): bool { return this.kind == Kind.Object; }

  /** The member `key` of an object, or null. */
  get(key: string): Value | null {
    if (this.kind != Kind.Object) return null;
    for (let i = 0; i < this.keys.length; i++) if (this.keys[i] == key) return this.values[i];
    return null;
  }
  has(key: string): bool {
    return this.get(key) !== null;
  }
  /** The string member `key`, or `fallback` when it is missing or not a string. */
  getString(key: string, fallback: string = ""): string {
    const v = this.get(key);
    return v !== null && v.kind == Kind.String ? v.string : fallback;
  }
  getNumber(key: string, fallback: f64 = 0): f64 {
    const v = this.get(key);
    return v !== null && v.kind == Kind.Number ? v.number : fallback;
  }
  getBool(key: string, fallback: bool = false): bool {
    const v = this.get(key);
    return v !== null && v.kind == Kind.Bool ? v.bool : fallback;
  }
  /** The items of the array member `key` (empty when missing or not an array). */
  getArray(key: string): Array<Value> {
    const v = this.get(key);
    return v !== null && v.kind == Kind.Array ? v.items : [];
  }
  /** The string items of the array member `key`, skipping items that are not strings. */
  getStrings(key: string): Array<string> {
    const items = this.getArray(key);
    const out = new Array<string>();
    for (let i = 0; i < items.length; i++) if (items[i].kind == Kind.String) out.push(items[i].string);
    return out;
  }

  /** Sets (or replaces) an object member; returns this object for chaining. */
  set(key: string, value: Value): Value {
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] == key) {
        this.values[i] = value;
        return this;
      }
    }
    this.keys.push(key);
    this.values.push(value);
    return this;
  }
  setString(key: string, s: string): Value { return this.set(key, Value.fromString(s)); }
  setNumber(key: string, n: f64): Value { return this.set(key, Value.fromNumber(n)); }
  setBool(key: string, b: bool): Value { return this.set(key, Value.fromBool(b)); }
  /** Appends to an array; returns this array for chaining. */
  push(value: Value): Value {
    this.items.push(value);
    return this;
  }

  /** Compact JSON text. */
  toString(): string {
    const out = new Array<string>();
    write(this, out);
    return out.join("");
  }
}

function write(v: Value, out: Array<string>): void {
  switch (v.kind) {
    case Kind.Null: out.push("null"); break;
    case Kind.Bool: out.push(v.bool ? "true" : "false"); break;
    case Kind.Number: out.push(numberText(v.number)); break;
    case Kind.String: out.push(quote(v.string)); break;
    case Kind.Array: {
      out.push("[");
      for (let i = 0; i < v.items.length; i++) {
        if (i > 0) out.push(",");
        write(v.items[i], out);
      }
      out.push("]");
      break;
    }
    default: {
      out.push("{");
      for (let i = 0; i < v.keys.length; i++) {
        if (i > 0) out.push(",");
        out.push(quote(v.keys[i]));
        out.push(":");
        write(v.values[i], out);
      }
      out.push("}");
    }
  }
}

function numberText(n: f64): string {
  if (!isFinite(n)) return "null";
  if (n == Math.floor(n) && Math.abs(n) < 9007199254740992) return (<i64>n).toString();
  return n.toString();
}

const HEX = "0123456789abcdef";

/** A JSON string literal for `s`. */
export function quote(s: string): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c == 0x22 || c == 0x5c) {
      plain = false;
      break;
    }
  }
  if (plain) return '"' + s + '"';
  const parts = new Array<string>();
  parts.push('"');
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c != 0x22 && c != 0x5c) continue;
    if (i > start) parts.push(s.substring(start, i));
    if (c == 0x22) parts.push('\\"');
    else if (c == 0x5c) parts.push("\\\\");
    else if (c == 0x0a) parts.push("\\n");
    else if (c == 0x0d) parts.push("\\r");
    else if (c == 0x09) parts.push("\\t");
    else parts.push("\\u00" + HEX.charAt(c >> 4) + HEX.charAt(c & 15));
    start = i + 1;
  }
  if (start < s.length) parts.push(s.substring(start));
  parts.push('"');
  return parts.join("");
}

/** Why the last `parse` failed ("" after a success). */
export let parseError: string = "";

class Parser {
  text: string;
  at: i32 = 0;
  constructor(text: string) {
    this.text = text;
  }

  fail(message: string): Value | null {
    if (parseError.length == 0) parseError = message + " at character " + this.at.toString();
    return null;
  }

  skipSpace(): void {
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
      this.at++;
    }
  }

  value(depth: i32): Value | null {
    if (depth > MAX_DEPTH) return this.fail("nesting deeper than " + MAX_DEPTH.toString());
    this.skipSpace();
    if (this.at >= this.text.length) return this.fail("unexpected end");
    const c = this.text.charCodeAt(this.at);
    if (c == 0x7b) return this.object(depth);
    if (c == 0x5b) return this.array(depth);
    if (c == 0x22) {
      const s = this.str();
      return s === null ? null : Value.fromString(s);
    }
    if (this.word("true")) return Value.fromBool(true);
    if (this.word("false")) return Value.fromBool(false);
    if (this.word("null")) return Value.null();
    return this.num();
  }

  word(w: string): bool {
    if (this.text.substr(this.at, w.length) != w) return false;
    this.at += w.length;
    return true;
  }

  object(depth: i32): Value | null {
    const obj = Value.object();
    this.at++;
    this.skipSpace();
    if (this.at < this.text.length && this.text.charCodeAt(this.at) == 0x7d) {
      this.at++;
      return obj;
    }
    while (true) {
      this.skipSpace();
      if (this.at >= this.text.length || this.text.charCodeAt(this.at) != 0x22) return this.fail("expected a member name");
      const key = this.str();
      if (key === null) return null;
      this.skipSpace();
      if (this.at >= this.text.length || this.text.charCodeAt(this.at) != 0x3a) return this.fail("expected ':'");
      this.at++;
      const member = this.value(depth + 1);
      if (member === null) return null;
      obj.set(key, member);
      this.skipSpace();
      if (this.at >= this.text.length) return this.fail("unterminated object");
      const c = this.text.charCodeAt(this.at++);
      if (c == 0x7d) return obj;
      if (c != 0x2c) return this.fail("expected ',' or '}'");
    }
    return obj;
  }

  array(depth: i32): Value | null {
    const arr = Value.array();
    this.at++;
    this.skipSpace();
    if (this.at < this.text.length && this.text.charCodeAt(this.at) == 0x5d) {
      this.at++;
      return arr;
    }
    while (true) {
      const item = this.value(depth + 1);
      if (item === null) return null;
      arr.items.push(item);
      this.skipSpace();
      if (this.at >= this.text.length) return this.fail("unterminated array");
      const c = this.text.charCodeAt(this.at++);
      if (c == 0x5d) return arr;
      if (c != 0x2c) return this.fail("expected ',' or ']'");
    }
    return arr;
  }

  str(): string | null {
    this.at++;
    const parts = new Array<string>();
    let start = this.at;
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if (c == 0x22) {
        parts.push(this.text.substring(start, this.at));
        this.at++;
        return parts.join("");
      }
      if (c < 0x20) {
        this.fail("control character in a string");
        return null;
      }
      if (c == 0x5c) {
        parts.push(this.text.substring(start, this.at));
        if (this.at + 1 >= this.text.length) break;
        const e = this.text.charCodeAt(this.at + 1);
        this.at += 2;
        if (e == 0x22) parts.push('"');
        else if (e == 0x5c) parts.push("\\");
        else if (e == 0x2f) parts.push("/");
        else if (e == 0x62) parts.push("\b");
        else if (e == 0x66) parts.push("\f");
        else if (e == 0x6e) parts.push("\n");
        else if (e == 0x72) parts.push("\r");
        else if (e == 0x74) parts.push("\t");
        else if (e == 0x75) {
          if (this.at + 4 > this.text.length) break;
          const code = I32.parseInt(this.text.substr(this.at, 4), 16);
          if (isNaN(<f64>code) || code < 0) {
            this.fail("bad \\u escape");
            return null;
          }
          parts.push(String.fromCharCode(code));
          this.at += 4;
        } else {
          this.fail("bad escape");
          return null;
        }
        start = this.at;
        continue;
      }
      this.at++;
    }
    this.fail("unterminated string");
    return null;
  }

  num(): Value | null {
    const start = this.at;
    if (this.at < this.text.length && this.text.charCodeAt(this.at) == 0x2d) this.at++;
    let digits = 0;
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if ((c >= 0x30 && c <= 0x39) || c == 0x2e || c == 0x65 || c == 0x45 || c == 0x2b || c == 0x2d) {
        if (c >= 0x30 && c <= 0x39) digits++;
        this.at++;
      } else break;
    }
    if (digits == 0) return this.fail("unexpected character");
    const n = F64.parseFloat(this.text.substring(start, this.at));
    if (isNaN(n)) return this.fail("malformed number");
    return Value.fromNumber(n);
  }
}

/** Parses JSON text; returns null (and sets `parseError`) when it is not JSON. */
export function parse(text: string): Value | null {
  parseError = "";
  const parser = new Parser(text);
  const v = parser.value(0);
  if (v === null) return null;
  parser.skipSpace();
  if (parser.at != text.length) return parser.fail("trailing characters");
  return v;
}
