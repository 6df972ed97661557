import { ForgeError } from '../errors.ts';

type Options = { cause?: unknown; details?: Record<string, unknown> };

/** The bytes are not a usable WebAssembly module (not wasm, malformed, or using a feature the sandbox refuses). */
export class InvalidModuleError extends ForgeError {
  constructor(message: string, options: Options = {}) {
    super('INVALID_MODULE', message, options);
  }
}

/** The bytes differ from the sha256 in the manifest: nothing is compiled (fail closed). */
export class HashMismatchError extends ForgeError {
  constructor(expected: string, actual: string) {
    super('HASH_MISMATCH', `The .wasm bytes do not match the manifest (sha256 ${actual}, manifest says ${expected}): rebuild the overlay with "forge-kernel build", or load the bytes its manifest was made for.`, {
      details: { expected, actual },
    });
  }
}

/** The overlay needs a host capability it was not granted (at load: an import; at run: a call). */
export class CapabilityError extends ForgeError {
  constructor(message: string, details: Record<string, unknown>) {
    super('CAPABILITY_DENIED', message, { details });
  }
}

/** The call used up its fuel budget; the instance is discarded and the next call gets a fresh one. */
export class OutOfFuelError extends ForgeError {
  readonly fuelUsed: number;
  constructor(budget: number, exportName: string) {
    super('OUT_OF_FUEL', `"${exportName}" used up its fuel budget of ${budget} instructions: raise the budget (manifest "fuel", or --fuel) or make the overlay do less per call.`, {
      details: { fuelUsed: budget, budget, export: exportName },
    });
    this.fuelUsed = budget;
  }
}

/** The overlay recursed past the deterministic call-depth limit (or the engine's stack). */
export class StackOverflowError extends ForgeError {
  constructor(exportName: string, limit: number) {
    super('STACK_OVERFLOW', `"${exportName}" exceeded the call-depth limit of ${limit} frames: make the recursion shallower or iterative.`, {
      details: { export: exportName, limit },
    });
  }
}

/** The overlay tried to grow its memory past the host's cap. */
export class MemoryLimitError extends ForgeError {
  constructor(exportName: string, maxPages: number) {
    super('MEMORY_LIMIT', `"${exportName}" ran out of memory at the cap of ${maxPages} pages (${maxPages * 64} KiB): raise "memoryPages" in the manifest or use less memory.`, {
      details: { export: exportName, maxPages },
    });
  }
}

/** The overlay trapped (e.g. `unreachable`, an out-of-bounds access, an AssemblyScript `abort`). */
export class OverlayTrapError extends ForgeError {
  constructor(exportName: string, reason: string, options: Options = {}) {
    super('OVERLAY_TRAP', `"${exportName}" trapped: ${reason}`, { ...options, details: { export: exportName, reason, ...options.details } });
  }
}

/** The overlay returned something that is not valid UTF-16 text holding JSON, or too much of it. */
export class InvalidOutputError extends ForgeError {
  constructor(exportName: string, reason: string) {
    super('INVALID_OUTPUT', `"${exportName}" returned an invalid result: ${reason}. Overlays must return a JSON string.`, { details: { export: exportName } });
  }
}

/** The input of a call is not JSON-serializable, or too large. */
export class InvalidCallInputError extends ForgeError {
  constructor(code: 'INVALID_INPUT' | 'INPUT_TOO_LARGE', message: string, details: Record<string, unknown> = {}) {
    super(code, message, { details });
  }
}

/** The export does not exist (or is not a function with the overlay ABI). */
export class ExportNotFoundError extends ForgeError {
  constructor(exportName: string, available: readonly string[]) {
    super('EXPORT_NOT_FOUND', `The overlay has no export "${exportName}" with the overlay ABI (string) → string. It exports: ${available.join(', ') || '(nothing callable)'}.`, {
      details: { export: exportName, available },
    });
  }
}

/** A call reached an instance or engine that was terminated (closed or killed). */
export class InstanceTerminatedError extends ForgeError {
  constructor(what: string) {
    super('INSTANCE_TERMINATED', `${what} was terminated: load the overlay again to call it.`);
  }
}

/** The call ran past its wall-clock deadline (strict: the worker was killed; relaxed: the call was abandoned). */
export class DeadlineExceededError extends ForgeError {
  constructor(exportName: string, deadlineMs: number) {
    super('DEADLINE_EXCEEDED', `"${exportName}" did not finish within its ${deadlineMs} ms deadline and was stopped: raise "timeoutMs" or find what it waits on.`, {
      details: { export: exportName, deadlineMs },
    });
  }
}

/** A native (trusted-mode) overlay was offered without being registered as internal and trusted. */
export class TrustError extends ForgeError {
  constructor(message: string) {
    super('TRUST_REQUIRED', message);
  }
}

/** An event published by an overlay is malformed (type, payload, size). */
export class InvalidEventError extends ForgeError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('INVALID_EVENT', message, { details });
  }
}

/** A call was cancelled through its AbortSignal; its effects were discarded. */
export class CallCancelledError extends ForgeError {
  constructor(exportName: string) {
    super('CANCELLED', `"${exportName}" was cancelled by its caller before it finished.`, { details: { export: exportName } });
  }
}

/** A plain-data form of an error, for crossing a worker boundary. */
export interface SerializedError {
  name: string;
  code: string | undefined;
  message: string;
  details: Record<string, unknown>;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof ForgeError) return { name: error.name, code: error.code, message: error.message, details: { ...error.details } };
  if (error instanceof Error) return { name: error.name, code: undefined, message: error.message, details: {} };
  return { name: 'Error', code: undefined, message: String(error), details: {} };
}

/** A ForgeError whose class could not be rebuilt exactly still keeps its name, code, message and details. */
class RevivedError extends ForgeError {}

/** Rebuilds an error that crossed a worker boundary, with the class its code stands for where the code is known. */
export function reviveError(serialized: SerializedError): Error {
  const { code, message, details } = serialized;
  const text = (key: string): string => (typeof details[key] === 'string' ? details[key] : '');
  const number = (key: string): number => Number(details[key] ?? 0);
  let error: Error;
  switch (code) {
    case 'OUT_OF_FUEL':
      error = new OutOfFuelError(number('budget'), text('export'));
      break;
    case 'STACK_OVERFLOW':
      error = new StackOverflowError(text('export'), number('limit'));
      break;
    case 'MEMORY_LIMIT':
      error = new MemoryLimitError(text('export'), number('maxPages'));
      break;
    case 'EXPORT_NOT_FOUND':
      error = new ExportNotFoundError(text('export'), (details.available as string[] | undefined) ?? []);
      break;
    case 'INVALID_EVENT':
      error = new InvalidEventError(message, details);
      break;
    case 'OVERLAY_TRAP':
      error = new OverlayTrapError(text('export'), text('reason'));
      break;
    case 'INVALID_OUTPUT':
      error = new InvalidOutputError(text('export'), '');
      break;
    case 'CAPABILITY_DENIED':
      error = new CapabilityError(message, details);
      break;
    case undefined: {
      const plain = new Error(message);
      plain.name = serialized.name;
      return plain;
    }
    default:
      error = new RevivedError(code, message, { details });
  }
  // The message was written where the error happened (it may name details the constructor would not).
  error.message = message;
  if (error instanceof RevivedError) Object.defineProperty(error, 'name', { value: serialized.name });
  return error;
}
