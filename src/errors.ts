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

/** Longest message from an overlay that results, logs and terminals carry (characters). */
export const MAX_OVERLAY_MESSAGE = 1_000;

/**
 * An overlay's own message made safe to show: control characters (terminal escapes among them) replaced, and cut
 * to {@link MAX_OVERLAY_MESSAGE} characters. It travels in run results, events, CLI output and the inspector.
 */
export function readableMessage(message: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = message.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '\uFFFD');
  return clean.length <= MAX_OVERLAY_MESSAGE ? clean : `${clean.slice(0, MAX_OVERLAY_MESSAGE)}… (${clean.length - MAX_OVERLAY_MESSAGE} more characters)`;
}
