// The body of the fuel meter's worker thread: it loads binaryen once and meters modules one after another, so a
// large or hostile module costs this thread's time, never the kernel's event loop. Whatever metering throws comes
// back as a serialized ForgeError; src/wasm/meter-thread.ts is the kernel-side client.
import { parentPort, resourceLimits } from 'node:worker_threads';
import { ForgeError } from '../errors.ts';
import { loadBinaryen } from './binaryen.ts';
import { InvalidModuleError, ModuleLimitError, serializeError, type SerializedError } from './errors.ts';
import { meterModule, type MeterOptions } from './fuel-meter.ts';

/** A module to meter; `bytes` is transferred to the worker. */
export interface MeterRequest {
  id: number;
  bytes: Uint8Array<ArrayBuffer>;
  options: MeterOptions;
}

/** The metered bytes (their buffer transferred back), or why the module could not be metered. */
export type MeterReply = { id: number; bytes: Uint8Array } | { id: number; error: SerializedError };

/** How many `cause` links are followed looking for a stack overflow (a cycle must not loop forever). */
const MAX_CAUSE_HOPS = 8;

if (parentPort === null) throw new Error('meter-worker must run in a worker thread');
const port = parentPort;

/** True when `error`, or an error it wraps, is V8's stack overflow (the meter reads and walks expressions recursively). */
function isStackOverflow(error: unknown): boolean {
  let current = error;
  for (let hop = 0; hop < MAX_CAUSE_HOPS && current instanceof Error; hop++) {
    if (current instanceof RangeError && current.message.includes('Maximum call stack size exceeded')) return true;
    current = current.cause;
  }
  return false;
}

/** binaryen.js throws strings, numbers or a RuntimeError("Aborted(…)") on fatal errors: every failure becomes typed. */
function typed(error: unknown): ForgeError {
  if (isStackOverflow(error)) {
    return new ModuleLimitError(
      'nesting',
      'deeper than the meter can follow',
      `${resourceLimits.stackSizeMb ?? 'default'} MB of stack`,
      'The module nests blocks or expressions too deeply for the fuel meter: flatten the deepest function (fewer nested blocks, ifs or sub-expressions) or split it.',
    );
  }
  if (error instanceof ForgeError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new InvalidModuleError(`The fuel meter could not process the module: ${reason}. Rebuild it with "forge-kernel build"; a hand-made module must be valid WebAssembly.`, {
    cause: error,
  });
}

/** The bytes in a buffer of their own, so that buffer can be transferred without taking anything else along. */
function ownBuffer(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : bytes.slice();
}

async function serve({ id, bytes, options }: MeterRequest): Promise<void> {
  try {
    const metered = ownBuffer(meterModule(await loadBinaryen(), bytes, options).bytes);
    port.postMessage({ id, bytes: metered } satisfies MeterReply, [metered.buffer]);
  } catch (error) {
    port.postMessage({ id, error: serializeError(typed(error)) } satisfies MeterReply);
  }
}

port.on('message', (request: MeterRequest) => void serve(request));
