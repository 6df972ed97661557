// The body of one strict-mode overlay worker: it owns one instance at a time and serves calls one after another,
// sleeping in Atomics.wait on its channel between them (it never returns to its event loop; terminate() ends it).
import { parentPort, workerData } from 'node:worker_threads';
import { reviveError, serializeError } from './errors.ts';
import { CallEffects, type HostFunctionSignature } from './host-functions.ts';
import { OverlayInstance, type InstanceOptions, type RawCallResult } from './instance.ts';
import type { StartSnapshot } from './start-snapshot.ts';
import { CHANNEL, receive, send, STATE, type CallReply, type CallRequest, type HostReply, type WorkerInit, type WorkerStartup } from './strict-protocol.ts';

const init = workerData as WorkerInit;
const port = parentPort;
if (port === null) throw new Error('strict-worker must run in a worker thread');
const control = new Int32Array(init.channel, 0, CHANNEL.headerBytes / 4);

/** Waits while the state word still holds `current`, i.e. until the kernel thread has answered. */
function waitWhile(current: number): void {
  while (Atomics.load(control, CHANNEL.state) === current) Atomics.wait(control, CHANNEL.state, current);
}

/** A blocking hop to the kernel thread: write the request, sleep until the reply is in the channel. */
function invokeHost(signature: HostFunctionSignature, args: (string | number)[]): unknown {
  send(init.channel, STATE.host, { name: signature.name, args }, `The arguments of ${signature.name}`);
  waitWhile(STATE.host);
  const reply = receive<HostReply>(init.channel);
  if ('error' in reply) throw reviveError(reply.error);
  return reply.value;
}

const options: InstanceOptions = {
  module: init.module,
  maxPages: init.maxPages,
  maxStackBytes: init.maxStackBytes,
  hostImports: init.hostImports,
  suspending: false,
  invokeHost,
};

function serve(request: CallRequest, instance: OverlayInstance): CallReply {
  const effects = new CallEffects();
  const reply = (fields: { ok: true; result: RawCallResult } | { ok: false; error: ReturnType<typeof serializeError> }): CallReply => ({
    events: fields.ok ? effects.events : [],
    logs: effects.logs,
    droppedLogLines: effects.droppedLogLines,
    ...fields,
  });
  try {
    // Host calls block this thread, so a call never suspends here: the result is synchronous.
    const { outputJson, fuelUsed } = instance.call(request.exportName, request.inputJson, request.budget, effects) as RawCallResult;
    return reply({ ok: true, result: { outputJson, fuelUsed } });
  } catch (error) {
    return reply({ ok: false, error: serializeError(error) });
  }
}

let instance: OverlayInstance | undefined;
/** The state every call starts from, taken from the worker's first instance; later instances are prepared from it. */
let snapshot: StartSnapshot | undefined;
try {
  const first = await OverlayInstance.first({ ...options, startBudget: init.startBudget });
  snapshot = first.snapshot;
  if (!first.broken) instance = first;
  port.postMessage({ type: 'ready' } satisfies WorkerStartup);
} catch (error) {
  port.postMessage({ type: 'failed', error: serializeError(error) } satisfies WorkerStartup);
}

if (snapshot !== undefined) {
  const start = snapshot;
  for (;;) {
    waitWhile(STATE.idle);
    waitWhile(STATE.done);
    if (Atomics.load(control, CHANNEL.state) !== STATE.call) continue;
    const request = receive<CallRequest>(init.channel);
    let reply: CallReply;
    try {
      instance ??= OverlayInstance.from(options, start);
      reply = serve(request, instance);
      if (instance.broken) instance = undefined;
    } catch (error) {
      reply = { ok: false, error: serializeError(error), events: [], logs: [], droppedLogLines: 0 };
    }
    try {
      send(init.channel, STATE.done, reply, `The reply of "${request.exportName}" (output, events and logs)`);
    } catch (error) {
      // Too large for the channel: the call fails with that error, and this worker goes on serving.
      instance = undefined;
      send(init.channel, STATE.done, { ok: false, error: serializeError(error), events: [], logs: [], droppedLogLines: 0 } satisfies CallReply);
    }
  }
}
