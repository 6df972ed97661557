// JavaScript Promise Integration (JSPI), shipped in V8 13.x / Node 24, is not in TypeScript's DOM lib yet.
declare namespace WebAssembly {
  /** Wraps an async host function so a wasm import can suspend the calling wasm stack until it settles. */
  class Suspending {
    constructor(fn: (...args: never[]) => unknown);
  }
  /** Wraps a wasm export so that calling it returns a promise and its imports may suspend. */
  function promising<F extends (...args: never[]) => unknown>(fn: F): (...args: Parameters<F>) => Promise<Awaited<ReturnType<F>>>;
}
