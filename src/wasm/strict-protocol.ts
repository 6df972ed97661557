import type { SerializedError } from './errors.ts';
import type { HostFunctionSignature, OverlayEvent, OverlayLogLine } from './host-functions.ts';
import type { RawCallResult } from './instance.ts';

/**
 * The strict engine's wire format between the kernel thread and an overlay worker. Host-function replies do not
 * travel as messages (the worker is blocked in `Atomics.wait`): they are written into a SharedArrayBuffer.
 */
export interface WorkerInit {
  module: WebAssembly.Module;
  maxPages: number;
  maxCallDepth: number;
  hostImports: HostFunctionSignature[];
  /** Control words (see HOST_REPLY) followed by the reply bytes. */
  shared: SharedArrayBuffer;
}

export interface CallMessage {
  type: 'call';
  id: number;
  exportName: string;
  inputJson: string;
  budget: number;
}

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'failed'; error: SerializedError }
  | { type: 'host'; name: string; args: (string | number)[] }
  | {
      type: 'result';
      id: number;
      ok: boolean;
      result?: RawCallResult;
      error?: SerializedError;
      events: OverlayEvent[];
      logs: OverlayLogLine[];
      droppedLogLines: number;
    };

/** Layout of the shared reply buffer: Int32 control words, then the reply as UTF-8 JSON. */
export const HOST_REPLY = Object.freeze({
  /** Int32 index: 0 while the worker waits, 1 once a reply is written. */
  flag: 0,
  /** Int32 index: byte length of the reply. */
  length: 1,
  /** Int32 index: 0 for a value, 1 for an error. */
  status: 2,
  /** Bytes before the reply data (four Int32 words). */
  headerBytes: 16,
  /** Largest reply a host function may return to a strict overlay (bytes of JSON). */
  maxReplyBytes: 4 * 1024 * 1024,
});
