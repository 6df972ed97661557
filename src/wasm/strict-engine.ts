import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CallCancelledError, DeadlineExceededError, InstanceTerminatedError, InvalidCallInputError, reviveError, serializeError, WorkerCrashedError } from './errors.ts';
import { raceDeadline, type ExecuteRequest, type Executor } from './executor.ts';
import { invokeHost } from './host-functions.ts';
import type { RawCallResult } from './instance.ts';
import type { CompiledOverlay } from './loader.ts';
import { CHANNEL, receive, send, STATE, type CallReply, type CallRequest, type HostReply, type HostRequest, type WorkerInit, type WorkerStartup } from './strict-protocol.ts';

/** A state-word value only the kernel thread writes, when the worker is gone. */
const DEAD = -1;

/** Workers per overlay: calls beyond this wait in a FIFO queue. */
export const DEFAULT_STRICT_POOL_SIZE = 2;
/**
 * Each worker's own V8 heap: overlays live in wasm memory (capped separately); the JS side only marshals a call's
 * input, output, events and logs, all bounded (about 20 MB at most as JSON). A worker that passes it dies alone and
 * fails its call with WORKER_CRASHED.
 */
const WORKER_LIMITS = { maxOldGenerationSizeMb: 128, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 };
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
  readonly #channel = new SharedArrayBuffer(CHANNEL.headerBytes + CHANNEL.areaBytes);
  readonly #control = new Int32Array(this.#channel, 0, CHANNEL.headerBytes / 4);
  readonly #compiled: CompiledOverlay;
  readonly #onIdle: () => void;
  #current: PendingCall | undefined;
  dead = false;
  /** Set when the kernel ends the worker itself (deadline, cancel, close), as opposed to the worker dying. */
  #killed = false;

  constructor(compiled: CompiledOverlay, onExit: (slot: WorkerSlot) => void, onIdle: () => void) {
    this.#compiled = compiled;
    this.#onIdle = onIdle;
    const init: WorkerInit = {
      module: compiled.module,
      maxPages: compiled.manifest.memoryPages,
      maxStackBytes: compiled.maxStackBytes,
      startBudget: compiled.startBudget,
      hostImports: compiled.hostImports.map(({ name, capability, async, params, result }) => ({ name, capability, async, params, result })),
      channel: this.#channel,
    };
    this.worker = new Worker(WORKER_URL, { workerData: init, resourceLimits: WORKER_LIMITS });
    this.ready = new Promise((resolve, reject) => {
      this.worker.once('message', (message: WorkerStartup) => {
        if (message.type === 'ready') resolve();
        else reject(reviveError(message.error));
      });
      this.worker.once('error', reject);
    });
    this.ready.catch(() => undefined);
    // A worker that errors is gone at once for the pool (it exits next): no call may be handed to it meanwhile.
    this.worker.on('error', (error: Error & { code?: string }) => {
      this.#release();
      this.#fail(this.#crash(error.code === 'ERR_WORKER_OUT_OF_MEMORY' ? 'it ran out of memory' : `${error.name}: ${error.message}`));
    });
    this.worker.on('exit', (code) => {
      this.#release();
      this.#fail(this.#killed ? new InstanceTerminatedError(`The worker of overlay "${compiled.manifest.name}"`) : this.#crash(`it exited with code ${code}`));
      onExit(this);
    });
  }

  get busy(): boolean {
    return this.#current !== undefined;
  }

  /** Takes the call now (the slot is busy from this moment) and runs it once the worker is ready. */
  assign(pending: PendingCall): void {
    this.#current = pending;
    pending.slot = this;
    this.ready.then(
      () => this.#exchange(pending),
      (error: unknown) => this.#fail(error instanceof Error ? error : new Error(String(error))),
    );
  }

  #crash(reason: string): Error {
    return new WorkerCrashedError(this.#current?.request.exportName ?? '(startup)', reason);
  }

  /** Kills the worker now (a runaway or cancelled call); resolves once the thread is gone. */
  async kill(): Promise<void> {
    this.#killed = true;
    this.#release();
    await this.worker.terminate();
  }

  /** Marks the slot dead and wakes our own waiter on the channel, which would otherwise wait for a dead worker. */
  #release(): void {
    this.dead = true;
    Atomics.store(this.#control, CHANNEL.state, DEAD);
    Atomics.notify(this.#control, CHANNEL.state);
  }

  #fail(error: Error): void {
    const current = this.#current;
    this.#current = undefined;
    current?.reject(error);
  }

  /** Sends the call, serves the worker's host requests, and settles the call with the worker's reply. */
  async #exchange(pending: PendingCall): Promise<void> {
    if (this.dead || this.#current !== pending) return;
    const { exportName, inputJson, budget } = pending.request;
    try {
      send(this.#channel, STATE.call, { exportName, inputJson, budget } satisfies CallRequest);
    } catch (error) {
      Atomics.store(this.#control, CHANNEL.state, STATE.idle);
      this.#settle(() => pending.reject(new InvalidCallInputError('INPUT_TOO_LARGE', (error as Error).message)));
      return;
    }
    let waiting: number = STATE.call;
    for (;;) {
      const state = await this.#waitWhile(waiting);
      if (this.dead || state === DEAD) return;
      if (state === STATE.host) {
        const request = receive<HostRequest>(this.#channel);
        const reply = await this.#serveHost(request, pending);
        if (this.dead) return;
        try {
          send(this.#channel, STATE.reply, reply, `The result of ${request.name}`);
        } catch (error) {
          send(this.#channel, STATE.reply, { error: serializeError(error) } satisfies HostReply);
        }
        waiting = STATE.reply;
        continue;
      }
      const reply = receive<CallReply>(this.#channel);
      Atomics.store(this.#control, CHANNEL.state, STATE.idle);
      const effects = pending.request.effects;
      effects.logs.push(...reply.logs);
      effects.droppedLogLines += reply.droppedLogLines;
      if (reply.ok && reply.result !== undefined) {
        effects.events.push(...reply.events);
        const result = reply.result;
        this.#settle(() => pending.resolve(result));
      } else {
        const error = reviveError(reply.error ?? { name: 'Error', code: undefined, message: 'overlay call failed', details: {} });
        this.#settle(() => pending.reject(error));
      }
      return;
    }
  }

  #settle(settle: () => void): void {
    this.#current = undefined;
    settle();
    this.#onIdle();
  }

  /** Resolves with the state word once it no longer holds `value`. */
  async #waitWhile(value: number): Promise<number> {
    for (;;) {
      const current = Atomics.load(this.#control, CHANNEL.state);
      if (current !== value) return current;
      const wait = Atomics.waitAsync(this.#control, CHANNEL.state, value);
      if (wait.async) await wait.value;
    }
  }

  /** Runs a host function for the blocked worker. */
  async #serveHost(request: HostRequest, pending: PendingCall): Promise<HostReply> {
    const fn = this.#compiled.hostImports.find((f) => f.name === request.name);
    try {
      if (fn === undefined) throw new InstanceTerminatedError(`Host function ${request.name}`);
      return { value: (await invokeHost(fn, pending.request.context, request.args)) ?? null };
    } catch (error) {
      return { error: serializeError(error) };
    }
  }
}



/**
 * Strict mode: every call runs in a worker thread from a small pool, reached through a SharedArrayBuffer channel
 * (see strict-protocol.ts). Async host functions are a blocking hop: the worker sleeps in `Atomics.wait` while the
 * kernel thread serves them. A call past its deadline, or cancelled, has its worker terminated and replaced, so even
 * a runaway that never yields is stopped.
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
