import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { isListening } from '../../scripts/services/common.ts';
import { startServices, stopServices } from '../../scripts/services/index.ts';
import { freePort } from '../support/net.ts';
import { until } from '../support/wait.ts';

const SCRIPT = new URL('../../scripts/services.ts', import.meta.url).pathname;

/** A TCP server that accepts connections and says nothing: "some other program" holding a port. */
async function squatter(): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => socket.on('error', () => {}));
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { server, port: (server.address() as { port: number }).port };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function runScript(command: string, env: NodeJS.ProcessEnv): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [SCRIPT, command], { env, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe('services:start / services:stop', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function isolatedEnv(extra: NodeJS.ProcessEnv = {}): Promise<NodeJS.ProcessEnv> {
    const dir = mkdtempSync(join(tmpdir(), 'forge-services-'));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      FORGE_SERVICES_DIR: dir,
      FORGE_NEO4J_PORT: String(await freePort()),
      FORGE_NATS_PORT: String(await freePort()),
      ...extra,
    };
    cleanups.push(async () => {
      await stopServices({ env });
      rmSync(dir, { recursive: true, force: true });
    });
    return env;
  }

  function stateFiles(env: NodeJS.ProcessEnv): string[] {
    const dir = env.FORGE_SERVICES_DIR ?? '';
    return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.state.json')) : [];
  }

  it('starts NATS with JetStream, reuses it on a second start, and stops only what it started', async () => {
    const env = await isolatedEnv();
    const first = await startServices({ names: ['nats'], env });
    expect(first.started).toEqual(['nats']);
    expect(first.endpoints.NATS_URL).toBe(`nats://127.0.0.1:${env.FORGE_NATS_PORT}`);

    const second = await startServices({ names: ['nats'], env });
    expect(second.started).toEqual([]);

    expect(await stopServices({ names: ['nats'], env })).toEqual(['nats']);
    expect(await isListening(Number(env.FORGE_NATS_PORT))).toBe(false);
    expect(stateFiles(env)).toEqual([]);
  });

  it('reuses a JetStream server it did not start, and leaves it running on stop', async () => {
    const env = await isolatedEnv();
    const port = Number(env.FORGE_NATS_PORT);
    const storeDir = mkdtempSync(join(tmpdir(), 'forge-foreign-js-'));
    const foreign: ChildProcess = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir], {
      stdio: 'ignore',
      env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin` },
    });
    cleanups.push(() => {
      foreign.kill('SIGKILL');
      rmSync(storeDir, { recursive: true, force: true });
    });
    await until(() => isListening(port), `the foreign server to listen on ${port}`, { everyMs: 50 });

    const result = await startServices({ names: ['nats'], env });
    expect(result.started).toEqual([]);
    expect(await stopServices({ names: ['nats'], env })).toEqual([]);
    expect(await isListening(port)).toBe(true);
  });

  it('refuses a port held by another program: PORT_IN_USE naming the variable, exit 1, nothing left running', async () => {
    const { server, port } = await squatter();
    cleanups.push(() => new Promise<void>((done) => server.close(() => done())));
    const env = await isolatedEnv({ FORGE_NATS_PORT: String(port) });

    const run = await runScript('start', env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('PORT_IN_USE');
    expect(run.stderr).toContain(`127.0.0.1:${port}`);
    expect(run.stderr).toContain('FORGE_NATS_PORT');
    expect(run.stdout).toBe('');
    expect(await isListening(Number(env.FORGE_NEO4J_PORT))).toBe(false);
    expect(stateFiles(env)).toEqual([]);
  });

  it('without Java: JAVA_MISSING with the install command, exit 1, before anything is launched', async () => {
    const env = await isolatedEnv({ PATH: '/nonexistent', JAVA_HOME: '/nonexistent' });

    const run = await runScript('start', env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('JAVA_MISSING');
    expect(run.stderr).toContain('apt-get install');
    expect(await isListening(Number(env.FORGE_NATS_PORT))).toBe(false);
    expect(await isListening(Number(env.FORGE_NEO4J_PORT))).toBe(false);
    expect(stateFiles(env)).toEqual([]);
  });

  it('when Maven cannot reach the registry: NEO4J_DOWNLOAD_FAILED naming Maven Central, exit 1, nothing left running', async () => {
    const emptyRepository = mkdtempSync(join(tmpdir(), 'forge-empty-m2-'));
    cleanups.push(() => rmSync(emptyRepository, { recursive: true, force: true }));
    // Offline against an empty local repository: exactly what an unreachable registry looks like to Maven.
    const env = await isolatedEnv({ FORGE_MAVEN_OPTS: `-o -Dmaven.repo.local=${emptyRepository}` });

    const run = await runScript('start', env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('NEO4J_DOWNLOAD_FAILED');
    expect(run.stderr).toContain('Maven Central');
    expect(await isListening(Number(env.FORGE_NATS_PORT))).toBe(false);
    expect(stateFiles(env)).toEqual([]);
  });

  it('when Neo4j dies during start-up, stops the NATS it launched alongside and shows the Neo4j log', async () => {
    // Neo4j refuses passwords shorter than 8 characters: a real start-up failure, after NATS was launched.
    const env = await isolatedEnv({ FORGE_NEO4J_PASSWORD: 'short' });

    const run = await runScript('start', env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('SERVICE_EXITED');
    expect(run.stderr).toContain('FORGE_NEO4J_FAILED');
    expect(run.stderr).toMatch(/nats: stopped/);
    expect(await isListening(Number(env.FORGE_NATS_PORT))).toBe(false);
    expect(await isListening(Number(env.FORGE_NEO4J_PORT))).toBe(false);
    expect(stateFiles(env)).toEqual([]);
  });

  it('refuses a port setting that is not a port number with INVALID_CONFIG', async () => {
    const env = await isolatedEnv({ FORGE_NEO4J_PORT: 'seventeen' });
    const run = await runScript('start', env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('INVALID_CONFIG');
    expect(run.stderr).toContain('FORGE_NEO4J_PORT="seventeen"');
  });

  it('prints the endpoints as KEY=value lines on status, and usage on an unknown command (exit 2)', async () => {
    const env = await isolatedEnv();
    const status = await runScript('status', env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`NEO4J_URI=bolt://127.0.0.1:${env.FORGE_NEO4J_PORT}`);
    expect(status.stdout).toContain(`NATS_URL=nats://127.0.0.1:${env.FORGE_NATS_PORT}`);
    expect(status.stderr).toContain('neo4j: not answering');

    const unknown = await runScript('restart', env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('Usage:');
  });
});
