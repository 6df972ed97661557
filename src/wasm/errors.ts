import { ForgeError } from '../errors.ts';

/** The bytes are not a usable WebAssembly module (not wasm, malformed, or using a feature the sandbox refuses). */
export class InvalidModuleError extends ForgeError {
  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super('INVALID_MODULE', message, options);
  }
}
