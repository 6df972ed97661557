import { CallCancelledError, DeadlineExceededError, InstanceTerminatedError } from './errors.ts';
import { raceDeadline, type ExecuteRequest, type Executor } from './executor.ts';
import type { HostCallContext, HostFunctionSignature } from './host-functions.ts';
import { OverlayInstance, type RawCallResult } from './instance.ts';
import type { CompiledOverlay } from './loader.ts';

/** Idle instances kept per overlay; more are created when calls overlap (e.g. while one waits on a host call). */
const MAX_IDLE_INSTANCES = 4;

/** True when this Node has JSPI (`WebAssembly.Suspending`), which relaxed mode needs for async host functions. */
export function hasJspi(): boolean {
  return typeof WebAssembly.Suspending === 'function' && typeof WebAssembly.promising === 'function';
}

interface PooledInstance {
  instance: OverlayInstance;
  /** The call the instance serves now; its host functions read it. */
  context: HostCallContext | undefined;
}

/**
 * Relaxed mode: instances in this process. Async host functions suspend the overlay through JSPI; exports are
 * wrapped with `WebAssembly.promising` only when the overlay imports one (the wrapper costs ≈1.45 µs a call).
 * A deadline abandons the call (the instance is dropped) but cannot interrupt a running loop: fuel does that.
 */
export class RelaxedExecutor implements Executor {
  readonly #compiled: CompiledOverlay;
  readonly #idle: PooledInstance[] = [];
  #closed = false;

  constructor(compiled: CompiledOverlay) {
    this.#compiled = compiled;
    // Instantiate once now, so a module whose start function fails is refused at load.
    this.#idle.push(this.#create());
  }

  execute(request: ExecuteRequest): RawCallResult | Promise<RawCallResult> {
    if (this.#closed) throw new InstanceTerminatedError(`Overlay "${this.#compiled.manifest.name}"`);
    if (request.signal?.aborted === true) throw new CallCancelledError(request.exportName);
    const pooled = this.#idle.pop() ?? this.#create();
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
    return raceDeadline(work, {
      deadlineMs: request.deadlineMs,
      signal: request.signal,
      onDeadline: () => new DeadlineExceededError(request.exportName, request.deadlineMs),
      onAbort: () => new CallCancelledError(request.exportName),
      onGiveUp: () => {
        pooled.instance.broken = true;
      },
    }).finally(() => this.#release(pooled));
  }

  #release(pooled: PooledInstance): void {
    pooled.context = undefined;
    if (!pooled.instance.broken && !this.#closed && this.#idle.length < MAX_IDLE_INSTANCES) this.#idle.push(pooled);
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#idle.length = 0;
    return Promise.resolve();
  }

  #create(): PooledInstance {
    const compiled = this.#compiled;
    const pooled: PooledInstance = { instance: undefined as unknown as OverlayInstance, context: undefined };
    const byName = new Map(compiled.hostImports.map((f) => [f.name, f]));
    pooled.instance = new OverlayInstance({
      module: compiled.module,
      maxPages: compiled.manifest.memoryPages,
      maxStackBytes: compiled.maxStackBytes,
      hostImports: compiled.hostImports,
      suspending: true,
      invokeHost: (signature: HostFunctionSignature, args) => {
        const context = pooled.context;
        const fn = byName.get(signature.name);
        if (context === undefined || fn === undefined) throw new InstanceTerminatedError(`Host function ${signature.name}`);
        return fn.invoke(context, args);
      },
    });
    return pooled;
  }
}
