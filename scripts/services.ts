// npm run services:start | services:stop | services:status — the project's real Neo4j and NATS JetStream servers.
import { isForgeError } from '../src/errors.ts';
import { formatEndpoints, serviceStatus, startServices, stopServices } from './services/index.ts';

const HELP = `Usage: node scripts/services.ts <start|stop|status>

  start   start Neo4j 5.26 (Bolt) and NATS (JetStream) on 127.0.0.1, reusing running ones; prints KEY=value lines
  stop    stop the servers this project started (never one it found running)
  status  print the endpoints and whether each answers

Environment: FORGE_NEO4J_PORT (default 17687), FORGE_NATS_PORT (default 14222), FORGE_NEO4J_PASSWORD,
FORGE_SERVICES_DIR (default .forge/services), FORGE_MAVEN_OPTS (extra Maven arguments, e.g. -o for offline).
`;

const report = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

async function run(command: string | undefined): Promise<number> {
  switch (command) {
    case 'start': {
      const { endpoints } = await startServices({ report });
      process.stdout.write(formatEndpoints(endpoints));
      return 0;
    }
    case 'stop':
      await stopServices({ report });
      return 0;
    case 'status': {
      const { endpoints, answering } = await serviceStatus();
      process.stdout.write(formatEndpoints(endpoints));
      for (const [name, up] of Object.entries(answering)) report(`${name}: ${up ? 'answering' : 'not answering'}`);
      return 0;
    }
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(HELP);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command "${command}"\n${HELP}`);
      return 2;
  }
}

try {
  process.exitCode = await run(process.argv[2]);
} catch (error) {
  const code = isForgeError(error) ? error.code : 'UNEXPECTED';
  process.stderr.write(`services: ${code}: ${(error as Error).message}\n`);
  process.exitCode = 1;
}
