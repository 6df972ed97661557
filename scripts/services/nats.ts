import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { join } from 'node:path';
import { ensureDebianPackage, firstBytes, HOST, isListening, type Reporter } from './common.ts';
import type { Probe, ServiceDefinition, ServiceProcess } from './service.ts';

/** Where Debian puts the server; sbin is often missing from a non-root PATH. */

export interface NatsConfig {
  port: number;
  url: string;
}

async function probe(config: NatsConfig): Promise<Probe> {
  if (!(await isListening(config.port))) return { kind: 'absent' };
  // A NATS server greets every connection with an INFO line before the client says anything.
  const greeting = await firstBytes(config.port, undefined);
  if (greeting === undefined || !greeting.toString('latin1').startsWith('INFO ')) {
    return { kind: 'foreign', what: 'a program that does not speak NATS' };
  }
  let connection;
  try {
    connection = await connect({ servers: config.url, timeout: 2_000, reconnect: false });
  } catch (error) {
    return { kind: 'foreign', what: `a program that does not speak NATS (${(error as Error).message})` };
  }
  try {
    const manager = await jetstreamManager(connection, { timeout: 2_000 });
    await manager.getAccountInfo();
    return { kind: 'ready' };
  } catch (error) {
    return { kind: 'foreign', what: `a NATS server without JetStream (${(error as Error).message})` };
  } finally {
    await connection.close();
  }
}

/** Finds `nats-server`, installing Debian's package when it is missing and this process may. */
function ensureBinary(report: Reporter): Promise<string> {
  return ensureDebianPackage('nats-server', 'nats-server', {
    report: (line) => report(`nats: ${line}`),
    fix: 'Install it (Debian: apt-get install -y nats-server), or point NATS_URL at a running NATS server with JetStream.',
    codes: { missing: 'NATS_SERVER_MISSING', failed: 'NATS_INSTALL_FAILED' },
  });
}

/** How to recognise and stop the server process. */
export const NATS_PROCESS: ServiceProcess = { name: 'nats', processMarker: 'nats-server', stopGraceMs: 10_000 };

/** The project's NATS server with JetStream, from Debian's `nats-server` package, on loopback. */
export function natsService(config: NatsConfig): ServiceDefinition {
  let binary = '';
  return {
    ...NATS_PROCESS,
    port: config.port,
    portVariable: 'FORGE_NATS_PORT',
    startTimeoutMs: 30_000,
    probe: () => probe(config),
    async prepare(report) {
      binary = await ensureBinary(report);
    },
    command(dataDir) {
      return {
        command: binary,
        args: ['--name', 'forge-kernel-dev', '--addr', HOST, '--port', String(config.port), '--jetstream', '--store_dir', join(dataDir, 'jetstream')],
      };
    },
  };
}

export function natsUrl(port: number): string {
  return `nats://${HOST}:${port}`;
}
