import type { CallEffects, HostCallContext } from './host-functions.ts';
import type { RawCallResult } from './instance.ts';

/** One call as an engine executes it: JSON text in, with its budget, deadline and effects sink. */
export interface ExecuteRequest {
  exportName: string;
  inputJson: string;
  budget: number;
  deadlineMs: number;
  signal: AbortSignal | undefined;
  effects: CallEffects;
  context: HostCallContext;
}

/** How an engine runs calls: in-process instances (relaxed) or a worker pool (strict). */
export interface Executor {
  /** Synchronous where the call could not suspend (relaxed, no async host function): one promise less a call. */
  execute(request: ExecuteRequest): RawCallResult | Promise<RawCallResult>;
  /** Stops accepting calls and releases instances or workers; calls in flight end with INSTANCE_TERMINATED. */
  close(): Promise<void>;
}

/**
 * Settles with `work`, or rejects when the deadline passes, the caller's signal aborts or the engine is closed
 * (`terminated`), whichever comes first; `onGiveUp` runs once when the call is abandoned (to discard the instance or
 * kill the worker).
 */
export function raceDeadline<T>(
  work: Promise<T>,
  options: {
    deadlineMs: number;
    signal: AbortSignal | undefined;
    onDeadline: () => Error;
    onAbort: () => Error;
    onGiveUp: () => void | Promise<void>;
    terminated?: AbortSignal;
    onTerminated?: () => Error;
  },
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', aborted);
      options.terminated?.removeEventListener('abort', terminated);
      return true;
    };
    const giveUp = (error: Error): void => {
      if (!finish()) return;
      void Promise.resolve(options.onGiveUp()).finally(() => reject(error));
    };
    const timer = setTimeout(() => giveUp(options.onDeadline()), options.deadlineMs);
    const aborted = (): void => giveUp(options.onAbort());
    const terminated = (): void => giveUp(options.onTerminated?.() ?? options.onAbort());
    work.then(
      (value) => {
        if (finish()) resolve(value);
      },
      (error: unknown) => {
        if (finish()) reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
    if (options.signal?.aborted === true) aborted();
    else options.signal?.addEventListener('abort', aborted, { once: true });
    if (options.terminated?.aborted === true) terminated();
    else options.terminated?.addEventListener('abort', terminated, { once: true });
  });
}
