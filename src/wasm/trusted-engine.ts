import { createHash } from 'node:crypto';
import { nanoid } from 'nanoid';
import { createLogger, type Logger } from '../logger.ts';
import { parseManifest } from '../manifest.ts';
import { isForgeError } from '../errors.ts';
import { CallCancelledError, DeadlineExceededError, ExportNotFoundError, InstanceTerminatedError, InvalidOutputError, OverlayTrapError, TrustError } from './errors.ts';
import { LoadedOverlay, type LoadWasmOptions, type OverlayEngine } from './engine.ts';
import { raceDeadline, type ExecuteRequest, type Executor } from './executor.ts';
import type { Capability } from './abi.ts';
import type { CallCaller, CallEffects, HostCallContext } from './host-functions.ts';
import type { RawCallResult } from './instance.ts';

/** What a native overlay's export receives besides its input. */
export interface NativeContext {
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
  /** Buffered like a wasm overlay's `event_publish`: delivered only if the call succeeds. */
  publish(type: string, payload: unknown): void;
  signal: AbortSignal;
  /** Whose call it is: trust, correlation id, and the run and capsule it serves (null outside a pipeline run). */
  caller: CallCaller;
  /** The capabilities its manifest declares (a trusted overlay is granted what it declares). */
  capabilities: readonly Capability[];
}

/** A TypeScript overlay run in-process without a sandbox: only for code the service itself ships. */
export interface NativeOverlay {
  /** The manifest without `sha256` (there are no bytes to hash). */
  manifest: Record<string, unknown>;
  exports: Record<string, (input: unknown, context: NativeContext) => unknown>;
}

export interface TrustedRegistration {
  /** The overlay is part of the embedding service, not a plugin from elsewhere. */
  internal: boolean;
  /** The service vouches for it: it runs with the kernel's full privileges, unmetered. */
  trusted: boolean;
  logger?: Logger;
  onEvents?: LoadWasmOptions['onEvents'];
}

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;

class NativeExecutor implements Executor {
  readonly #overlay: NativeOverlay;
  #closed = false;

  constructor(overlay: NativeOverlay) {
    this.#overlay = overlay;
  }

  execute(request: ExecuteRequest): Promise<RawCallResult> {
    if (this.#closed) return Promise.reject(new InstanceTerminatedError(`Native overlay "${String(this.#overlay.manifest.name)}"`));
    const fn = Object.hasOwn(this.#overlay.exports, request.exportName) ? this.#overlay.exports[request.exportName] : undefined;
    // Calling an export that does not exist is the caller's mistake, as it is for a wasm overlay.
    if (typeof fn !== 'function') return Promise.reject(new ExportNotFoundError(request.exportName, Object.keys(this.#overlay.exports).filter((name) => typeof this.#overlay.exports[name] === 'function')));
    const work = (async (): Promise<RawCallResult> => {
      // Same isolation as a wasm call: the overlay gets its own copy of the input, never the caller's object.
      let output: unknown;
      try {
        output = await fn(JSON.parse(request.inputJson), context(request.effects, request.context));
      } catch (error) {
        // What the overlay throws is its own fault, as a wasm trap is, even a kernel error it caught elsewhere and let
        // escape (a call to another overlay that failed): only what its own context refused (a reserved event type)
        // keeps its code, as the same refusal does for a wasm overlay.
        if (REFUSED_BY_CONTEXT.has(error as object)) throw error;
        throw new OverlayTrapError(request.exportName, `it threw ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`, { cause: error, details: isForgeError(error) ? { thrownCode: error.code } : {} });
      }
      const outputJson = JSON.stringify(output);
      if (outputJson === undefined) throw new InvalidOutputError(request.exportName, 'it returned a value JSON cannot carry');
      return { outputJson, fuelUsed: 0 };
    })();
    return raceDeadline(work, {
      deadlineMs: request.deadlineMs,
      signal: request.signal,
      onDeadline: () => new DeadlineExceededError(request.exportName, request.deadlineMs),
      onAbort: () => new CallCancelledError(request.exportName),
      onGiveUp: () => undefined,
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

/** Errors a native overlay's context raised (its publish refused): the call fails with their own code. */
const REFUSED_BY_CONTEXT = new WeakSet<object>();

/** Runs a context function; what it throws is marked as the context's refusal. */
function refusing<T>(work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (typeof error === 'object' && error !== null) REFUSED_BY_CONTEXT.add(error);
    throw error;
  }
}

function context(effects: CallEffects, call: HostCallContext): NativeContext {
  return {
    caller: call.caller,
    capabilities: call.capabilities,
    log: (level, message) => refusing(() => effects.log(LEVELS.indexOf(level), message)),
    publish: (type, payload) => {
      const json = JSON.stringify(payload) ?? 'null';
      refusing(() => effects.publish(type, json));
    },
    signal: call.signal,
  };
}

/**
 * Registers a native TypeScript overlay (trusted mode). Refused with TRUST_REQUIRED unless the registration says
 * it is both internal and trusted: native code cannot be metered, capped or killed, so it must be the service's own.
 */
export function loadNativeOverlay(overlay: NativeOverlay, registration: TrustedRegistration): OverlayEngine {
  if (registration.internal !== true || registration.trusted !== true) {
    throw new TrustError('A native (trusted-mode) overlay runs unsandboxed: register it with { internal: true, trusted: true } only if it is part of your service; otherwise compile it to WebAssembly and load it in strict mode.');
  }
  if (typeof overlay !== 'object' || overlay === null || typeof overlay.exports !== 'object' || overlay.exports === null) {
    throw new TrustError('A native overlay is an object with a manifest and an exports object of functions.');
  }
  const fingerprint = createHash('sha256').update(JSON.stringify(overlay.manifest)).digest('hex');
  const manifest = parseManifest({ ...overlay.manifest, sha256: fingerprint });
  const id = `ov_${nanoid(12)}`;
  const logger = (registration.logger ?? createLogger()).child({ overlayId: id, overlay: manifest.name });
  const exports = Object.keys(overlay.exports).filter((name) => typeof overlay.exports[name] === 'function');
  return new LoadedOverlay({ id, mode: 'trusted', compiled: { manifest, exports, granted: manifest.capabilities }, executor: new NativeExecutor(overlay), logger, onEvents: registration.onEvents });
}
