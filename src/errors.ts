/**
 * The base of every error the kernel throws on purpose. `code` is stable across releases (callers switch on it;
 * messages may be reworded), and the message says what to do next.
 */
export class ForgeError extends Error {
  /** Stable, machine-readable identifier, e.g. `OUT_OF_FUEL`, `CAPABILITY_DENIED`, `PORT_IN_USE`. */
  readonly code: string;
  /** Structured facts about the failure (JSON-serializable), e.g. `{ fuelUsed: 1200 }`. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: string, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = Object.freeze({ ...options.details });
  }

  /** The shape printed by `--json` commands and sent over the wire: `{ code, message, details }`. */
  toJSON(): { code: string; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** True when `error` is a {@link ForgeError}, optionally with the given `code`. */
export function isForgeError(error: unknown, code?: string): error is ForgeError {
  return error instanceof ForgeError && (code === undefined || error.code === code);
}

/** Bad input to a public entry point: the caller's mistake, never counted against an overlay. */
export class InvalidInputError extends ForgeError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('INVALID_INPUT', message, { details });
  }
}
