import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CallCancelledError, DeadlineExceededError, InstanceTerminatedError, reviveError, serializeError } from './errors.ts';
import { raceDeadline, type ExecuteRequest, type Executor } from './executor.ts';
import type { HostCallContext } from './host-functions.ts';
import type { RawCallResult } from './instance.ts';
import type { CompiledOverlay } from './loader.ts';
import { HOST_REPLY, type CallMessage, type WorkerInit, type WorkerMessage } from './strict-protocol.ts';

/** Workers per overlay: calls beyond this wait in a FIFO queue. */
export const DEFAULT_STRICT_POOL_SIZE = 2;
/** Each worker's own V8 heap: overlays live in wasm memory (capped separately); the JS side only marshals. */
const WORKER_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 };
/** The worker script sits beside this module, as .ts in a checkout and .js in the published package. */
const WORKER_URL = new URL(`./strict-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);

interface PendingCall {
  resolve(result: RawCallResult): void;
  reject(error: Error): void;
  request: ExecuteRequest;
  /** The worker serving it, once assigned (so a deadline kills the right one). */
  slot?: WorkerSlot;
}

/** One worker thread and the call it is serving. */
class WorkerSlot {
  readonly worker: Worker;
  readonly ready: Promise<void>;
  readonly #shared = new SharedArrayBuffer(HOST_REPLY.headerBytes + HOST_REPLY.maxReplyBytes);
  readonly #control = new Int32Array(this.#shared, 0, HOST_REPLY.headerBytes / 4);
  readonly #replyBytes = new Uint8Array(this.#shared, HOST_REPLY.headerBytes);
  readonly #compiled: CompiledOverlay;
  #current: { id: number; pending: PendingCall } | undefined;
  #nextId = 1;
  dead = false;

  readonly #onIdle: () => void;

  constructor(compiled: CompiledOverlay, onExit: (slot: WorkerSlot) => void, onIdle: () => void) {
    this.#compiled = compiled;
    this.#onIdle = onIdle;
    const init: WorkerInit = {
      module: compiled.module,
      maxPages: compiled.manifest.memoryPages,
      maxCallDepth: compiled.maxCallDepth,
      hostImports: compiled.hostImports.map(({ name, capability, async, params, result }) => ({ name, capability, async, params, result })),
      shared: this.#shared,
    };
    this.worker = new Worker(WORKER_URL, { workerData: init, resourceLimits: WORKER_LIMITS });
    this.ready = new Promise((resolve, reject) => {
      const first = (message: WorkerMessage): void => {
        if (message.type === 'ready') resolve();
        else if (message.type === 'failed') reject(reviveError(message.error));
      };
      this.worker.once('message', first);
      this.worker.once('error', reject);
    });
    this.ready.catch(() => undefined);
    this.worker.on('message', (message: WorkerMessage) => this.#onMessage(message));
    this.worker.on('error', (error: Error) => this.#fail(error));
    this.worker.on('exit', () => {
      this.dead = true;
      this.#fail(new InstanceTerminatedError(`The worker of overlay "${compiled.manifest.name}"`));
      onExit(this);
    });
  }

  get busy(): boolean {
    return this.#current !== undefined;
  }

  /** Takes the call now (the slot is busy from this moment) and sends it once the worker is ready. */
  assign(pending: PendingCall): void {
    const id = this.#nextId++;
    this.#current = { id, pending };
    pending.slot = this;
    this.ready.then(
      () => {
        if (this.#current?.id !== id) return;
        const { exportName, inputJson, budget } = pending.request;
        const message: CallMessage = { type: 'call', id, exportName, inputJson, budget };
        this.worker.postMessage(message);
      },
      (error: unknown) => this.#fail(error instanceof Error ? error : new Error(String(error))),
    );
  }

  /** Kills the worker now (a runaway or cancelled call); resolves once the thread is gone. */
  async kill(): Promise<void> {
    this.dead = true;
    await this.worker.terminate();
  }

  #fail(error: Error): void {
    const current = this.#current;
    this.#current = undefined;
    current?.pending.reject(error);
  }


  #onMessage(message: WorkerMessage): void {
    if (message.type === 'host') {
      void this.#serveHost(message.name, message.args);
      return;
    }
    if (message.type !== 'result') return;
    const current = this.#current;
    if (current === undefined || current.id !== message.id) return;
    this.#current = undefined;
    this.#onIdle();
    const effects = current.pending.request.effects;
    effects.logs.push(...message.logs);
    effects.droppedLogLines += message.droppedLogLines;
    if (message.ok && message.result !== undefined) {
      effects.events.push(...message.events);
      current.pending.resolve(message.result);
    } else {
      current.pending.reject(reviveError(message.error ?? { name: 'Error', code: undefined, message: 'overlay call failed', details: {} }));
    }
  }

  /** Runs a host function for the blocked worker and wakes it with the reply. */
  async #serveHost(name: string, args: (string | number)[]): Promise<void> {
    const context: HostCallContext | undefined = this.#current?.pending.request.context;
    const fn = this.#compiled.hostImports.find((f) => f.name === name);
    let reply: string;
    let status = 0;
    try {
      if (fn === undefined || context === undefined) throw new InstanceTerminatedError(`Host function ${name}`);
      reply = JSON.stringify({ value: (await fn.invoke(context, args)) ?? null });
    } catch (error) {
      status = 1;
      reply = JSON.stringify({ error: serializeError(error) });
    }
    let bytes = encoder.encode(reply);
    if (bytes.length > HOST_REPLY.maxReplyBytes) {
      status = 1;
      bytes = encoder.encode(JSON.stringify({ error: { name: 'ForgeError', code: 'HOST_REPLY_TOO_LARGE', message: `The reply of ${name} is ${bytes.length} bytes; strict overlays accept at most ${HOST_REPLY.maxReplyBytes}.`, details: {} } }));
    }
    if (this.dead) return;
    this.#replyBytes.set(bytes);
    Atomics.store(this.#control, HOST_REPLY.length, bytes.length);
    Atomics.store(this.#control, HOST_REPLY.status, status);
    Atomics.store(this.#control, HOST_REPLY.flag, 1);
    Atomics.notify(this.#control, HOST_REPLY.flag);
  }
}

const encoder = new TextEncoder();

/**
 * Strict mode: every call runs in a worker thread from a small pool. Async host functions are a blocking hop
 * (`Atomics.wait` on a SharedArrayBuffer); a call past its deadline, or cancelled, has its worker terminated and
 * replaced, so even a runaway that never yields is stopped.
 */
export class StrictExecutor implements Executor {
  readonly #compiled: CompiledOverlay;
  readonly #size: number;
  readonly #slots: WorkerSlot[] = [];
  readonly #queue: PendingCall[] = [];
  #closed = false;

  constructor(compiled: CompiledOverlay, poolSize = DEFAULT_STRICT_POOL_SIZE) {
    this.#compiled = compiled;
    this.#size = Math.max(1, poolSize);
  }

  /** Starts the first worker and waits until it has instantiated the module (so a broken module fails the load). */
  async start(): Promise<void> {
    await this.#spawn().ready;
  }

  execute(request: ExecuteRequest): Promise<RawCallResult> {
    if (this.#closed) return Promise.reject(new InstanceTerminatedError(`Overlay "${this.#compiled.manifest.name}"`));
    const pending = { request } as PendingCall;
    const work = new Promise<RawCallResult>((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
      this.#queue.push(pending);
      this.#dispatch();
    });
    return raceDeadline(work, {
      deadlineMs: request.deadlineMs,
      signal: request.signal,
      onDeadline: () => new DeadlineExceededError(request.exportName, request.deadlineMs),
      onAbort: () => new CallCancelledError(request.exportName),
      onGiveUp: async () => {
        const queued = this.#queue.indexOf(pending);
        if (queued >= 0) this.#queue.splice(queued, 1);
        if (pending.slot !== undefined) await pending.slot.kill();
      },
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const pending of this.#queue.splice(0)) pending.reject(new InstanceTerminatedError(`Overlay "${this.#compiled.manifest.name}"`));
    await Promise.all(this.#slots.map((slot) => slot.kill()));
  }

  #spawn(): WorkerSlot {
    const slot = new WorkerSlot(
      this.#compiled,
      (exited) => {
        const at = this.#slots.indexOf(exited);
        if (at >= 0) this.#slots.splice(at, 1);
        if (!this.#closed) this.#dispatch();
      },
      () => queueMicrotask(() => this.#dispatch()),
    );
    this.#slots.push(slot);
    return slot;
  }

  /** Hands queued calls to idle workers, spawning up to the pool size. */
  #dispatch(): void {
    while (this.#queue.length > 0) {
      let slot = this.#slots.find((s) => !s.busy && !s.dead);
      if (slot === undefined && this.#slots.length < this.#size) slot = this.#spawn();
      const pending = slot === undefined ? undefined : this.#queue.shift();
      if (slot === undefined || pending === undefined) return;
      slot.assign(pending);
    }
  }
}
