import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { ensureDebianPackage, HOST, isListening, ServiceError, type Reporter } from './common.ts';

/** A process that ended on its own (exit code) or by a signal. */
const exited = (node: ChildProcess): boolean => node.exitCode !== null || node.signalCode !== null;

/** A throwaway NATS cluster with JetStream on loopback, for the tests that kill nodes. */
export interface NatsCluster {
  /** Client URLs of the nodes, in order. */
  servers: string[];
  /** Kills node `i` with SIGKILL (a crash, not a shutdown). */
  kill(i: number): Promise<void>;
  /** Stops every node and removes their data. */
  stop(): Promise<void>;
}

/**
 * Starts `size` nats-server nodes (Debian's package) as one cluster with JetStream, each with its own store under
 * a temporary folder, and waits until JetStream answers through every node (a meta leader is elected).
 */
export async function startNatsCluster(options: { ports: number[]; clusterPorts: number[]; report?: Reporter }): Promise<NatsCluster> {
  const report = options.report ?? (() => undefined);
  const binary = await ensureDebianPackage('nats-server', 'nats-server', {
    report,
    fix: 'Install it (Debian: apt-get install -y nats-server).',
    codes: { missing: 'NATS_SERVER_MISSING', failed: 'NATS_INSTALL_FAILED' },
  });
  const dir = mkdtempSync(join(tmpdir(), 'forge-nats-cluster-'));
  const nodes: (ChildProcess | undefined)[] = [];
  const routes = options.clusterPorts.map((p) => `nats-route://${HOST}:${p}`).join(',');
  const servers = options.ports.map((p) => `nats://${HOST}:${p}`);
  for (const [i, port] of options.ports.entries()) {
    if (await isListening(port)) throw new ServiceError('PORT_IN_USE', `Port ${port} is taken: the test NATS cluster needs it.`);
    const args = ['--name', `forge-n${i}`, '--addr', HOST, '--port', String(port), '--jetstream', '--store_dir', join(dir, `n${i}`), '--cluster_name', 'forge-test', '--cluster', `nats://${HOST}:${options.clusterPorts[i]}`, '--routes', routes];
    nodes.push(spawn(binary, args, { stdio: 'ignore' }));
  }
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((node) => (node === undefined || exited(node) ? Promise.resolve() : new Promise<void>((done) => {
      node.once('exit', () => done());
      node.kill('SIGTERM');
    }))));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 30_000;
    for (const server of servers) {
      for (;;) {
        try {
          const nc = await connect({ servers: server, timeout: 1_000 });
          try {
            await (await jetstreamManager(nc, { timeout: 2_000 })).getAccountInfo();
            break;
          } finally {
            await nc.close();
          }
        } catch (error) {
          if (Date.now() > deadline) throw new ServiceError('NATS_CLUSTER_NOT_READY', `The test NATS cluster did not get ready (${server}): ${(error as Error).message}`);
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  report(`nats cluster: ${servers.join(', ')}`);
  return {
    servers,
    async kill(i) {
      const node = nodes[i];
      if (node === undefined || exited(node)) return;
      await new Promise<void>((done) => {
        node.once('exit', () => done());
        node.kill('SIGKILL');
      });
    },
    stop,
  };
}
