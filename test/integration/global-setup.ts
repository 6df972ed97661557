import type { TestProject } from 'vitest/node';
import { startServices, stopServices, type ServiceEndpoints, type ServiceName } from '../../scripts/services/index.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    services: ServiceEndpoints;
  }
}

/**
 * Starts the real Neo4j and NATS servers with the same code as `npm run services:start`, unless NEO4J_URI /
 * NATS_URL already point at running ones, and stops at the end only what it started.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const env = process.env;
  const names: ServiceName[] = [];
  if (env.NEO4J_URI === undefined) names.push('neo4j');
  if (env.NATS_URL === undefined) names.push('nats');
  const report = (line: string): void => {
    process.stderr.write(`[services] ${line}\n`);
  };
  const { endpoints, started } = await startServices({ names, report });
  project.provide('services', {
    NEO4J_URI: env.NEO4J_URI ?? endpoints.NEO4J_URI,
    NEO4J_USER: env.NEO4J_USER ?? endpoints.NEO4J_USER,
    NEO4J_PASSWORD: env.NEO4J_PASSWORD ?? endpoints.NEO4J_PASSWORD,
    NATS_URL: env.NATS_URL ?? endpoints.NATS_URL,
  });
  return async () => {
    await stopServices({ names: started, report });
  };
}
