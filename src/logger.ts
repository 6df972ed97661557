import { pino, type Logger, type LoggerOptions } from 'pino';
import pinoPretty from 'pino-pretty';
import { InvalidInputError } from './errors.ts';

export type { Logger } from 'pino';

/** How log lines are written: `json` (one object a line), `pretty` (human-readable), `auto` (pretty on a TTY). */
export type LogFormat = 'json' | 'pretty' | 'auto';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty', 'auto'];

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerConfig {
  /** Minimum level written; default `info`, or `FORGE_LOG_LEVEL`. */
  level?: LogLevel;
  /** Default `json`, or `FORGE_LOG_FORMAT`. */
  format?: LogFormat;
  /** Where lines go; default standard output. Must be a TTY for `auto` to pick `pretty`. */
  destination?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Fields bound to every line, e.g. `{ service: 'billing' }`. */
  base?: Record<string, unknown>;
}

/**
 * Creates the root pino logger of a kernel. Modules log through child loggers bound to `overlayId`, `runId`,
 * `cascadeId` or `correlationId` (`logger.child({ overlayId })`), never through a global.
 */
export function createLogger(config: LoggerConfig = {}): Logger {
  const level = config.level ?? parseEnum('FORGE_LOG_LEVEL', process.env.FORGE_LOG_LEVEL, LOG_LEVELS) ?? 'info';
  const format = config.format ?? parseEnum('FORGE_LOG_FORMAT', process.env.FORGE_LOG_FORMAT, LOG_FORMATS) ?? 'json';
  if (!LOG_LEVELS.includes(level)) {
    throw new InvalidInputError(`Unknown log level "${String(level)}": use one of ${LOG_LEVELS.join(', ')}.`);
  }
  if (!LOG_FORMATS.includes(format)) {
    throw new InvalidInputError(`Unknown log format "${String(format)}": use one of ${LOG_FORMATS.join(', ')}.`);
  }
  const destination = config.destination ?? process.stdout;
  const options: LoggerOptions = { level, base: { ...config.base } };
  const pretty = format === 'pretty' || (format === 'auto' && destination.isTTY === true);
  if (pretty) {
    return pino(options, pinoPretty({ destination, sync: true, colorize: destination.isTTY === true }));
  }
  return pino(options, destination);
}

function parseEnum<T extends string>(name: string, raw: string | undefined, allowed: readonly T[]): T | undefined {
  if (raw === undefined || raw === '') return undefined;
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  throw new InvalidInputError(`${name}="${raw}" is not valid: use one of ${allowed.join(', ')}.`);
}
