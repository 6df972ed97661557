import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import neo4j from 'neo4j-driver';
import { findExecutable, firstBytes, HOST, isListening, PROJECT_ROOT, runCommand, ServiceError, type Reporter } from './common.ts';
import type { Probe, ServiceDefinition, ServiceProcess } from './service.ts';

/** The Maven project that pins the Neo4j version and the tiny Java main that serves Bolt. */
const SERVER_DIR = join(PROJECT_ROOT, 'scripts', 'services', 'neo4j-server');
/** Printed by NeoServer.java once the password is set; probing before it would trip Neo4j's auth lockout. */
const READY_LINE = 'FORGE_NEO4J_READY';
/** The Bolt handshake: magic preamble, then four version proposals (5.8 down to 5.0, then 4.4). */
const BOLT_HANDSHAKE = Uint8Array.from([0x60, 0x60, 0xb0, 0x17, 0, 8, 8, 5, 0, 0, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
/** Neo4j 5.26 runs on Java 17 or 21. */
const MIN_JAVA_MAJOR = 17;
/** Heap for the test server: enough for test graphs, small enough for a 2-core, shared machine. */
const JVM_HEAP = ['-Xms128m', '-Xmx1g'];

export interface Neo4jConfig {
  port: number;
  user: string;
  password: string;
  uri: string;
  /** Extra Maven arguments (`FORGE_MAVEN_OPTS`), e.g. `-o -Dmaven.repo.local=/mirror` on an offline machine. */
  mavenOptions: string[];
}

async function probe(config: Neo4jConfig): Promise<Probe> {
  if (!(await isListening(config.port))) return { kind: 'absent' };
  // A Bolt server answers the handshake with the 4-byte version it picked.
  const reply = await firstBytes(config.port, BOLT_HANDSHAKE);
  if (reply?.length !== 4) return { kind: 'foreign', what: 'a program that does not speak Bolt' };
  const driver = neo4j.driver(config.uri, neo4j.auth.basic(config.user, config.password), {
    connectionTimeout: 3_000,
    connectionAcquisitionTimeout: 3_000,
    maxConnectionPoolSize: 1,
  });
  try {
    await driver.getServerInfo();
    return { kind: 'ready' };
  } catch (error) {
    const code = (error as { code?: string }).code ?? '';
    if (code.startsWith('Neo.ClientError.Security')) {
      return { kind: 'foreign', what: `a Neo4j server that refused user "${config.user}" with the configured password (set FORGE_NEO4J_PASSWORD to its password)` };
    }
    return { kind: 'foreign', what: `a program that does not speak Bolt (${code || (error as Error).message})` };
  } finally {
    await driver.close();
  }
}

async function checkJava(): Promise<string> {
  const java = findExecutable('java', process.env.JAVA_HOME === undefined ? [] : [join(process.env.JAVA_HOME, 'bin')]);
  const missing = `Java ${MIN_JAVA_MAJOR}+ is needed to run the Neo4j test server. Install it (Debian: apt-get install -y openjdk-17-jre-headless), or point NEO4J_URI at a running Neo4j 5 server.`;
  if (java === undefined) throw new ServiceError('JAVA_MISSING', `java was not found on PATH. ${missing}`);
  const result = await runCommand(java, ['-version'], { timeoutMs: 30_000 });
  const match = /version "(\d+)(?:\.(\d+))?/.exec(`${result.stderr}${result.stdout}`);
  const major = match === null ? NaN : Number(match[1] === '1' ? match[2] : match[1]);
  if (result.error !== undefined || Number.isNaN(major)) throw new ServiceError('JAVA_MISSING', `${java} -version did not run. ${missing}`);
  if (major < MIN_JAVA_MAJOR) throw new ServiceError('JAVA_TOO_OLD', `${java} is Java ${major}. ${missing}`);
  return java;
}

/**
 * Resolves the Neo4j jars with Maven (downloading them from Maven Central the first time) and returns the class
 * path. The result is cached per pom and Maven options, and re-resolved if any jar went missing.
 */
async function resolveClasspath(dataDir: string, config: Neo4jConfig, report: Reporter): Promise<string> {
  const pom = readFileSync(join(SERVER_DIR, 'pom.xml'));
  const key = createHash('sha256').update(pom).update(JSON.stringify(config.mavenOptions)).digest('hex').slice(0, 16);
  const cacheFile = join(dataDir, `classpath-${key}.txt`);
  if (existsSync(cacheFile)) {
    const cached = readFileSync(cacheFile, 'utf8').trim();
    if (cached !== '' && cached.split(':').every((jar) => existsSync(jar))) return cached;
  }
  const mvn = findExecutable('mvn');
  if (mvn === undefined) {
    throw new ServiceError('MAVEN_MISSING', 'mvn was not found on PATH; it fetches Neo4j from Maven Central. Install it (Debian: apt-get install -y maven), or point NEO4J_URI at a running Neo4j 5 server.');
  }
  report('neo4j: resolving Neo4j 5.26 jars with Maven (the first time this downloads about 150 MB)');
  mkdirSync(dataDir, { recursive: true });
  const outFile = join(dataDir, 'classpath.tmp');
  const result = await runCommand(mvn, ['-B', '-q', '-Dstyle.color=never', ...config.mavenOptions, 'dependency:build-classpath', `-Dmdep.outputFile=${outFile}`], { cwd: SERVER_DIR });
  if (result.error !== undefined || result.status !== 0) {
    const output = `${result.stdout}${result.stderr}`.trim().split('\n').filter((l) => l.includes('ERROR')).slice(0, 6).join('\n');
    throw new ServiceError(
      'NEO4J_DOWNLOAD_FAILED',
      `Maven could not fetch the Neo4j jars from Maven Central (${result.error?.message ?? `exit ${result.status}`}):\n${output}\nCheck that Maven Central is reachable (proxy settings live in ~/.m2/settings.xml), or point NEO4J_URI at a running Neo4j 5 server.`,
    );
  }
  const classpath = readFileSync(outFile, 'utf8').trim();
  writeFileSync(cacheFile, classpath);
  return classpath;
}

/** How to recognise and stop the server process (the Java main's class name is on its command line). */
export const NEO4J_PROCESS: ServiceProcess = { name: 'neo4j', processMarker: 'NeoServer', stopGraceMs: 30_000 };

/** The project's Neo4j 5.26 community server: an embedded DBMS with Bolt on loopback, started from Java. */
export function neo4jService(config: Neo4jConfig): ServiceDefinition {
  let java = '';
  let classpath = '';
  return {
    ...NEO4J_PROCESS,
    port: config.port,
    portVariable: 'FORGE_NEO4J_PORT',
    startTimeoutMs: 180_000,
    probe: () => probe(config),
    async prepare(report, dataDir) {
      java = await checkJava();
      classpath = await resolveClasspath(dataDir, config, report);
    },
    command(dataDir) {
      return {
        command: java,
        args: [...JVM_HEAP, '-XX:+ExitOnOutOfMemoryError', '-cp', classpath, join(SERVER_DIR, 'NeoServer.java'), join(dataDir, 'home'), String(config.port)],
        env: { ...process.env, FORGE_NEO4J_PASSWORD: config.password },
      };
    },
    launchedReady: (logFile) => existsSync(logFile) && readFileSync(logFile, 'utf8').includes(READY_LINE),
  };
}

export function neo4jUri(port: number): string {
  return `bolt://${HOST}:${port}`;
}
