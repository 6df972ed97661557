// The body of one strict-mode overlay worker: it owns one instance at a time and serves calls sequentially.
import { parentPort, workerData } from 'node:worker_threads';
import { reviveError, serializeError, type SerializedError } from './errors.ts';
import { CallEffects, type HostFunctionSignature } from './host-functions.ts';
import { OverlayInstance, type RawCallResult } from './instance.ts';
import { HOST_REPLY, type CallMessage, type WorkerInit, type WorkerMessage } from './strict-protocol.ts';

const init = workerData as WorkerInit;
const port = parentPort;
if (port === null) throw new Error('strict-worker must run in a worker thread');
const control = new Int32Array(init.shared, 0, HOST_REPLY.headerBytes / 4);
const replyBytes = new Uint8Array(init.shared, HOST_REPLY.headerBytes);
const decoder = new TextDecoder();

const post = (message: WorkerMessage): void => {
  port.postMessage(message);
};

/** A blocking hop to the kernel thread: post the request, sleep until the reply is in shared memory. */
function invokeHost(signature: HostFunctionSignature, args: (string | number)[]): unknown {
  Atomics.store(control, HOST_REPLY.flag, 0);
  post({ type: 'host', name: signature.name, args });
  Atomics.wait(control, HOST_REPLY.flag, 0);
  const length = Atomics.load(control, HOST_REPLY.length);
  const reply = JSON.parse(decoder.decode(replyBytes.slice(0, length))) as { value?: unknown; error?: SerializedError };
  if (Atomics.load(control, HOST_REPLY.status) !== 0) throw reviveError(reply.error ?? { name: 'Error', code: undefined, message: 'host call failed', details: {} });
  return reply.value;
}

function createInstance(): OverlayInstance {
  return new OverlayInstance({
    module: init.module,
    maxPages: init.maxPages,
    maxCallDepth: init.maxCallDepth,
    hostImports: init.hostImports,
    suspending: false,
    invokeHost,
  });
}

let instance: OverlayInstance | undefined;
try {
  instance = createInstance();
  post({ type: 'ready' });
} catch (error) {
  post({ type: 'failed', error: serializeError(error) });
}

port.on('message', (message: CallMessage) => {
  const effects = new CallEffects();
  const reply = (fields: { ok: true; result: RawCallResult } | { ok: false; error: SerializedError }): void => {
    post({ type: 'result', id: message.id, events: fields.ok ? effects.events : [], logs: effects.logs, droppedLogLines: effects.droppedLogLines, ...fields });
  };
  try {
    instance ??= createInstance();
    // Host calls block this thread (Atomics.wait), so calls never suspend here: the result is synchronous.
    Promise.resolve(instance.call(message.exportName, message.inputJson, message.budget, effects)).then(
      ({ outputJson, fuelUsed }) => reply({ ok: true, result: { outputJson, fuelUsed } }),
      (error: unknown) => {
        if (instance?.broken === true) instance = undefined;
        reply({ ok: false, error: serializeError(error) });
      },
    );
  } catch (error) {
    instance = undefined;
    reply({ ok: false, error: serializeError(error) });
  }
});
