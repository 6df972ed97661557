import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ForgeError } from '../../src/errors.ts';

/** The project root (two folders above this file). */
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Loopback only: these servers are for tests and local development and must never face a network. */
export const HOST = '127.0.0.1';

/** Why a service could not be started or stopped; `code` names the cause, the message the fix. */
export class ServiceError extends ForgeError {}

/** Progress lines go to standard error so that standard output stays `KEY=value` lines a shell can `eval`. */
export type Reporter = (line: string) => void;

/** Where service data, pids and logs live: `FORGE_SERVICES_DIR`, else `.forge/services` (git-ignored). */
export function servicesDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.FORGE_SERVICES_DIR ?? join(PROJECT_ROOT, '.forge', 'services'));
}

/** What `start` records about a server it launched, so that `stop` stops only what was started here. */
export interface ServiceState {
  name: string;
  pid: number;
  port: number;
  startedAt: string;
  logFile: string;
}

function stateFile(dir: string, name: string): string {
  return join(dir, `${name}.state.json`);
}

export function readState(dir: string, name: string): ServiceState | undefined {
  try {
    return JSON.parse(readFileSync(stateFile(dir, name), 'utf8')) as ServiceState;
  } catch {
    return undefined;
  }
}

export function writeState(dir: string, state: ServiceState): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(stateFile(dir, state.name), `${JSON.stringify(state, null, 2)}\n`);
}

export function removeState(dir: string, name: string): void {
  rmSync(stateFile(dir, name), { force: true });
}

/** Reads a port from the environment, refusing anything that is not a TCP port number. */
export function portFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new ServiceError('INVALID_CONFIG', `${name}="${raw}" is not a TCP port: use a number from 1 to 65535.`);
  }
  return port;
}

/** True when something accepts TCP connections on HOST:port. */
export function isListening(port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection({ host: HOST, port });
    const finish = (listening: boolean): void => {
      socket.destroy();
      done(listening);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * Connects to HOST:port, optionally sends `greeting`, and resolves to the first bytes the peer sends (undefined on
 * silence, refusal or timeout). Used to tell a real server from another program *before* a client library
 * connects: the NATS and Neo4j clients leave their socket open when a silent peer times them out, which would keep
 * this process from exiting.
 */
export function firstBytes(port: number, greeting: Uint8Array | undefined, timeoutMs = 2_000): Promise<Buffer | undefined> {
  return new Promise((done) => {
    const socket = createConnection({ host: HOST, port });
    const finish = (data: Buffer | undefined): void => {
      socket.destroy();
      done(data);
    };
    socket.setTimeout(timeoutMs, () => finish(undefined));
    socket.once('connect', () => {
      if (greeting !== undefined) socket.write(greeting);
    });
    socket.once('data', (data: Buffer) => finish(data));
    socket.once('error', () => finish(undefined));
    socket.once('end', () => finish(undefined));
  });
}

/** True when this process could bind HOST:port right now. */
export function canBind(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen({ host: HOST, port, exclusive: true }, () => server.close(() => done(true)));
  });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * True when `pid` still runs a command containing `marker`: pids are reused, and stopping "our" server must never
 * signal an unrelated process that inherited its number. Where /proc is missing, liveness has to do.
 */
export function isOurProcess(pid: number, marker: string): boolean {
  if (!isAlive(pid)) return false;
  const cmdline = `/proc/${pid}/cmdline`;
  if (!existsSync('/proc/self/cmdline')) return true;
  try {
    return readFileSync(cmdline, 'utf8').includes(marker);
  } catch {
    return false;
  }
}

/** What a finished command printed and how it ended; `error` is set when it could not be executed at all. */
export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
  error?: Error;
}

/** Runs a command to completion without blocking the event loop (another service may be starting alongside). */
export function runCommand(
  command: string,
  args: readonly string[],
  options: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CommandResult> {
  return new Promise((done) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? PROJECT_ROOT,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 600_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (error) => done({ status: null, stdout, stderr, error }));
    child.once('close', (status) => done({ status, stdout, stderr }));
  });
}

/** Finds an executable on PATH (or in the extra folders), or undefined. */
export function findExecutable(name: string, extraDirs: readonly string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...extraDirs];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Launches a long-running server in its own process group, detached from this process (it must outlive
 * `npm run services:start`), with its output in `logFile` (truncated: readiness is read from this run's lines
 * only). Resolves to its pid once spawned.
 */
export async function launchDetached(
  command: string,
  args: readonly string[],
  options: { logFile: string; env?: NodeJS.ProcessEnv; cwd?: string },
): Promise<number> {
  mkdirSync(dirname(options.logFile), { recursive: true });
  const log = openSync(options.logFile, 'w');
  try {
    const child = spawn(command, args, {
      cwd: options.cwd ?? PROJECT_ROOT,
      env: options.env ?? process.env,
      detached: true,
      stdio: ['ignore', log, log],
    });
    const pid = await new Promise<number>((done, fail) => {
      child.once('spawn', () => done(child.pid ?? -1));
      child.once('error', fail);
    });
    child.unref();
    return pid;
  } finally {
    closeSync(log);
  }
}

/** Sends SIGTERM to the process group, then SIGKILL if it has not exited within `graceMs`. */
export async function terminate(pid: number, graceMs: number): Promise<void> {
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  };
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isAlive(pid)) {
    signal('SIGKILL');
    while (isAlive(pid)) await sleep(50);
  }
}

/** The last lines of a log file, for error messages that must show why a server died. */
export function tailFile(file: string, lines = 25): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log written)';
  }
}

/**
 * Polls `ready` until it resolves true, failing early when `alive` turns false (the server died) and at the
 * deadline. Every probe is awaited before the next, so a slow probe never piles up connections.
 */
export async function waitUntilReady(options: {
  name: string;
  ready: () => Promise<boolean>;
  alive: () => boolean;
  timeoutMs: number;
  logFile: string;
  /** Aborted when a sibling service failed: stop waiting, the caller kills this one. */
  signal?: AbortSignal;
}): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  while (Date.now() < deadline) {
    if (options.signal?.aborted === true) {
      throw new ServiceError('SERVICE_START_ABORTED', `${options.name}: start abandoned because another service failed.`);
    }
    if (await options.ready()) return;
    if (!options.alive()) {
      throw new ServiceError('SERVICE_EXITED', `${options.name} exited during start-up. Last lines of ${options.logFile}:\n${tailFile(options.logFile)}`);
    }
    await sleep(250);
  }
  throw new ServiceError(
    'SERVICE_START_TIMEOUT',
    `${options.name} did not answer within ${options.timeoutMs / 1000} s. Last lines of ${options.logFile}:\n${tailFile(options.logFile)}`,
  );
}

/** Where Debian puts system binaries (a non-login shell's PATH may lack the sbin folders). */
export const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/**
 * Finds `binary`, installing Debian's `pkg` when it is missing and this process may (root with apt-get). apt-get is
 * retried after `apt-get update`, since a fresh machine's package lists may be empty or stale. `codes` name the
 * errors: the binary missing and uninstallable, or the install failing; `fix` tells the user what to do instead.
 */
export async function ensureDebianPackage(
  binary: string,
  pkg: string,
  options: { report: Reporter; fix: string; codes: { missing: string; failed: string } },
): Promise<string> {
  const found = findExecutable(binary, SYSTEM_DIRS);
  if (found !== undefined) return found;
  const aptGet = findExecutable('apt-get', SYSTEM_DIRS);
  if (aptGet === undefined || process.getuid?.() !== 0) {
    throw new ServiceError(options.codes.missing, `${binary} is not installed and this process cannot install it (needs root and apt-get). ${options.fix}`);
  }
  options.report(`${binary} is missing; installing the Debian package ${pkg}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = (): Promise<CommandResult> => runCommand(aptGet, ['install', '-y', '-q', '--no-install-recommends', pkg], { env });
  let result = await install();
  if (result.status !== 0) {
    await runCommand(aptGet, ['update', '-q'], { env });
    result = await install();
  }
  const installed = findExecutable(binary, SYSTEM_DIRS);
  if (result.status !== 0 || installed === undefined) {
    const why = `${result.stderr}${result.stdout}`.trim().split('\n').slice(-4).join('\n');
    throw new ServiceError(options.codes.failed, `apt-get could not install ${pkg} (exit ${result.status ?? result.error?.message}):\n${why}\n${options.fix}`);
  }
  return installed;
}
