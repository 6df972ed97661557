import { DEFAULT_DEMO_CAPSULES, runDemo, type DemoSummary } from '../demo/demo.ts';
import { PHASES } from '../manifest.ts';
import { DEFAULT_INSPECTOR_PORT } from '../inspect/server.ts';
import { commandLogger, exampleOverlays, parseCommandArgs, reportFailure, UsageError, type CliIO, type Command } from './command.ts';
import { cliStore } from './run.ts';

const HELP = `Usage: forge-kernel demo [options]            (npm start runs it)

The whole kernel in one command, on the embedded defaults (in-memory store, in-process bus, no services): loads the
example overlays (shipped built; in a checkout built once, with progress), streams capsules through the seven-phase pipeline, trips and recovers the circuit
breaker of a deliberately faulty overlay (an insight meant for it is dead-lettered, then retried), spreads insights
as cascade chains across overlays, and pauses runs at consensus for a human decision (the demo decides after a
short wait; with --inspect, you decide on the page). Then it prints a summary.

Options:
  --capsules <n>          capsules to stream (default ${DEFAULT_DEMO_CAPSULES})
  --store memory|neo4j    where the kernel keeps its state (default memory; neo4j reads NEO4J_URI / NEO4J_USER /
                          NEO4J_PASSWORD, default the project's services)
  --inspect               serve the live inspector (prints its URL); paused runs wait for you to approve or reject
                          them there, and the inspector stays up after the summary until Ctrl-C
  --port <n>              the inspector's port (default ${DEFAULT_INSPECTOR_PORT})
  --json                  print the summary as JSON
  -h, --help              show this help

Exit status: 0 when every step of the demo happened, 1 otherwise, 2 on a usage mistake.`;

/** A progress bar on a terminal, a line per tenth elsewhere (logs, CI). */
function progress(io: CliIO, tty: boolean): (settled: number, total: number) => void {
  let lastTenth = -1;
  return (settled, total) => {
    if (tty) {
      const width = 30;
      const filled = Math.round((settled / total) * width);
      io.stderr(`\r[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${settled}/${total} runs${settled === total ? '\n' : ''}`);
      return;
    }
    const tenth = Math.floor((settled / total) * 10);
    if (tenth !== lastTenth) {
      lastTenth = tenth;
      io.stderr(`${settled}/${total} runs settled\n`);
    }
  };
}

const ms = (n: number): string => n.toFixed(1).padStart(7);

/** The summary as a person reads it. */
export function formatSummary(s: DemoSummary): string {
  const lines = [
    `Forge Kernel demo: ${s.capsules} capsules through 7 phases in ${(s.durationMs / 1000).toFixed(1)} s (${s.runsPerSecond} runs/s), ${s.store} store; set-up ${(s.setupMs / 1000).toFixed(1)} s`,
    '',
    `Runs          ${s.runs.completed} completed, ${s.runs.failed} failed, ${s.runs.cancelled} cancelled`,
    `Decisions     ${s.decisions.paused} paused at consensus: ${s.decisions.approved} approved, ${s.decisions.rejected} rejected (by the ${s.decisions.decidedBy})`,
    `Cascades      ${s.cascades.started} chains, ${s.cascades.completed} completed, ${s.cascades.stopped} stopped${Object.keys(s.cascades.stoppedBy).length > 0 ? ` (${Object.entries(s.cascades.stoppedBy).map(([why, n]) => `${n} by ${why}`).join(', ')})` : ''}, ${s.cascades.expired} expired, ${s.cascades.hops} hops; longest ${s.cascades.longest.join(' → ')}`,
    `Dead letters  ${s.deadLetters.total} (${s.deadLetters.retried} retried and delivered, ${s.deadLetters.remaining} left)`,
    `Breaker       ${s.breaker.overlay}: closed${s.breaker.transitions.map((t) => ` → ${t.type === 'close' ? 'closed' : t.type} (${t.atMs} ms)`).join('')}`,
    '',
    `phase          runs  success   p50 ms   p95 ms`,
    ...PHASES.map((p) => `${p.padEnd(12)} ${String(s.phases[p].runs).padStart(6)} ${`${(s.phases[p].successRate * 100).toFixed(1)}%`.padStart(8)} ${ms(s.phases[p].p50Ms)}  ${ms(s.phases[p].p95Ms)}`),
    '',
    `overlay                  fuel (million instructions)`,
    ...Object.entries(s.fuel).map(([overlay, fuel]) => `${overlay.padEnd(22)} ${(fuel / 1e6).toFixed(1).padStart(10)}`),
  ];
  return `${lines.join('\n')}\n`;
}

/** Every step the demo promises happened. */
export function demoComplete(s: DemoSummary): boolean {
  return s.runs.completed + s.runs.failed + s.runs.cancelled === s.capsules && s.decisions.paused > 0 && s.decisions.approved + s.decisions.rejected > 0 && s.cascades.hops > 0 && s.breaker.tripped && s.breaker.recovered;
}

async function run(args: readonly string[], io: CliIO): Promise<number> {
  const json = args.includes('--json');
  try {
    const parsed = parseCommandArgs({
        args: [...args],
        options: { capsules: { type: 'string' }, store: { type: 'string', default: 'memory' }, inspect: { type: 'boolean', default: false }, port: { type: 'string' }, json: { type: 'boolean', default: false } },
      });
    const { values } = parsed;
    const capsules = values.capsules === undefined ? DEFAULT_DEMO_CAPSULES : Number(values.capsules);
    if (!Number.isInteger(capsules) || capsules < 1 || capsules > 1_000_000) throw new UsageError(`--capsules must be a whole number from 1 to 1000000, got ${JSON.stringify(values.capsules)}`);
    if (values.store !== 'memory' && values.store !== 'neo4j') throw new UsageError(`--store must be memory or neo4j, got ${JSON.stringify(values.store)}`);
    const port = values.port === undefined ? DEFAULT_INSPECTOR_PORT : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new UsageError(`--port must be 0–65535, got ${JSON.stringify(values.port)}`);
    const overlaysDir = await exampleOverlays(io);
    if (!json) io.stderr('Starting a kernel with the example overlays…\n');
    const { summary, kernel } = await runDemo({
      overlaysDir,
      capsules,
      store: cliStore(values.store),
      logger: commandLogger(io, 'error'),
      ...(values.inspect ? { inspect: { port } } : {}),
      ...(json ? {} : { onProgress: progress(io, process.stderr.isTTY === true) }),
      onInspectorUrl: (url) => io.stderr(`Inspector: ${url}\nRuns that need a decision wait for you there (Approve / Reject).\n`),
    });
    try {
      io.stdout(json ? `${JSON.stringify({ ok: demoComplete(summary), ...summary })}\n` : formatSummary(summary));
      if (values.inspect) {
        io.stderr('The inspector stays up: Ctrl-C to stop.\n');
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
      }
    } finally {
      await kernel.stop();
    }
    return demoComplete(summary) ? 0 : 1;
  } catch (error) {
    return reportFailure(io, 'demo', json, error);
  }
}

export const demoCommand: Command = { name: 'demo', summary: 'the whole kernel in one command (npm start)', help: HELP, run };
