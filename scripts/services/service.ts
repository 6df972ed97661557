import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  canBind,
  isOurProcess,
  launchDetached,
  readState,
  removeState,
  ServiceError,
  terminate,
  waitUntilReady,
  writeState,
  type Reporter,
} from './common.ts';

/** What a probe of a port found. */
export type Probe =
  | { kind: 'ready' }
  | { kind: 'absent' }
  /** Something else holds the port, or a server of the right kind that we cannot use (wrong password, no JetStream). */
  | { kind: 'foreign'; what: string };

/** A server the project can start: how to probe it, prepare for it and launch it. */
export interface ServiceDefinition {
  name: string;
  port: number;
  /** Environment variable that names the port, for the "port in use" fix. */
  portVariable: string;
  /** A string in the server's command line, to recognise our own process after a pid was reused. */
  processMarker: string;
  /** How long a fresh start may take before it is declared failed (ms). */
  startTimeoutMs: number;
  /** How long SIGTERM gets before SIGKILL (ms). */
  stopGraceMs: number;
  probe(): Promise<Probe>;
  /** Checks and fetches what launching needs (binaries, jars) into `dataDir`; throws a ServiceError naming the fix. */
  prepare(report: Reporter, dataDir: string): Promise<void>;
  /** The command line to launch, once prepared. */
  command(dataDir: string): { command: string; args: string[]; env?: NodeJS.ProcessEnv };
  /** Extra readiness condition beyond a `ready` probe (e.g. a line in the log), checked before probing. */
  launchedReady?(logFile: string): boolean;
}

/** The part of a service that stopping needs: fixed per kind of server, whatever its configuration. */
export type ServiceProcess = Pick<ServiceDefinition, 'name' | 'processMarker' | 'stopGraceMs'>;

/** The file paths of one service's data and log under the services folder. */
export function serviceFiles(dir: string, name: string): { dataDir: string; logFile: string } {
  return { dataDir: join(dir, name), logFile: join(dir, name, 'server.log') };
}

/**
 * Phase 1 of a start: decides whether `service` must be launched. Reuses a compatible server already answering
 * (ours or not) and refuses a port held by anything else, before anything is prepared or launched.
 */
export async function inspectService(dir: string, service: ServiceDefinition, report: Reporter): Promise<'reuse' | 'launch'> {
  const probe = await service.probe();
  if (probe.kind === 'ready') {
    const state = readState(dir, service.name);
    const ours = state !== undefined && state.port === service.port && isOurProcess(state.pid, service.processMarker);
    report(`${service.name}: already running on 127.0.0.1:${service.port}${ours ? ` (pid ${state.pid})` : ' (not started by this project; services:stop leaves it running)'}`);
    return 'reuse';
  }
  if (probe.kind === 'foreign' || !(await canBind(service.port))) {
    const what = probe.kind === 'foreign' ? probe.what : 'another program';
    throw new ServiceError(
      'PORT_IN_USE',
      `${service.name}: port 127.0.0.1:${service.port} is taken by ${what}. Stop that program, or choose a free port with ${service.portVariable}=<port>.`,
      { details: { service: service.name, port: service.port } },
    );
  }
  if (readState(dir, service.name) !== undefined) removeState(dir, service.name);
  return 'launch';
}

/** Phase 2: checks and fetches what the launch needs (binaries, jars). */
export async function prepareService(dir: string, service: ServiceDefinition, report: Reporter): Promise<void> {
  const { dataDir } = serviceFiles(dir, service.name);
  mkdirSync(dataDir, { recursive: true });
  await service.prepare(report, dataDir);
}

/**
 * Phase 3: launches the prepared service and waits until it answers. A launch that fails, or is aborted because a
 * sibling failed, is killed before the error is thrown, so nothing half-started is left behind.
 */
export async function launchService(dir: string, service: ServiceDefinition, report: Reporter, signal?: AbortSignal): Promise<void> {
  const { dataDir, logFile } = serviceFiles(dir, service.name);
  const { command, args, env } = service.command(dataDir);
  report(`${service.name}: starting on 127.0.0.1:${service.port} (log: ${logFile})`);
  const started = Date.now();
  let pid: number;
  try {
    pid = await launchDetached(command, args, { logFile, ...(env === undefined ? {} : { env }) });
  } catch (error) {
    throw new ServiceError('SERVICE_LAUNCH_FAILED', `${service.name}: could not run ${command}: ${(error as Error).message}`, { cause: error });
  }
  writeState(dir, { name: service.name, pid, port: service.port, startedAt: new Date().toISOString(), logFile });
  try {
    await waitUntilReady({
      name: service.name,
      logFile,
      timeoutMs: service.startTimeoutMs,
      alive: () => isOurProcess(pid, service.processMarker),
      ready: async () => (service.launchedReady?.(logFile) ?? true) && (await service.probe()).kind === 'ready',
      ...(signal === undefined ? {} : { signal }),
    });
  } catch (error) {
    await terminate(pid, service.stopGraceMs);
    removeState(dir, service.name);
    throw error;
  }
  report(`${service.name}: ready in ${((Date.now() - started) / 1000).toFixed(1)} s (pid ${pid})`);
}

/** Stops the service if this project started it (its state file names a live process of ours); else does nothing. */
export async function stopService(dir: string, service: ServiceProcess, report: Reporter): Promise<boolean> {
  const state = readState(dir, service.name);
  if (state === undefined) {
    report(`${service.name}: not started by this project; nothing to stop`);
    return false;
  }
  if (isOurProcess(state.pid, service.processMarker)) {
    await terminate(state.pid, service.stopGraceMs);
    report(`${service.name}: stopped (pid ${state.pid})`);
  } else {
    report(`${service.name}: pid ${state.pid} had already exited`);
  }
  removeState(dir, service.name);
  return true;
}
