// Fuel-overhead benchmark workloads: each export runs a fixed amount of work chosen by `n`.

/** Tight integer loop: FNV-1a style hashing of the loop counter. */
export function hashLoop(n: i32): i32 {
  let h: u32 = 2166136261;
  for (let i = 0; i < n; i++) {
    h ^= <u32>i;
    h *= 16777619;
  }
  return <i32>h;
}

/** 64-bit arithmetic loop (xorshift). */
export function i64Loop(n: i32): i64 {
  let x: u64 = 88172645463325252;
  let acc: u64 = 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    acc += x;
  }
  return <i64>acc;
}

/** Call-heavy recursion. */
export function fib(n: i32): i32 {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/** Memory copy: copies a buffer back and forth `n` times. */
export function memoryCopy(n: i32): i32 {
  const size = 4096;
  const a = heap.alloc(size);
  const b = heap.alloc(size);
  memory.fill(a, 7, size);
  for (let i = 0; i < n; i++) {
    memory.copy(b, a, size);
    store<u8>(b + (i & 4095), <u8>i);
    memory.copy(a, b, size);
  }
  const r = load<u8>(a + 17);
  heap.free(a);
  heap.free(b);
  return r;
}

/** String work: builds a JSON-like string and scans it for a pattern, `n` times. */
export function stringScan(n: i32): i32 {
  let text = '';
  for (let i = 0; i < 64; i++) text += '{"key":' + i.toString() + ',"tag":"capsule"},';
  let hits = 0;
  for (let i = 0; i < n; i++) {
    let at = 0;
    while ((at = text.indexOf('capsule', at)) >= 0) {
      hits++;
      at += 7;
    }
  }
  return hits;
}
