export { ForgeError, InvalidInputError, isForgeError } from './errors.ts';
export { createLogger, type LogFormat, type LogLevel, type Logger, type LoggerConfig } from './logger.ts';
export { VERSION } from './version.ts';
