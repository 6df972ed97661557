import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { fromJsonLines, toJsonLines, type JournalEntry } from '../journal/journal.ts';
import { SqliteJournal } from '../journal/sqlite-journal.ts';
import type { ReplayReport } from '../journal/replay.ts';
import { createKernel } from '../kernel.ts';
import { commandLogger, exampleOverlays, parseCommandArgs, reportFailure, UsageError, type CliIO, type Command } from './command.ts';

const JOURNAL_HELP = `Usage: forge-kernel journal list --journal <file> [--status <s>] [--limit <n>] [--json]
       forge-kernel journal show <runId|chainId> --journal <file> [--json]
       forge-kernel journal export <runId|chainId> --journal <file> [--out <file.jsonl>]

A quick look into a SQLite journal (createKernel({ journal: { kind: 'sqlite', path } }), or forge-kernel run
--journal <file>): the runs and cascade chains it holds, one run's or chain's entries, or one run's journal as JSON
Lines that forge-kernel replay --from accepts on another machine (for a bug report).

Options:
  --journal <file>   the journal's SQLite file
  --status <s>       list only those with this status (runs: queued, running, paused, awaitingDecision, completed,
                     failed, cancelled; chains: active, completed, expired, stopped)
  --limit <n>        list at most n runs, newest first (default 50)
  --out <file>       export into this file (default: standard output)
  --json             print JSON
  -h, --help         show this help

Exit status: 0 on success, 1 when the journal or the run cannot be read, 2 on a usage mistake.`;

const REPLAY_HELP = `Usage: forge-kernel replay <runId|chainId> (--journal <file> | --from <export.jsonl>) [options]

Re-executes every overlay call a journaled run (or cascade chain: the calls its events caused) recorded, with its recorded input and the host calls answered from
the recording (db_read rows included: nothing runs on the host, nothing is published), and checks that outputs and
fuel are identical. The first difference is reported with its entry, phase, overlay and JSON path. With --with, a
new version of an overlay runs against the recorded traffic instead: every call whose output or fuel differs is
listed (a shadow test before a hot reload).

Options:
  --journal <file>           the run journal (SQLite) holding the run
  --from <file.jsonl>        a run exported with forge-kernel journal export
  --overlays <dir>           where the recorded overlays' modules are (<name>.wasm + manifest; default: the examples)
  --with <name>=<path.wasm>  replay <name>'s calls on this module instead (repeatable; its manifest beside it)
  --json                     print the report as JSON
  -h, --help                 show this help

Exit status: 0 when the replay is identical, 1 when it differs or fails, 2 on a usage mistake.`;

async function openJournal(path: string | undefined): Promise<SqliteJournal> {
  if (path === undefined) throw new UsageError('--journal <file> is needed');
  // Opening would create an empty journal: a mistyped path is an error, not a new file.
  if (!existsSync(path)) throw new UsageError(`no journal at ${path}`);
  const journal = new SqliteJournal({ path });
  await journal.open();
  return journal;
}

function describeEntry(entry: JournalEntry): string {
  const at = new Date(entry.at).toISOString();
  switch (entry.kind) {
    case 'run.started':
      return `${String(entry.seq).padStart(4)} ${at} started   overlays ${entry.body.overlays.map((o) => `${o.name}@${o.version}`).join(', ')}`;
    case 'run.event': {
      const { event } = entry.body;
      const outcome = (event as { outcome?: { phase?: string; status?: string; durationMs?: number } }).outcome;
      const detail = outcome === undefined ? '' : ` ${outcome.phase} ${outcome.status} ${outcome.durationMs?.toFixed(1)} ms`;
      return `${String(entry.seq).padStart(4)} ${at} event     ${event.type}${detail}`;
    }
    case 'run.call':
      return `${String(entry.seq).padStart(4)} ${at} call      ${entry.body.phase} ${entry.body.overlay} #${entry.body.attempt} ${entry.body.error === undefined ? 'ok' : entry.body.error.code} fuel ${entry.body.fuelUsed}${entry.body.host === undefined ? '' : ` host calls ${entry.body.host.length}`}`;
    case 'run.driven':
      return `${String(entry.seq).padStart(4)} ${at} driven    by ${entry.body.by}`;
    case 'run.settled':
      return `${String(entry.seq).padStart(4)} ${at} settled   ${entry.body.status}`;
    case 'chain.started':
      return `${String(entry.seq).padStart(4)} ${at} started   ${String(entry.body.chain.insightType)} from ${String(entry.body.chain.source)}`;
    case 'chain.hop':
      return `${String(entry.seq).padStart(4)} ${at} hop       ${String(entry.body.hop.from)} → ${String(entry.body.hop.to)}`;
    case 'chain.call':
      return `${String(entry.seq).padStart(4)} ${at} call      ${entry.body.event} ${entry.body.overlay} #${entry.body.attempt} ${entry.body.error === undefined ? 'ok' : entry.body.error.code} fuel ${entry.body.fuelUsed}${entry.body.host === undefined ? '' : ` host calls ${entry.body.host.length}`}`;
    case 'chain.saved':
      return `${String(entry.seq).padStart(4)} ${at} saved     ${String(entry.body.chain.hops)} hops, ${String(entry.body.chain.insights)} insights`;
    case 'chain.ended':
      return `${String(entry.seq).padStart(4)} ${at} ended     ${entry.body.status}${typeof entry.body.chain.endReason === 'string' ? ` (${entry.body.chain.endReason})` : ''}`;
  }
}

async function journalRun(args: readonly string[], io: CliIO): Promise<number> {
  const json = args.includes('--json');
  try {
    const { values, positionals } = parseCommandArgs({
      args: [...args],
      allowPositionals: true,
      options: { journal: { type: 'string' }, status: { type: 'string' }, limit: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean', default: false } },
    });
    const [action, id, ...extra] = positionals;
    if (action !== 'list' && action !== 'show' && action !== 'export') throw new UsageError(`journal needs list, show <id> or export <id>, got ${JSON.stringify(action ?? '')}`);
    if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
    if (action === 'list' && id !== undefined) throw new UsageError('journal list takes no run id');
    if (action !== 'list' && id === undefined) throw new UsageError(`journal ${action} needs a run id`);
    const limit = values.limit === undefined ? 50 : Number(values.limit);
    if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit must be a positive whole number, got ${JSON.stringify(values.limit)}`);
    const journal = await openJournal(values.journal);
    try {
      if (action === 'list') {
        const heads = await journal.list({ limit, ...(values.status === undefined ? {} : { statuses: [values.status] }) });
        if (json) io.stdout(`${JSON.stringify({ ok: true, runs: heads })}\n`);
        else if (heads.length === 0) io.stdout('no runs\n');
        else for (const head of heads) io.stdout(`${head.stream}  ${head.type.padEnd(5)} ${head.status.padEnd(16)} ${String(head.seq).padStart(4)} entries  ${new Date(head.updatedAt).toISOString()}\n`);
        return 0;
      }
      const entries = await journal.read(id!);
      if (entries.length === 0) throw new UsageError(`no run ${id} in ${values.journal}`);
      if (action === 'export') {
        const text = toJsonLines(entries);
        if (values.out === undefined) io.stdout(text);
        else {
          await writeFile(values.out, text);
          io.stderr(`exported ${entries.length} entries of ${id} to ${values.out}\n`);
        }
        return 0;
      }
      const head = await journal.head(id!);
      if (json) io.stdout(`${JSON.stringify({ ok: true, head, entries })}\n`);
      else io.stdout(`run ${id}: ${head?.status} (${entries.length} entries)\n${entries.map(describeEntry).join('\n')}\n`);
      return 0;
    } finally {
      await journal.close();
    }
  } catch (error) {
    return reportFailure(io, 'journal', json, error);
  }
}

function describeReport(report: ReplayReport): string {
  const lines = [`replay ${report.id}: ${report.calls} calls, ${report.identical ? 'identical' : `${report.differences.length} differ`} (fuel recorded ${report.fuel.recorded}, replayed ${report.fuel.replayed}) in ${report.durationMs.toFixed(1)} ms`];
  for (const o of report.overlays) if (o.candidate || o.recorded?.sha256 !== o.replayed.sha256) lines.push(`  ${o.name}: recorded ${o.recorded?.version ?? '?'} (${o.recorded?.sha256.slice(0, 12) ?? '?'}), replayed ${o.replayed.version} (${o.replayed.sha256.slice(0, 12)})${o.candidate ? ' [--with]' : ''}`);
  for (const d of report.differences) {
    lines.push(`  entry ${d.seq} ${d.phase} ${d.overlay} #${d.attempt}: ${d.what}${d.path === undefined ? '' : ` at ${d.path}`}: recorded ${JSON.stringify(d.recorded)}, replayed ${JSON.stringify(d.replayed)}`);
  }
  return `${lines.join('\n')}\n`;
}

async function replayCommandRun(args: readonly string[], io: CliIO): Promise<number> {
  const json = args.includes('--json');
  try {
    const { values, positionals } = parseCommandArgs({
      args: [...args],
      allowPositionals: true,
      options: { journal: { type: 'string' }, from: { type: 'string' }, overlays: { type: 'string' }, with: { type: 'string', multiple: true }, json: { type: 'boolean', default: false } },
    });
    const [id, ...extra] = positionals;
    if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
    if ((values.journal === undefined) === (values.from === undefined)) throw new UsageError('give the run\'s journal (--journal <file>) or its export (--from <file.jsonl>), one of them');
    const versions: Record<string, string> = {};
    for (const spec of values.with ?? []) {
      const at = spec.indexOf('=');
      if (at < 1 || at === spec.length - 1) throw new UsageError(`--with takes <name>=<path.wasm>, got ${JSON.stringify(spec)}`);
      versions[spec.slice(0, at)] = spec.slice(at + 1);
    }
    let entries: JournalEntry[];
    let runId: string;
    if (values.from !== undefined) {
      let text: string;
      try {
        text = await readFile(values.from, 'utf8');
      } catch (error) {
        throw new UsageError(`cannot read ${values.from}: ${(error as Error).message}`);
      }
      const exported = fromJsonLines(text);
      if (id !== undefined && id !== exported.stream) throw new UsageError(`${values.from} holds run ${exported.stream}, not ${id}`);
      ({ entries } = exported);
      runId = exported.stream;
    } else {
      if (id === undefined) throw new UsageError('replay needs a run or chain id: forge-kernel replay <runId|chainId> --journal <file>');
      const journal = await openJournal(values.journal);
      try {
        entries = await journal.read(id);
      } finally {
        await journal.close();
      }
      if (entries.length === 0) throw new UsageError(`no run ${id} in ${values.journal}`);
      runId = id;
    }
    const first = entries[0];
    const recorded = first?.kind === 'run.started' && Array.isArray(first.body.overlays) ? first.body.overlays : [];
    const dir = values.overlays ?? (await exampleOverlays(io));
    const kernel = await createKernel({ logger: commandLogger(io), journal: false });
    try {
      const loaded = await kernel.overlays.loadDirectory(dir, { grant: 'declared', mode: recorded.some((o) => o.mode === 'strict') ? 'strict' : 'relaxed' });
      for (const o of recorded) if (!loaded.some((l) => l.name === o.name) && versions[o.name] === undefined) throw new UsageError(`the run called ${o.name}, which ${dir} does not hold: give --overlays <dir> or --with ${o.name}=<path.wasm>`);
      const report = await kernel.replay(runId, { entries, overlays: versions });
      if (json) io.stdout(`${JSON.stringify({ ok: report.identical, ...report })}\n`);
      else io.stdout(describeReport(report));
      return report.identical ? 0 : 1;
    } finally {
      await kernel.stop();
    }
  } catch (error) {
    return reportFailure(io, 'replay', json, error);
  }
}

export const journalCommand: Command = { name: 'journal', summary: 'list, show or export journaled runs', help: JOURNAL_HELP, run: journalRun };
export const replayCommand: Command = { name: 'replay', summary: 'replay a journaled run\'s overlay calls (or a new version against them)', help: REPLAY_HELP, run: replayCommandRun };
