import { setMaxListeners } from 'node:events';
import { CallCancelledError, DeadlineExceededError, InstanceTerminatedError } from './errors.ts';
import { raceDeadline, type ExecuteRequest, type Executor } from './executor.ts';
import { invokeHost, type HostCallContext, type HostFunctionSignature } from './host-functions.ts';
import { OverlayInstance, type InstanceOptions, type RawCallResult } from './instance.ts';
import type { CompiledOverlay } from './loader.ts';
import type { StartSnapshot } from './start-snapshot.ts';

/**
 * Instances per overlay unless the load says otherwise: calls beyond this many at once (while some wait on an async
 * host call) wait for one to be free, so an overlay holds at most this many memories (each up to its memory cap).
 */
export const DEFAULT_RELAXED_INSTANCES = 4;

/** True when this Node has JSPI (`WebAssembly.Suspending`), which relaxed mode needs for async host functions. */
export function hasJspi(): boolean {
  return typeof WebAssembly.Suspending === 'function' && typeof WebAssembly.promising === 'function';
}

interface PooledInstance {
  instance: OverlayInstance;
  /** The call the instance serves now; its host functions read it. */
  context: HostCallContext | undefined;
}

/** A call waiting for a free instance. */
interface QueuedCall {
  start(pooled: PooledInstance): void;
  fail(error: Error): void;
  /** Set when its caller stopped waiting (deadline, cancel): an instance handed to it goes back at once. */
  abandoned: boolean;
}

/**
 * Relaxed mode: instances in this process. Async host functions suspend the overlay through JSPI; exports are
 * wrapped with `WebAssembly.promising` only when the overlay imports one (the wrapper costs ≈1.45 µs a call).
 * A deadline abandons the call (the instance is dropped) but cannot interrupt a running loop: fuel does that.
 */
export class RelaxedExecutor implements Executor {
  readonly #compiled: CompiledOverlay;
  readonly #maxInstances: number;
  readonly #idle: PooledInstance[] = [];
  /** Calls waiting for an instance, first come first served. */
  readonly #queue: QueuedCall[] = [];
  /** Ends every call in flight (suspended on a host call) when the overlay is closed. */
  readonly #closing = new AbortController();
  #snapshot: StartSnapshot | undefined;
  /** Instances that exist: idle or serving a call. */
  #instances = 0;
  #closed = false;

  constructor(compiled: CompiledOverlay, maxInstances = DEFAULT_RELAXED_INSTANCES) {
    this.#compiled = compiled;
    this.#maxInstances = Math.max(1, maxInstances);
    // Every call in flight listens for close(): as many as there are calls, not a leak.
    setMaxListeners(0, this.#closing.signal);
  }

  /** Instantiates the overlay's first instance (its start function runs now, so a failing one is refused at load). */
  async start(): Promise<void> {
    const pooled: PooledInstance = { instance: undefined as unknown as OverlayInstance, context: undefined };
    pooled.instance = await OverlayInstance.first({ ...this.#options(pooled), startBudget: this.#compiled.startBudget });
    this.#snapshot = pooled.instance.snapshot;
    if (!pooled.instance.broken) {
      this.#instances++;
      this.#idle.push(pooled);
    }
  }

  execute(request: ExecuteRequest): RawCallResult | Promise<RawCallResult> {
    if (this.#closed) throw new InstanceTerminatedError(`Overlay "${this.#compiled.manifest.name}"`);
    if (request.signal?.aborted === true) throw new CallCancelledError(request.exportName);
    const pooled = this.#acquire();
    if (pooled !== undefined) return this.#run(pooled, request);
    // Every instance is serving a call: wait for one, within the call's deadline.
    let queued: QueuedCall | undefined;
    const deadline = performance.now() + request.deadlineMs;
    const work = new Promise<RawCallResult>((resolve, reject) => {
      queued = {
        abandoned: false,
        start: (free) => {
          if (queued?.abandoned === true) {
            this.#release(free);
            return;
          }
          try {
            // The deadline counts from the call, not from when an instance became free.
            resolve(this.#run(free, { ...request, deadlineMs: Math.max(1, Math.ceil(deadline - performance.now())) }));
          } catch (error) {
            reject(error instanceof Error ? error : new Error(String(error)));
          }
        },
        fail: reject,
      };
      this.#queue.push(queued);
    });
    return this.#race(work, request, () => {
      if (queued === undefined) return;
      queued.abandoned = true;
      const at = this.#queue.indexOf(queued);
      if (at >= 0) this.#queue.splice(at, 1);
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#idle.length = 0;
    const terminated = (): InstanceTerminatedError => new InstanceTerminatedError(`Overlay "${this.#compiled.manifest.name}"`);
    for (const queued of this.#queue.splice(0)) queued.fail(terminated());
    // Calls suspended on a host call end now; their instances are dropped when they come back.
    this.#closing.abort();
    return Promise.resolve();
  }

  /** Runs the call on `pooled`: synchronously when nothing suspends, else racing its deadline, signal and close(). */
  #run(pooled: PooledInstance, request: ExecuteRequest): RawCallResult | Promise<RawCallResult> {
    pooled.context = request.context;
    let work: RawCallResult | Promise<RawCallResult>;
    try {
      work = pooled.instance.call(request.exportName, request.inputJson, request.budget, request.effects);
    } catch (error) {
      this.#release(pooled);
      throw error;
    }
    // A call that did not suspend is already over: no deadline can apply to it any more.
    if (!(work instanceof Promise)) {
      this.#release(pooled);
      return work;
    }
    return this.#race(work, request, () => {
      pooled.instance.broken = true;
    }).finally(() => this.#release(pooled));
  }

  #race(work: Promise<RawCallResult>, request: ExecuteRequest, onGiveUp: () => void): Promise<RawCallResult> {
    return raceDeadline(work, {
      deadlineMs: request.deadlineMs,
      signal: request.signal,
      terminated: this.#closing.signal,
      onDeadline: () => new DeadlineExceededError(request.exportName, request.deadlineMs),
      onAbort: () => new CallCancelledError(request.exportName),
      onTerminated: () => new InstanceTerminatedError(`Overlay "${this.#compiled.manifest.name}"`),
      onGiveUp,
    });
  }

  /** An idle instance, or a new one while the overlay has fewer than its limit; undefined when it must wait. */
  #acquire(): PooledInstance | undefined {
    const idle = this.#idle.pop();
    if (idle !== undefined) return idle;
    if (this.#instances >= this.#maxInstances) return undefined;
    const pooled = this.#create();
    this.#instances++;
    return pooled;
  }

  /** Gives the instance to the next waiting call, keeps it idle, or drops it (broken, or the overlay closed). */
  #release(pooled: PooledInstance): void {
    pooled.context = undefined;
    let free: PooledInstance | undefined = pooled;
    if (pooled.instance.broken || this.#closed) {
      this.#instances--;
      free = undefined;
    }
    const next = this.#queue.shift();
    if (next === undefined) {
      if (free !== undefined) this.#idle.push(free);
      return;
    }
    try {
      free ??= this.#acquire();
    } catch (error) {
      next.fail(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    // A waiting call starts from a fresh turn of the event loop, not from inside the call that just ended.
    const handed = free;
    if (handed === undefined) this.#queue.unshift(next);
    else queueMicrotask(() => next.start(handed));
  }

  #create(): PooledInstance {
    const pooled: PooledInstance = { instance: undefined as unknown as OverlayInstance, context: undefined };
    pooled.instance = OverlayInstance.from(this.#options(pooled), this.#snapshot as StartSnapshot);
    return pooled;
  }

  /** How to instantiate: host functions read the call `pooled` serves now. */
  #options(pooled: PooledInstance): InstanceOptions {
    const compiled = this.#compiled;
    const byName = new Map(compiled.hostImports.map((f) => [f.name, f]));
    return {
      module: compiled.module,
      maxPages: compiled.manifest.memoryPages,
      maxStackBytes: compiled.maxStackBytes,
      hostImports: compiled.hostImports,
      suspending: true,
      invokeHost: (signature: HostFunctionSignature, args) => {
        const context = pooled.context;
        const fn = byName.get(signature.name);
        if (context === undefined || fn === undefined) throw new InstanceTerminatedError(`Host function ${signature.name}`);
        return invokeHost(fn, context, args);
      },
    };
  }
}
