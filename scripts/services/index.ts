import { portFromEnv, servicesDir, ServiceError, type Reporter } from './common.ts';
import { NEO4J_PROCESS, neo4jService, neo4jUri } from './neo4j.ts';
import { NATS_PROCESS, natsService, natsUrl } from './nats.ts';
import { inspectService, launchService, prepareService, stopService, type ServiceDefinition, type ServiceProcess } from './service.ts';

export { ServiceError } from './common.ts';

/** Default ports: off the standard 7687/4222 so a developer's own Neo4j or NATS is never mistaken for ours. */
export const DEFAULT_NEO4J_PORT = 17_687;
export const DEFAULT_NATS_PORT = 14_222;
/** A loopback-only development password; override with FORGE_NEO4J_PASSWORD. */
const DEFAULT_NEO4J_PASSWORD = 'forge-kernel-dev';

export type ServiceName = 'neo4j' | 'nats';
export const SERVICE_NAMES: readonly ServiceName[] = ['neo4j', 'nats'];

/** How to reach the services: the values printed as `NEO4J_URI=…` lines and read by tests. */
export interface ServiceEndpoints {
  NEO4J_URI: string;
  NEO4J_USER: string;
  NEO4J_PASSWORD: string;
  NATS_URL: string;
}

function definitions(env: NodeJS.ProcessEnv): { endpoints: ServiceEndpoints; services: Record<ServiceName, ServiceDefinition> } {
  const neo4jPort = portFromEnv(env, 'FORGE_NEO4J_PORT', DEFAULT_NEO4J_PORT);
  const natsPort = portFromEnv(env, 'FORGE_NATS_PORT', DEFAULT_NATS_PORT);
  const password = env.FORGE_NEO4J_PASSWORD ?? DEFAULT_NEO4J_PASSWORD;
  const endpoints: ServiceEndpoints = {
    NEO4J_URI: neo4jUri(neo4jPort),
    NEO4J_USER: 'neo4j',
    NEO4J_PASSWORD: password,
    NATS_URL: natsUrl(natsPort),
  };
  const mavenOptions = (env.FORGE_MAVEN_OPTS ?? '').split(/\s+/).filter(Boolean);
  return {
    endpoints,
    services: {
      neo4j: neo4jService({ port: neo4jPort, user: endpoints.NEO4J_USER, password, uri: endpoints.NEO4J_URI, mavenOptions }),
      nats: natsService({ port: natsPort, url: endpoints.NATS_URL }),
    },
  };
}

export interface StartResult {
  endpoints: ServiceEndpoints;
  /** The services launched by this call (the others were already running). */
  started: ServiceName[];
}

/** Each service's process identity, for stopping without parsing (possibly invalid) port settings. */
const PROCESSES: Record<ServiceName, ServiceProcess> = { neo4j: NEO4J_PROCESS, nats: NATS_PROCESS };

/**
 * Starts the named services (both by default), all or nothing: first every port is inspected (reusing servers
 * that answer, refusing ports held by others), then everything needed is prepared, and only then are the missing
 * servers launched side by side. If one launch fails the others are abandoned and killed, and the error thrown.
 */
export async function startServices(options: { names?: readonly ServiceName[]; env?: NodeJS.ProcessEnv; report?: Reporter } = {}): Promise<StartResult> {
  const env = options.env ?? process.env;
  const report = options.report ?? ((): void => {});
  const dir = servicesDir(env);
  const { endpoints, services } = definitions(env);
  const names = options.names ?? SERVICE_NAMES;

  const decisions = await Promise.all(names.map((name) => inspectService(dir, services[name], report)));
  const toLaunch = names.filter((_, i) => decisions[i] === 'launch');
  await Promise.all(toLaunch.map((name) => prepareService(dir, services[name], report)));

  const abort = new AbortController();
  const outcomes = await Promise.allSettled(
    toLaunch.map((name) =>
      launchService(dir, services[name], report, abort.signal).catch((error: unknown) => {
        abort.abort();
        throw error;
      }),
    ),
  );
  const failures = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as Error);
  if (failures.length > 0) {
    for (const [i, name] of toLaunch.entries()) {
      if (outcomes[i]?.status === 'fulfilled') await stopService(dir, services[name], report);
    }
    const cause = failures.find((e) => !(e instanceof ServiceError && e.code === 'SERVICE_START_ABORTED')) ?? failures[0];
    throw cause instanceof ServiceError ? cause : new ServiceError('SERVICE_START_FAILED', String(cause?.message), { cause });
  }
  return { endpoints, started: toLaunch };
}

/** Stops the named services (both by default) if this project started them; resolves to the ones it stopped. */
export async function stopServices(options: { names?: readonly ServiceName[]; env?: NodeJS.ProcessEnv; report?: Reporter } = {}): Promise<ServiceName[]> {
  const dir = servicesDir(options.env ?? process.env);
  const report = options.report ?? ((): void => {});
  const stopped: ServiceName[] = [];
  for (const name of options.names ?? SERVICE_NAMES) {
    if (await stopService(dir, PROCESSES[name], report)) stopped.push(name);
  }
  return stopped;
}

/** The current endpoints and whether each service answers. */
export async function serviceStatus(env: NodeJS.ProcessEnv = process.env): Promise<{ endpoints: ServiceEndpoints; answering: Record<ServiceName, boolean> }> {
  const { endpoints, services } = definitions(env);
  const [neo4j, nats] = await Promise.all([services.neo4j.probe(), services.nats.probe()]);
  return { endpoints, answering: { neo4j: neo4j.kind === 'ready', nats: nats.kind === 'ready' } };
}

/** `KEY=value` lines, one per endpoint, for `eval "$(npm run -s services:start)"`. */
export function formatEndpoints(endpoints: ServiceEndpoints): string {
  return Object.entries(endpoints).map(([key, value]) => `${key}=${value}`).join('\n') + '\n';
}
