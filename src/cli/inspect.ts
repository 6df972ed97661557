import { demoCapsule, faultyEnricher } from '../demo/workload.ts';
import { createKernel, type Kernel } from '../kernel.ts';
import { DEFAULT_INSPECTOR_PORT } from '../inspect/server.ts';
import { commandLogger, exampleOverlays, parseCommandArgs, reportFailure, UsageError, type CliIO, type Command } from './command.ts';
import { cliStore } from './run.ts';

const HELP = `Usage: forge-kernel inspect [options]

Starts a kernel with the example overlays and serves the live inspector: every overlay, circuit breaker, pipeline
run and cascade chain with its current state and statechart, a transition log, and controls. Runs until Ctrl-C.

Options:
  --port <n>             port (default ${DEFAULT_INSPECTOR_PORT}; 0 picks a free one)
  --host <address>       address to bind (default 127.0.0.1; any other address needs --token)
  --token <secret>       required of every request when set (at least 16 characters)
  --demo                 feed capsules through the pipeline (some wait for a decision: approve them on the page),
                         start cascade chains, and run a deliberately faulty overlay whose breaker trips and recovers
  --overlays <dir>       built overlays to load instead of the examples
  --store memory|neo4j   where the kernel keeps its state (default memory)
  --json                 print { url } as JSON once listening
  -h, --help             show this help

Exit status: 0 after Ctrl-C, 1 when the inspector cannot start, 2 on a usage mistake.`;

/** Time between two demo capsules (ms): a pace a person can follow on the page. */
const DEMO_INTERVAL_MS = 700;

/** Starts the inspector's demo workload; returns the function that stops it. */
export async function startDemoFeed(kernel: Kernel, options: { intervalMs?: number; personalEvery?: number } = {}): Promise<() => void> {
  // The faulty overlay fails for 8 s out of every 30 s: its breaker opens, then closes after a successful probe.
  const failing = (): boolean => Date.now() % 30_000 < 8_000;
  await kernel.overlays.load(faultyEnricher(failing), { internal: true, trusted: true, breaker: { consecutiveFailures: 3, resetTimeoutMs: 4_000, maxResetTimeoutMs: 8_000 } });
  let n = 0;
  const timer = setInterval(() => {
    const { capsule } = demoCapsule(n, options.personalEvery ?? 12);
    n++;
    try {
      kernel.pipelines.start({ capsule });
      if (n % 5 === 0) void kernel.cascades.start('inspector-demo', 'insight.detected', { capsuleId: capsule.id, pattern: 'demo' }, { maxHops: 4, ttlMs: 20_000 }).catch(() => undefined);
    } catch {
      // PIPELINE_BUSY: the demo skips a beat.
    }
  }, options.intervalMs ?? DEMO_INTERVAL_MS);
  return () => clearInterval(timer);
}

async function run(args: readonly string[], io: CliIO): Promise<number> {
  const json = args.includes('--json');
  let parsed;
  try {
    parsed = parseCommandArgs({
      args: [...args],
      options: {
        port: { type: 'string' },
        host: { type: 'string', default: '127.0.0.1' },
        token: { type: 'string' },
        demo: { type: 'boolean', default: false },
        overlays: { type: 'string' },
        store: { type: 'string', default: 'memory' },
        json: { type: 'boolean', default: false },
      },
    });
  } catch (error) {
    return reportFailure(io, 'inspect', json, error);
  }
  const { values } = parsed;
  const port = values.port === undefined ? DEFAULT_INSPECTOR_PORT : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) return reportFailure(io, 'inspect', json, new UsageError(`--port must be 0–65535, got ${JSON.stringify(values.port)}`));
  if (values.store !== 'memory' && values.store !== 'neo4j') return reportFailure(io, 'inspect', json, new UsageError(`--store must be memory or neo4j, got ${JSON.stringify(values.store)}`));
  let kernel: Kernel | undefined;
  try {
    const overlays = values.overlays ?? (await exampleOverlays(io));
    kernel = await createKernel({ logger: commandLogger(io), store: cliStore(values.store), inspect: true });
    await kernel.overlays.loadDirectory(overlays, { grant: 'declared', mode: 'relaxed' });
    const handle = await kernel.inspector.listen({ port, host: values.host, ...(values.token === undefined ? {} : { token: values.token }) });
    const stopFeed = values.demo ? await startDemoFeed(kernel) : () => undefined;
    io.stdout(json ? `${JSON.stringify({ ok: true, url: handle.url })}\n` : `Forge Kernel inspector: ${handle.url}\n(Ctrl-C to stop)\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    stopFeed();
    return 0;
  } catch (error) {
    return reportFailure(io, 'inspect', json, error);
  } finally {
    await kernel?.stop();
  }
}

export const inspectCommand: Command = { name: 'inspect', summary: 'serve the live inspector for a kernel with the example overlays', help: HELP, run };
