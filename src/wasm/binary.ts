import { InvalidModuleError, MemoryLimitError, ModuleLimitError } from './errors.ts';

/** `\0asm` followed by version 1. */
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
/** Bytes in one WebAssembly memory page. */
const PAGE_BYTES = 65_536;
/** Limits are u32: a larger table maximum would not encode. */
const MAX_U32 = 0xffff_ffff;

const SECTION = { custom: 0, type: 1, import: 2, function: 3, table: 4, memory: 5, global: 6, export: 7, start: 8, element: 9, code: 10, data: 11, dataCount: 12, tag: 13 } as const;
/** Known section ids in the order the binary format requires them: tags sit before globals, the data count before code. */
const SECTION_ORDER: readonly number[] = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];

/**
 * The kernel's fuel meter exports its own state under this prefix (`__forge_fuel`, `__forge_snapshot_0`, …) and the
 * kernel trusts exports so named; a module that already has one could shadow or impersonate the meter's.
 */
const RESERVED_EXPORT_PREFIX = '__forge_';

/**
 * V8 spends about 8 bytes per funcref entry plus a wrapper object it creates lazily, so tables count toward the same
 * per-overlay cap as memory, charged at this many bytes per element (measured: a table.grow of 10M entries raised the
 * process RSS by ~190 MB, ≈19 B/entry; 32 leaves headroom for the wrappers).
 */
export const TABLE_ELEMENT_BYTES = 32;

export type ValueType = 'i32' | 'i64' | 'f32' | 'f64' | 'v128' | 'funcref' | 'externref' | `ref(${string})`;
export interface FunctionType {
  params: ValueType[];
  results: ValueType[];
}
export type ExternalKind = 'function' | 'table' | 'memory' | 'global' | 'tag';

/** What {@link scanModule} reads from a module: enough to refuse it, or to name its signatures, before metering. */
export interface ModuleShape {
  /** In index order; `type` is set for functions. */
  imports: { module: string; name: string; kind: ExternalKind; type?: FunctionType }[];
  /** In declaration order; `type` is set for functions, imported or own. */
  exports: { name: string; kind: ExternalKind; type?: FunctionType }[];
  /** Functions the module defines (imported ones excluded). */
  functions: number;
  /** Imported and own memories (at most one: more is refused). */
  memories: number;
  /** Imported and own tables, in index order. */
  tables: { initial: number; maximum: number | undefined }[];
  /** The most locals (parameters plus declared locals) of any function the module defines. */
  maxLocals: number;
  hasStart: boolean;
}

/** Ceilings on what the kernel meters and runs; passing one is a {@link ModuleLimitError}. */
export interface ModuleLimits {
  maxBytes: number;
  /** Functions the module defines. */
  maxFunctions: number;
  /** Parameters plus declared locals of any one function. */
  maxLocals: number;
  maxImports: number;
  maxExports: number;
}

/**
 * AssemblyScript overlays are tens to hundreds of KiB with a few thousand functions, a few hundred locals at most per
 * function, a handful of imports and tens of exports. The meter (binaryen) holds the whole module as IR, several
 * times its size, and its work grows with functions; so the ceilings sit one to two orders of magnitude above real
 * overlays and far below V8's own (1 GiB, 1M functions, 50,000 locals, 100,000 imports and exports). Locals stay a
 * tenth of V8's limit so the locals the meter adds never take a function past it.
 */
export const DEFAULT_MODULE_LIMITS: ModuleLimits = Object.freeze({
  maxBytes: 16 * 1024 * 1024,
  maxFunctions: 20_000,
  maxLocals: 5_000,
  maxImports: 1_000,
  maxExports: 1_000,
});

const EXTERNAL_KINDS: readonly ExternalKind[] = ['function', 'table', 'memory', 'global', 'tag'];
const NUMBER_TYPES: Readonly<Record<number, ValueType>> = { 0x7f: 'i32', 0x7e: 'i64', 0x7d: 'f32', 0x7c: 'f64', 0x7b: 'v128' };
/** Abstract heap types by their one-byte code (also the shorthand `(ref null <type>)` value type). */
const HEAP_TYPES: Readonly<Record<number, string>> = {
  0x70: 'func', 0x6f: 'extern', 0x6e: 'any', 0x6d: 'eq', 0x6c: 'i31', 0x6b: 'struct', 0x6a: 'array', 0x69: 'exn',
  0x71: 'none', 0x72: 'noextern', 0x73: 'nofunc', 0x74: 'noexn',
};
const REF_NULL = 0x63;
const REF = 0x64;
const FUNCTION_FORM = 0x60;
/** rec, sub, sub final, struct, array: type definitions of the GC proposal. */
const GC_FORMS: ReadonlySet<number> = new Set([0x4e, 0x50, 0x4f, 0x5f, 0x5e]);
/** Names are UTF-8 by the spec; V8 refuses invalid ones and keeps a leading BOM as part of the name. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function malformed(reason: string, offset: number): InvalidModuleError {
  return new InvalidModuleError(`The module is malformed: ${reason} (at byte ${offset}). Rebuild it with "forge-kernel build".`, { details: { offset } });
}

/** True when the bytes start like a WebAssembly binary module. */
export function hasWasmHeader(bytes: Uint8Array): boolean {
  return bytes.length >= HEADER.length && HEADER.every((b, i) => bytes[i] === b);
}

/** Reads one section (or the part of it up to `end`): reading past `end` is a malformed module, never a RangeError. */
class Reader {
  readonly bytes: Uint8Array;
  offset: number;
  readonly end: number;
  constructor(bytes: Uint8Array, offset: number, end: number) {
    this.bytes = bytes;
    this.offset = offset;
    this.end = end;
  }
  byte(): number {
    if (this.offset >= this.end) throw malformed('a section ends in the middle of an entry', this.offset);
    return this.bytes[this.offset++] as number;
  }
  /** Unsigned LEB128 of at most 5 bytes whose last byte carries no bits beyond 32, as V8 reads it. */
  u32(): number {
    const start = this.offset;
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      if (shift === 28 && (b & 0xf0) !== 0) break;
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw malformed('a number is not a valid 32-bit LEB128', start);
  }
  /** Signed LEB128 of 33 bits (heap types): at most 5 bytes, the last one's unused bits a copy of the sign. */
  s33(): number {
    const start = this.offset;
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      if (shift === 28 && (b & 0xf0) !== 0 && (b & 0xf0) !== 0x70) break;
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return (b & 0x40) === 0 ? result : result - 2 ** (shift + 7);
    }
    throw malformed('a number is not a valid 33-bit signed LEB128', start);
  }
  /** A vector's length, refused at once when it cannot fit in what is left (so a forged count costs nothing). */
  count(): number {
    const start = this.offset;
    const value = this.u32();
    if (value > this.end - this.offset) throw malformed(`a vector claims ${value} entries, more than its section holds`, start);
    return value;
  }
  /** A length-prefixed UTF-8 name. */
  name(what: string): string {
    const start = this.offset;
    const length = this.count();
    const from = this.offset;
    this.offset += length;
    try {
      return UTF8.decode(this.bytes.subarray(from, this.offset));
    } catch (error) {
      throw new InvalidModuleError(`The module's ${what} at byte ${start} is not valid UTF-8: rebuild it with "forge-kernel build".`, { cause: error, details: { offset: start } });
    }
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

interface SectionSpan {
  id: number;
  /** Offset of the id byte. */
  start: number;
  contentStart: number;
  end: number;
}

/**
 * The sections of a module, each checked to lie inside the bytes, to be known and to come in the required order at
 * most once; custom sections must have a valid name (V8 checks it too).
 */
function sections(bytes: Uint8Array): SectionSpan[] {
  if (!hasWasmHeader(bytes)) throw new InvalidModuleError('Not a WebAssembly module: the bytes do not start with the \\0asm header and version 1.');
  const spans: SectionSpan[] = [];
  const reader = new Reader(bytes, HEADER.length, bytes.length);
  let lastRank = -1;
  while (reader.offset < bytes.length) {
    const start = reader.offset;
    const id = reader.byte();
    const size = reader.u32();
    const contentStart = reader.offset;
    if (size > bytes.length - contentStart) throw malformed(`section ${id} claims ${size} bytes, more than the module holds`, start);
    const end = contentStart + size;
    if (id === SECTION.custom) {
      new Reader(bytes, contentStart, end).name('custom section name');
    } else {
      const rank = SECTION_ORDER.indexOf(id);
      if (rank === -1) throw malformed(`unknown section id ${id}`, start);
      if (rank <= lastRank) throw malformed(`section ${id} is repeated or out of order`, start);
      lastRank = rank;
    }
    spans.push({ id, start, contentStart, end });
    reader.offset = end;
  }
  return spans;
}

function expectEnd(reader: Reader, id: number): void {
  if (reader.offset !== reader.end) throw malformed(`section ${id} has ${reader.end - reader.offset} bytes after its entries`, reader.offset);
}

/** A type index of a value type is checked only when the number of types is known (scanning, not capping). */
function readHeapType(reader: Reader, typeCount: number | undefined): string {
  const start = reader.offset;
  const value = reader.s33();
  if (value < 0) {
    const name = HEAP_TYPES[value + 128];
    if (name === undefined) throw new InvalidModuleError(`The module uses heap type 0x${(value + 128).toString(16)} at byte ${start}, which the sandbox does not support.`);
    return name;
  }
  if (typeCount !== undefined && value >= typeCount) throw malformed(`type index ${value} is out of range (${typeCount} types)`, start);
  return String(value);
}

function readValueType(reader: Reader, typeCount: number | undefined): ValueType {
  const start = reader.offset;
  const code = reader.byte();
  const number = NUMBER_TYPES[code];
  if (number !== undefined) return number;
  let heap: string | undefined;
  let nullable = true;
  if (code === REF_NULL || code === REF) {
    heap = readHeapType(reader, typeCount);
    nullable = code === REF_NULL;
  } else {
    heap = HEAP_TYPES[code];
  }
  if (heap === undefined) throw new InvalidModuleError(`The module uses value type 0x${code.toString(16)} at byte ${start}, which the sandbox does not support.`);
  if (nullable && heap === 'func') return 'funcref';
  if (nullable && heap === 'extern') return 'externref';
  return `ref(${nullable ? 'null ' : ''}${heap})`;
}

interface Limits {
  /** Where the limits' encoding starts and ends, for rewriting them. */
  start: number;
  end: number;
  initial: number;
  maximum: number | undefined;
}

/** Limits of a 32-bit, unshared memory or table (flag 0: no maximum, 1: a maximum). */
function readLimits(reader: Reader, of: 'memory' | 'table'): Limits {
  const start = reader.offset;
  const flag = reader.byte();
  if (flag !== 0 && flag !== 1) {
    throw new InvalidModuleError(`The module declares a shared or 64-bit ${of} (limits flag 0x${flag.toString(16)}), which the sandbox does not run.`, { details: { flag } });
  }
  const initial = reader.u32();
  const maximum = flag === 1 ? reader.u32() : undefined;
  if (maximum !== undefined && maximum < initial) throw malformed(`a ${of} has a maximum (${maximum}) below its initial size (${initial})`, start);
  return { start, end: reader.offset, initial, maximum };
}

function readTableType(reader: Reader, typeCount: number | undefined): Limits {
  const start = reader.offset;
  const element = readValueType(reader, typeCount);
  if (Object.values(NUMBER_TYPES).includes(element)) throw malformed(`a table holds ${element}, which is not a reference type`, start);
  return readLimits(reader, 'table');
}

function readTypeIndex(reader: Reader, typeCount: number | undefined): number {
  const start = reader.offset;
  const index = reader.u32();
  if (typeCount !== undefined && index >= typeCount) throw malformed(`function type index ${index} is out of range (${typeCount} types)`, start);
  return index;
}

type ImportDescription =
  | { kind: 'function' | 'tag'; typeIndex: number }
  | { kind: 'table' | 'memory'; limits: Limits }
  | { kind: 'global' };

function readImport(reader: Reader, typeCount: number | undefined): { module: string; name: string; description: ImportDescription } {
  const module = reader.name('import module name');
  const name = reader.name('import name');
  const start = reader.offset;
  const kind = EXTERNAL_KINDS[reader.byte()];
  if (kind === undefined) throw malformed(`import ${module}.${name} has an unknown kind`, start);
  switch (kind) {
    case 'function':
      return { module, name, description: { kind, typeIndex: readTypeIndex(reader, typeCount) } };
    case 'table':
      return { module, name, description: { kind, limits: readTableType(reader, typeCount) } };
    case 'memory':
      return { module, name, description: { kind, limits: readLimits(reader, 'memory') } };
    case 'global': {
      readValueType(reader, typeCount);
      const mutability = reader.byte();
      if (mutability > 1) throw malformed(`global import ${module}.${name} has mutability ${mutability}`, start);
      return { module, name, description: { kind } };
    }
    case 'tag': {
      const attribute = reader.byte();
      if (attribute !== 0) throw malformed(`tag import ${module}.${name} has attribute ${attribute}`, start);
      return { module, name, description: { kind, typeIndex: readTypeIndex(reader, typeCount) } };
    }
  }
}

/** A table in the table section; the form with an initializer expression (function references) is refused. */
function readOwnTable(reader: Reader, typeCount: number | undefined): Limits {
  if (reader.bytes[reader.offset] === 0x40) {
    throw new InvalidModuleError(`The module declares a table with an initializer expression at byte ${reader.offset}, which the sandbox does not run.`);
  }
  return readTableType(reader, typeCount);
}

function readFunctionType(reader: Reader, typeCount: number): FunctionType {
  const start = reader.offset;
  const form = reader.byte();
  if (GC_FORMS.has(form)) throw new InvalidModuleError(`GC types are not supported: the module defines a struct, array, subtype or recursion group at byte ${start}. Overlays are built without the GC proposal.`);
  if (form !== FUNCTION_FORM) throw malformed(`type form 0x${form.toString(16)} is not a function type`, start);
  const params = Array.from({ length: reader.count() }, () => readValueType(reader, typeCount));
  const results = Array.from({ length: reader.count() }, () => readValueType(reader, typeCount));
  return { params, results };
}

/**
 * Parameters plus declared locals of the function body at the reader, which it skips. A declaration may count up to
 * 2^32-1 locals and a body may hold millions of them, so counting stops once past `max` (the result is then a lower
 * bound) and the sum stays exact.
 */
function readBodyLocals(reader: Reader, params: number, typeCount: number, max: number): number {
  const start = reader.offset;
  const size = reader.u32();
  if (size > reader.end - reader.offset) throw malformed(`a function body claims ${size} bytes, more than the code section holds`, start);
  const body = new Reader(reader.bytes, reader.offset, reader.offset + size);
  let total = params;
  const declarations = body.count();
  for (let i = 0; i < declarations && total <= max; i++) {
    total += body.u32();
    readValueType(body, typeCount);
  }
  reader.offset = body.end;
  return total;
}

/**
 * Reads a module's imports, exports (with function signatures), function, memory and table counts, and the most
 * locals of any function, in one pass that skips function bodies. Refuses with {@link ModuleLimitError} a module
 * past `limits`, and with {@link InvalidModuleError} one that is malformed, uses several memories, 64-bit or shared
 * memory, GC types, or exports a name starting with `__forge_` (the meter's). Run it on the bytes an overlay author
 * supplied, before metering: the metered module carries the meter's own `__forge_` exports. Validity beyond this
 * structure (instructions, constant expressions, segments) is for V8 to decide.
 */
export function scanModule(bytes: Uint8Array, limits: ModuleLimits = DEFAULT_MODULE_LIMITS): ModuleShape {
  if (bytes.length > limits.maxBytes) {
    throw new ModuleLimitError('maxBytes', bytes.length, limits.maxBytes, `The module is ${bytes.length} bytes; the kernel meters modules of at most ${limits.maxBytes} bytes. Build the overlay optimized (forge-kernel build) or split it into several overlays.`);
  }
  const types: FunctionType[] = [];
  /** The type index of every function, imported ones first (the function index space). */
  const functionTypes: number[] = [];
  const imports: ModuleShape['imports'] = [];
  const exports: ModuleShape['exports'] = [];
  const tables: ModuleShape['tables'] = [];
  let importedFunctions = 0;
  let importedMemories = 0;
  let ownMemories = 0;
  let globals = 0;
  let tags = 0;
  let maxLocals = 0;
  let hasStart = false;
  let bodies: number | undefined;
  let declaredDataSegments: number | undefined;
  let dataSegments = 0;

  for (const section of sections(bytes)) {
    const reader = new Reader(bytes, section.contentStart, section.end);
    switch (section.id) {
      case SECTION.custom:
        continue;
      case SECTION.type: {
        const count = reader.count();
        for (let i = 0; i < count; i++) types.push(readFunctionType(reader, count));
        break;
      }
      case SECTION.import: {
        const count = reader.count();
        if (count > limits.maxImports) {
          throw new ModuleLimitError('maxImports', count, limits.maxImports, `The module has ${count} imports; overlays may have at most ${limits.maxImports}. Import fewer host functions.`);
        }
        for (let i = 0; i < count; i++) {
          const { module, name, description } = readImport(reader, types.length);
          const entry: ModuleShape['imports'][number] = { module, name, kind: description.kind };
          if (description.kind === 'function') {
            functionTypes.push(description.typeIndex);
            importedFunctions++;
            entry.type = types[description.typeIndex] as FunctionType;
          } else if (description.kind === 'memory') {
            importedMemories++;
          } else if (description.kind === 'table') {
            tables.push({ initial: description.limits.initial, maximum: description.limits.maximum });
          } else if (description.kind === 'global') {
            globals++;
          } else {
            tags++;
          }
          imports.push(entry);
        }
        break;
      }
      case SECTION.function: {
        const count = reader.count();
        if (count > limits.maxFunctions) {
          throw new ModuleLimitError('maxFunctions', count, limits.maxFunctions, `The module defines ${count} functions; the kernel meters modules of at most ${limits.maxFunctions}. Split the overlay into several overlays.`);
        }
        for (let i = 0; i < count; i++) functionTypes.push(readTypeIndex(reader, types.length));
        break;
      }
      case SECTION.table: {
        const count = reader.count();
        for (let i = 0; i < count; i++) {
          const { initial, maximum } = readOwnTable(reader, types.length);
          tables.push({ initial, maximum });
        }
        break;
      }
      case SECTION.memory: {
        ownMemories = reader.count();
        for (let i = 0; i < ownMemories; i++) readLimits(reader, 'memory');
        break;
      }
      case SECTION.tag:
        tags += reader.count();
        reader.offset = reader.end;
        break;
      case SECTION.global:
        globals += reader.count();
        reader.offset = reader.end;
        break;
      case SECTION.export: {
        const count = reader.count();
        if (count > limits.maxExports) {
          throw new ModuleLimitError('maxExports', count, limits.maxExports, `The module has ${count} exports; overlays may have at most ${limits.maxExports}. Export fewer functions and globals.`);
        }
        const spaces: Record<ExternalKind, number> = { function: functionTypes.length, table: tables.length, memory: importedMemories + ownMemories, global: globals, tag: tags };
        const names = new Set<string>();
        for (let i = 0; i < count; i++) {
          const start = reader.offset;
          const name = reader.name('export name');
          const kind = EXTERNAL_KINDS[reader.byte()];
          const index = reader.u32();
          if (kind === undefined) throw malformed(`export "${name}" has an unknown kind`, start);
          if (index >= spaces[kind]) throw malformed(`export "${name}" names ${kind} ${index}, which does not exist`, start);
          if (names.has(name)) throw malformed(`export name "${name}" is used twice`, start);
          if (name.startsWith(RESERVED_EXPORT_PREFIX)) {
            throw new InvalidModuleError(`The module exports "${name}": names starting with ${RESERVED_EXPORT_PREFIX} are reserved for the kernel's fuel meter. Rename the export.`, { details: { export: name } });
          }
          names.add(name);
          exports.push(kind === 'function' ? { name, kind, type: types[functionTypes[index] as number] as FunctionType } : { name, kind });
        }
        break;
      }
      case SECTION.start: {
        const start = reader.offset;
        const index = reader.u32();
        if (index >= functionTypes.length) throw malformed(`the start function ${index} does not exist`, start);
        hasStart = true;
        break;
      }
      case SECTION.dataCount:
        declaredDataSegments = reader.u32();
        break;
      case SECTION.code: {
        bodies = reader.count();
        if (bodies !== functionTypes.length - importedFunctions) {
          throw malformed(`the code section has ${bodies} bodies for ${functionTypes.length - importedFunctions} functions`, section.contentStart);
        }
        for (let i = 0; i < bodies; i++) {
          const index = importedFunctions + i;
          const params = (types[functionTypes[index] as number] as FunctionType).params.length;
          const locals = readBodyLocals(reader, params, types.length, limits.maxLocals);
          if (locals > limits.maxLocals) {
            throw new ModuleLimitError('maxLocals', locals, limits.maxLocals, `Function ${index} has ${locals} or more locals (parameters and declared locals); the kernel meters functions of at most ${limits.maxLocals}. Split the function or reuse its locals.`);
          }
          maxLocals = Math.max(maxLocals, locals);
        }
        break;
      }
      case SECTION.data:
        dataSegments = reader.count();
        reader.offset = reader.end;
        break;
      case SECTION.element:
        reader.offset = reader.end;
        break;
    }
    expectEnd(reader, section.id);
  }

  const memories = importedMemories + ownMemories;
  if (memories > 1) {
    throw new InvalidModuleError(`The module has ${memories} memories (${importedMemories} imported, ${ownMemories} own); the sandbox runs modules with one memory (multi-memory is not supported).`, {
      details: { imported: importedMemories, own: ownMemories },
    });
  }
  const functions = functionTypes.length - importedFunctions;
  if (bodies === undefined && functions > 0) throw malformed(`${functions} functions are declared but the module has no code section`, bytes.length);
  if (declaredDataSegments !== undefined && declaredDataSegments !== dataSegments) {
    throw malformed(`the data count section says ${declaredDataSegments} data segments, the data section has ${dataSegments}`, bytes.length);
  }
  return { imports, exports, functions, memories, tables, maxLocals, hasStart };
}

/** A signature as error messages show it: `(i32, i32) -> i32`, `() -> nil`, `(i64) -> (i32, f64)`. */
export function formatFunctionType(type: FunctionType): string {
  const results = type.results.length === 0 ? 'nil' : type.results.length === 1 ? type.results[0] : `(${type.results.join(', ')})`;
  return `(${type.params.join(', ')}) -> ${results}`;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/**
 * Returns the module without its custom sections (names, debug info, producers), every other byte unchanged, or the
 * same array when it has none. The meter reads function names from the name section, so a module could name its
 * functions like the meter's own helpers; without the section the meter names them itself.
 */
export function stripCustomSections(bytes: Uint8Array): Uint8Array {
  const spans = sections(bytes);
  if (spans.every((s) => s.id !== SECTION.custom)) return bytes;
  return concat([bytes.subarray(0, HEADER.length), ...spans.filter((s) => s.id !== SECTION.custom).map((s) => bytes.subarray(s.start, s.end))]);
}

/** New encodings of limits inside one section. */
interface SectionPatch {
  span: SectionSpan;
  edits: { start: number; end: number; bytes: number[] }[];
}

/** Adds an edit that gives `limits` the maximum `cap` (or their own smaller one), unless the encoding is unchanged. */
function capLimits(patch: SectionPatch, bytes: Uint8Array, limits: Limits, cap: number): void {
  const encoded = [1, ...u32Leb(limits.initial), ...u32Leb(Math.min(limits.maximum ?? cap, cap))];
  const current = bytes.subarray(limits.start, limits.end);
  if (current.length === encoded.length && current.every((b, i) => b === encoded[i])) return;
  patch.edits.push({ start: limits.start, end: limits.end, bytes: encoded });
}

function applyPatches(bytes: Uint8Array, spans: readonly SectionSpan[], patches: readonly SectionPatch[]): Uint8Array {
  const edited = patches.filter((p) => p.edits.length > 0);
  if (edited.length === 0) return bytes;
  const chunks: Uint8Array[] = [bytes.subarray(0, HEADER.length)];
  for (const span of spans) {
    const patch = edited.find((p) => p.span === span);
    if (patch === undefined) {
      chunks.push(bytes.subarray(span.start, span.end));
      continue;
    }
    const content: Uint8Array[] = [];
    let from = span.contentStart;
    for (const edit of patch.edits) {
      content.push(bytes.subarray(from, edit.start), Uint8Array.from(edit.bytes));
      from = edit.end;
    }
    content.push(bytes.subarray(from, span.end));
    const body = concat(content);
    chunks.push(Uint8Array.from([span.id, ...u32Leb(body.length)]), body);
  }
  return concat(chunks);
}

/**
 * Returns the module with the maximum of its memory set to `memoryPages` and of each table to what `memoryPages`
 * pays for at `tableElementBytes` an element (or their own smaller maxima), so that a grow past the host's cap fails
 * inside the engine whatever the module declared. Memory and tables are charged to the same budget: a module whose
 * initial memory plus initial table elements cost more than `memoryPages` is refused with {@link MemoryLimitError}.
 * Imported tables are refused (overlays import only functions). Returns the same array when nothing changes.
 */
export function capResources(bytes: Uint8Array, { memoryPages, tableElementBytes }: { memoryPages: number; tableElementBytes: number }): Uint8Array {
  const budget = memoryPages * PAGE_BYTES;
  const tableCap = Math.min(Math.floor(budget / tableElementBytes), MAX_U32);
  const spans = sections(bytes);
  const patches: SectionPatch[] = [];
  let initialBytes = 0;
  for (const span of spans) {
    if (span.id !== SECTION.import && span.id !== SECTION.table && span.id !== SECTION.memory) continue;
    const reader = new Reader(bytes, span.contentStart, span.end);
    const patch: SectionPatch = { span, edits: [] };
    const count = reader.count();
    for (let i = 0; i < count; i++) {
      if (span.id === SECTION.import) {
        const { module, name, description } = readImport(reader, undefined);
        if (description.kind === 'table') {
          throw new InvalidModuleError(`The module imports a table (${module}.${name}); overlays may import only host functions.`, { details: { import: `${module}.${name}` } });
        }
        if (description.kind !== 'memory') continue;
        initialBytes += description.limits.initial * PAGE_BYTES;
        capLimits(patch, bytes, description.limits, memoryPages);
      } else if (span.id === SECTION.table) {
        const limits = readOwnTable(reader, undefined);
        initialBytes += limits.initial * tableElementBytes;
        capLimits(patch, bytes, limits, tableCap);
      } else {
        const limits = readLimits(reader, 'memory');
        initialBytes += limits.initial * PAGE_BYTES;
        capLimits(patch, bytes, limits, memoryPages);
      }
    }
    expectEnd(reader, span.id);
    patches.push(patch);
  }
  if (initialBytes > budget) throw new MemoryLimitError('(instantiation)', memoryPages);
  return applyPatches(bytes, spans, patches);
}
