import { InvalidModuleError, MemoryLimitError } from './errors.ts';

/** `\0asm` followed by version 1. */
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const SECTION_IMPORT = 2;
const SECTION_MEMORY = 5;
const IMPORT_MEMORY = 2;

/** True when the bytes start like a WebAssembly binary module. */
export function hasWasmHeader(bytes: Uint8Array): boolean {
  return bytes.length >= HEADER.length && HEADER.every((b, i) => bytes[i] === b);
}

class Reader {
  readonly bytes: Uint8Array;
  offset: number;
  constructor(bytes: Uint8Array, offset: number) {
    this.bytes = bytes;
    this.offset = offset;
  }
  byte(): number {
    const value = this.bytes[this.offset++];
    if (value === undefined) throw new InvalidModuleError('The module ends in the middle of a section.');
    return value;
  }
  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new InvalidModuleError('The module holds a malformed LEB128 number.');
  }
  skip(count: number): void {
    this.offset += count;
  }
}

function u32Leb(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  do {
    let b = rest & 0x7f;
    rest = Math.floor(rest / 128);
    if (rest !== 0) b |= 0x80;
    out.push(b);
  } while (rest !== 0);
  return out;
}

/** Reads limits at the reader, returning where they start and end and their values. */
function readLimits(reader: Reader): { start: number; end: number; initial: number; maximum: number | undefined } {
  const start = reader.offset;
  const flag = reader.byte();
  if (flag !== 0 && flag !== 1) {
    throw new InvalidModuleError('The module declares a shared or 64-bit memory, which the sandbox does not run.', { details: { flag } });
  }
  const initial = reader.u32();
  const maximum = flag === 1 ? reader.u32() : undefined;
  return { start, end: reader.offset, initial, maximum };
}

/**
 * Returns the module with its memory's maximum set to `maxPages` (or its own smaller maximum), so that a grow past
 * the host's cap fails inside the engine whatever the module declared. A module whose memory starts above the
 * cap is refused; one without memory is returned unchanged.
 */
export function capMemory(bytes: Uint8Array, maxPages: number): Uint8Array {
  if (!hasWasmHeader(bytes)) throw new InvalidModuleError('Not a WebAssembly module (no \\0asm header).');
  const reader = new Reader(bytes, HEADER.length);
  while (reader.offset < bytes.length) {
    const id = reader.byte();
    const sizeStart = reader.offset;
    const size = reader.u32();
    const contentStart = reader.offset;
    const contentEnd = contentStart + size;
    if (id === SECTION_IMPORT || id === SECTION_MEMORY) {
      const count = reader.u32();
      for (let i = 0; i < count; i++) {
        if (id === SECTION_IMPORT) {
          reader.skip(reader.u32());
          reader.skip(reader.u32());
          const kind = reader.byte();
          if (kind !== IMPORT_MEMORY) {
            skipImportDescription(reader, kind);
            continue;
          }
        }
        const limits = readLimits(reader);
        if (limits.initial > maxPages) throw new MemoryLimitError('(instantiation)', maxPages);
        const maximum = Math.min(limits.maximum ?? maxPages, maxPages);
        const encoded = [1, ...u32Leb(limits.initial), ...u32Leb(maximum)];
        const content = [...bytes.subarray(contentStart, limits.start), ...encoded, ...bytes.subarray(limits.end, contentEnd)];
        const sizeBytes = u32Leb(content.length);
        const out = new Uint8Array(sizeStart + sizeBytes.length + content.length + (bytes.length - contentEnd));
        out.set(bytes.subarray(0, sizeStart), 0);
        out.set(sizeBytes, sizeStart);
        out.set(content, sizeStart + sizeBytes.length);
        out.set(bytes.subarray(contentEnd), sizeStart + sizeBytes.length + content.length);
        return out;
      }
    }
    reader.offset = contentEnd;
  }
  return bytes;
}

function skipImportDescription(reader: Reader, kind: number): void {
  switch (kind) {
    case 0: // function: type index
      reader.u32();
      return;
    case 1: // table: reference type, limits
      reader.byte();
      if (reader.byte() === 1) reader.u32();
      reader.u32();
      return;
    case 3: // global: value type, mutability
      reader.byte();
      reader.byte();
      return;
    case 4: // tag: attribute, type index
      reader.byte();
      reader.u32();
      return;
    default:
      throw new InvalidModuleError(`The module has an import of unknown kind ${kind}.`);
  }
}
