import { ForgeError } from '../errors.ts';
import { MAX_JSON_NESTING } from '../json-nesting.ts';

type Options = { cause?: unknown; details?: Record<string, unknown> };

/** The bytes are not a usable WebAssembly module (not wasm, malformed, or using a feature the sandbox refuses). */
export class InvalidModuleError extends ForgeError {
  constructor(message: string, options: Options = {}) {
    super('INVALID_MODULE', message, options);
  }
}

/**
 * The module passes a ceiling the kernel sets on what it will meter and run (bytes, functions, locals, nesting):
 * `details.limit` names it, `details.value` and `details.max` say by how much.
 */
export class ModuleLimitError extends ForgeError {
  constructor(limit: string, value: number | string, max: number | string, message: string) {
    super('MODULE_LIMIT', message, { details: { limit, value, max } });
  }
}

/** The module could not be instantiated (e.g. a data or element segment outside its memory or table). */
export class InstantiationError extends ForgeError {
  constructor(reason: string, options: Options = {}) {
    super('INSTANTIATION_FAILED', `The module could not be instantiated: ${reason}. Rebuild it with "forge-kernel build"; a hand-made module must keep its segments inside its memory and tables.`, {
      ...options,
      details: { reason, ...options.details },
    });
  }
}

/** The module's allocator (`__new`) returned a pointer the host cannot write a string to. */
export class InvalidAllocationError extends ForgeError {
  constructor(pointer: number, bytes: number, memoryBytes: number) {
    super('INVALID_ALLOCATION', `The overlay's allocator __new returned ${pointer} for ${bytes} bytes, outside its ${memoryBytes}-byte memory: the module's runtime is broken; rebuild it with "forge-kernel build".`, {
      details: { pointer, bytes, memoryBytes },
    });
  }
}

/**
 * An async host function (e.g. `db_read`) was called from code that no metered export call is running: the start
 * function, the allocator while the host passes a string in, or a host call-back. Only an export may suspend.
 */
export class HostCallOutsideCallError extends ForgeError {
  constructor(hostFunction: string, where: string) {
    super('HOST_CALL_OUTSIDE_CALL', `The overlay called ${hostFunction} from ${where}, outside an export call: async host functions may only be called while an export runs. Move the call into the export.`, {
      details: { hostFunction, where },
    });
  }
}

/** The strict engine's worker died while it served the call (its heap limit, a crash): that call fails, the pool replaces the worker. */
export class WorkerCrashedError extends ForgeError {
  constructor(exportName: string, reason: string) {
    super('WORKER_CRASHED', `"${exportName}" ended its worker (${reason}); the call failed and a fresh worker serves the next one. Make the overlay use less memory or return less.`, {
      details: { export: exportName, reason },
    });
  }
}

/** A message between the kernel and a strict worker (a reply, a host-function result) is larger than the channel. */
export class ReplyTooLargeError extends ForgeError {
  constructor(what: string, bytes: number, limit: number) {
    super('REPLY_TOO_LARGE', `${what} is ${bytes} bytes; at most ${limit} fit: return or ask for less (e.g. fewer rows, smaller events, fewer log lines).`, {
      details: { what, bytes, limit },
    });
  }
}

/**
 * A message between the kernel and an overlay holds what JSON cannot carry (a BigInt, a cycle, nesting deeper than
 * the stack takes): e.g. a host function's result, or a reply of a strict worker.
 */
export class UnserializableMessageError extends ForgeError {
  constructor(what: string, reason: string) {
    super('UNSERIALIZABLE_MESSAGE', `${what} cannot be sent as JSON (${reason}): pass plain JSON data (strings, numbers, booleans, null, arrays and objects), nested at most ${MAX_JSON_NESTING} deep.`, {
      details: { what, reason },
    });
  }
}

/** The manifest (or a call) asks for more fuel than the embedding service allows any call. */
export class FuelLimitError extends ForgeError {
  constructor(exportName: string, budget: number, max: number, message?: string) {
    super('FUEL_LIMIT', message ?? `A call of "${exportName}" asks for ${budget} fuel; this kernel allows a call at most ${max}: ask for less, or raise the kernel's maxFuel.`, {
      details: { export: exportName, budget, max },
    });
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

/** The overlay went past the deterministic stack limit (deep recursion, or very large frames). */
export class StackOverflowError extends ForgeError {
  constructor(exportName: string, limitBytes: number) {
    super(
      'STACK_OVERFLOW',
      `"${exportName}" exceeded the stack limit of ${Math.round(limitBytes / 1024)} KiB (estimated per frame from its locals and parameters, the same in every engine): make the recursion shallower or iterative, or its frames smaller.`,
      { details: { export: exportName, limit: limitBytes } },
    );
  }
}

/** A host function was given a string argument larger than it accepts (it is refused before it is read). */
export class HostArgumentTooLargeError extends ForgeError {
  constructor(hostFunction: string, chars: number, limit: number) {
    super('HOST_ARGUMENT_TOO_LARGE', `The overlay passed ${hostFunction} a string of ${chars} characters; it accepts at most ${limit}: pass less.`, {
      details: { hostFunction, chars, limit },
    });
  }
}

/** The overlay tried to grow its memory past the host's cap. */
export class MemoryLimitError extends ForgeError {
  constructor(exportName: string, maxPages: number, message?: string) {
    super('MEMORY_LIMIT', message ?? `"${exportName}" ran out of memory (tables included) at the cap of ${maxPages} pages (${maxPages * 64} KiB): raise "memoryPages" in the manifest or use less memory.`, {
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

/** An overlay published under one of the kernel's own event namespaces (`pipeline.*`, `cascade.*`, …). */
export class ReservedEventTypeError extends ForgeError {
  constructor(type: string) {
    super('RESERVED_EVENT_TYPE', `The event type "${type}" is in a namespace the kernel reserves for its own events (pipeline, cascade, overlay, kernel, system): publish under a domain of your own, e.g. "capsule.analyzed".`, {
      details: { type },
    });
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
    case 'INVALID_MODULE':
      error = new InvalidModuleError(message, { details });
      break;
    case 'MODULE_LIMIT':
      error = new ModuleLimitError(text('limit'), details.value as number, details.max as number, message);
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
