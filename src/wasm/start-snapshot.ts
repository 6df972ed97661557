/**
 * Memory is compared, kept and restored in chunks of this many bytes: small enough that a start function writing a
 * word at the far end of a large memory costs one chunk, large enough that the comparison runs as `memcmp`.
 */
const CHUNK_BYTES = 4096;
const ZERO_CHUNK = Buffer.alloc(CHUNK_BYTES);
/**
 * Bytes compared between two turns of the event loop while an overlay is loaded: reading memory no one has touched
 * costs the page faults, ≈ 0.9 s for 256 MiB here (≈ 15 ms a slice), which must not stall the kernel's thread in one piece.
 */
const SCAN_SLICE_BYTES = 4 * 1024 * 1024;

/** A stretch of memory, `[offset, offset + length)`. */
export interface Span {
  offset: number;
  length: number;
}

/** Memory contents kept in a snapshot: the bytes of one span. */
export interface Run {
  offset: number;
  bytes: Uint8Array;
}

/** The chunks of `memory` holding a nonzero byte, merged into spans of adjacent chunks; yields now and then. */
export async function nonzeroSpans(memory: ArrayBuffer): Promise<Span[]> {
  const view = Buffer.from(memory);
  const spans: Span[] = [];
  let sliceEnd = SCAN_SLICE_BYTES;
  for (let offset = 0; offset < view.length; offset += CHUNK_BYTES) {
    if (offset >= sliceEnd) {
      sliceEnd += SCAN_SLICE_BYTES;
      await new Promise((resolve) => setImmediate(resolve));
    }
    const end = Math.min(offset + CHUNK_BYTES, view.length);
    if (view.compare(ZERO_CHUNK, 0, end - offset, offset, end) === 0) continue;
    const last = spans[spans.length - 1];
    if (last !== undefined && last.offset + last.length === offset) last.length += end - offset;
    else spans.push({ offset, length: end - offset });
  }
  return spans;
}

/** The parts of `spans` that no span of `kept` covers (both sorted, made of whole chunks). */
function uncovered(spans: readonly Span[], kept: readonly Span[]): Span[] {
  const out: Span[] = [];
  let k = 0;
  for (const span of spans) {
    let from = span.offset;
    const end = span.offset + span.length;
    while (from < end) {
      while (k < kept.length && kept[k]!.offset + kept[k]!.length <= from) k++;
      const next = kept[k];
      if (next === undefined || next.offset >= end) {
        out.push({ offset: from, length: end - from });
        break;
      }
      if (next.offset > from) out.push({ offset: from, length: next.offset - from });
      from = next.offset + next.length;
    }
  }
  return out;
}

/**
 * What an overlay's instance holds right after its start function: the state every call starts from. Taken once per
 * overlay (per strict worker) from its first instance, at load, and then used to reset an instance after a call and
 * to prepare each new instance without running the start function again. It keeps only the nonzero chunks of memory,
 * so its size follows the data segments and what the start function wrote, not the size of the memory.
 */
export class StartSnapshot {
  /** Memory after the start function, outside which it is all zero. */
  readonly runs: readonly Run[];
  /** Chunks a fresh instantiation fills (data segments) that the start function cleared. */
  readonly cleared: readonly Span[];
  /** The memory size the module sees (pages). */
  readonly pages: number;
  /** The real size of memory (bytes): the start function may have grown it past `pages`. */
  readonly realBytes: number;
  /** The module's mutable globals, in the order the meter exports them. */
  readonly globals: readonly unknown[];
  /**
   * True when the start function changed what a snapshot cannot hold (a table, a dropped data segment): every
   * instance then runs the start function itself, within the budget of the call it serves.
   */
  readonly replayStart: boolean;
  /** Bytes of memory held, for tests and stats. */
  readonly bytes: number;

  private constructor(fields: Omit<StartSnapshot, 'restore' | 'prepare' | 'bytes'>) {
    this.runs = fields.runs;
    this.cleared = fields.cleared;
    this.pages = fields.pages;
    this.realBytes = fields.realBytes;
    this.globals = fields.globals;
    this.replayStart = fields.replayStart;
    this.bytes = fields.runs.reduce((sum, run) => sum + run.bytes.length, 0);
  }

  /**
   * The snapshot of `memory` after the start function ran; `fresh` are the nonzero spans the same memory had right
   * after instantiation, before the start function.
   */
  static async capture(memory: WebAssembly.Memory, fresh: readonly Span[], state: { pages: number; globals: readonly unknown[]; replayStart: boolean }): Promise<StartSnapshot> {
    const image = new Uint8Array(memory.buffer);
    const spans = await nonzeroSpans(memory.buffer);
    return new StartSnapshot({
      runs: spans.map(({ offset, length }) => ({ offset, bytes: image.slice(offset, offset + length) })),
      cleared: uncovered(fresh, spans),
      pages: state.pages,
      realBytes: image.length,
      globals: [...state.globals],
      replayStart: state.replayStart,
    });
  }

  /** Puts back the memory of an instance a call used (its real size must be {@link realBytes}): all zero but the runs. */
  restore(memory: WebAssembly.Memory): void {
    const image = new Uint8Array(memory.buffer);
    image.fill(0);
    for (const run of this.runs) image.set(run.bytes, run.offset);
  }

  /** Turns the memory of a fresh instantiation into the memory after the start function, touching only what differs. */
  prepare(memory: WebAssembly.Memory): void {
    const missing = this.realBytes - memory.buffer.byteLength;
    if (missing > 0) memory.grow(missing / 65_536);
    const image = new Uint8Array(memory.buffer);
    for (const span of this.cleared) image.fill(0, span.offset, span.offset + span.length);
    for (const run of this.runs) image.set(run.bytes, run.offset);
  }
}
