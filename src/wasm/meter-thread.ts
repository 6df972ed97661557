import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { MeterUnavailableError } from './binaryen.ts';
import { ModuleLimitError, reviveError } from './errors.ts';
import type { MeterOptions } from './fuel-meter.ts';
import type { MeterReply, MeterRequest } from './meter-worker.ts';

/**
 * The meter's own V8 limits, far above a strict overlay worker's. binaryen reads and the meter walks expressions
 * recursively, so the stack bounds how deeply a module may nest: measured here, the kernel's thread (≈1 MB) overflows
 * between 1,500 and 3,000 nested blocks, Node's worker default (4 MB) between 5,000 and 8,000, 16 MB between 20,000
 * and 30,000. The meter keeps JS data per function and per expression, so a legitimate module of 100,000 functions
 * needs far more than a small heap. Reaching the heap limit usually ends this worker only, but an allocation V8
 * cannot collect for can still abort the whole process (nodejs/node#47224; seen here with a 48 MB limit): the
 * ceilings on what the kernel will meter (ModuleLimitError) stay the defence against a module built to exhaust it.
 */
const WORKER_LIMITS = { stackSizeMb: 16, maxOldGenerationSizeMb: 2048 };
/** The worker script sits beside this module, as .ts in a checkout and .js in the published package. */
const WORKER_URL = new URL(`./meter-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);

interface MeterJob {
  request: MeterRequest;
  resolve(bytes: Uint8Array): void;
  reject(error: Error): void;
}

/** Why the worker died, as the error its module's caller gets. */
function deathError(cause: Error | number): ModuleLimitError | MeterUnavailableError {
  if (cause instanceof Error && (cause as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY') {
    return new ModuleLimitError(
      'meterMemory',
      cause.message,
      `${WORKER_LIMITS.maxOldGenerationSizeMb} MB of heap`,
      "The fuel meter's worker ran out of memory on this module and was stopped (a fresh worker meters the next one): make the module smaller, with fewer or smaller functions.",
    );
  }
  return unavailable(cause instanceof Error ? cause : `exit code ${cause}`);
}

/** The worker could not be started, sent the module, or ended for a reason other than the module's size. */
function unavailable(cause: unknown): MeterUnavailableError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new MeterUnavailableError(`The fuel meter's worker failed (${reason}); a fresh worker meters the next module. Check that forge-kernel is installed completely and that the process may start worker threads.`, {
    cause,
  });
}

/**
 * The thread binaryen runs in: started on the first module to meter, serving one module at a time in FIFO order, and
 * replaced after any failure. A failed module may leave binaryen.js unusable (after an `Aborted(…)` every later call
 * throws, and a stack overflow unwinds through its C++ without cleanup), and nothing outside tells a clean failure
 * from a poisoned one, so a failure costs the next module a fresh worker (≈0.6 s of that thread, not the kernel's).
 */
class MeterThread {
  readonly #queue: MeterJob[] = [];
  #worker: Worker | undefined;
  #current: MeterJob | undefined;
  #nextId = 0;

  meter(bytes: Uint8Array, options: MeterOptions): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      // A copy of exactly the module (a view may share a larger buffer), whose buffer is then moved, not cloned.
      this.#queue.push({ request: { id: ++this.#nextId, bytes: bytes.slice(), options }, resolve, reject });
      this.#next();
    });
  }

  #next(): void {
    if (this.#current !== undefined) return;
    const job = this.#queue.shift();
    if (job === undefined) {
      // Idle: a thread nobody waits on must not keep the process alive.
      this.#worker?.unref();
      return;
    }
    this.#current = job;
    try {
      const worker = (this.#worker ??= this.#start());
      worker.ref();
      worker.postMessage(job.request, [job.request.bytes.buffer]);
    } catch (error) {
      this.#current = undefined;
      job.reject(unavailable(error));
      this.#next();
    }
  }

  #start(): Worker {
    const worker = new Worker(WORKER_URL, { resourceLimits: WORKER_LIMITS });
    worker.on('message', (reply: MeterReply) => this.#answer(worker, reply));
    worker.on('error', (error: Error) => this.#died(worker, error));
    worker.on('exit', (code: number) => this.#died(worker, code));
    return worker;
  }

  #answer(worker: Worker, reply: MeterReply): void {
    const job = this.#current;
    if (worker !== this.#worker || job?.request.id !== reply.id) return;
    this.#current = undefined;
    if ('error' in reply) {
      this.#worker = undefined;
      void worker.terminate();
      job.reject(reviveError(reply.error));
    } else {
      job.resolve(reply.bytes);
    }
    this.#next();
  }

  /** The worker is gone ('error' then 'exit' for one death; the second finds it already replaced). */
  #died(worker: Worker, cause: Error | number): void {
    if (worker !== this.#worker) return;
    this.#worker = undefined;
    const job = this.#current;
    this.#current = undefined;
    job?.reject(deathError(cause));
    this.#next();
  }
}

/** One meter thread per process: a thread is a process-wide resource, unref'd while idle. */
const thread = new MeterThread();

/**
 * Meters `bytes` (see `meterModule`) in the meter's worker thread, so the calling thread's event loop keeps turning
 * however long binaryen takes. Every failure is a ForgeError: `INVALID_MODULE`, `MODULE_LIMIT` (too deeply nested,
 * or the worker ran out of memory; or a ceiling the meter itself checks) or `METER_UNAVAILABLE`.
 */
export function meterOffThread(bytes: Uint8Array, options: MeterOptions): Promise<Uint8Array> {
  return thread.meter(bytes, options);
}
