// SIGKILL at random moments: a kernel process on a SQLite journal is killed again and again while it drives runs
// (and continues those the previous one left). Afterwards every acknowledged run is in the journal, each of its
// phases is recorded exactly once, in order, and it completes exactly once.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteJournal } from '../../src/journal/sqlite-journal.ts';
import { PHASES } from '../../src/manifest.ts';
import { budget } from '../support/wait.ts';

const WORKER = join(import.meta.dirname, 'fixtures', 'journal-worker.ts');
const KILLS = 50;
const dir = mkdtempSync(join(tmpdir(), 'forge-sigkill-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the worker; `killAfterSteps`: SIGKILL it once it has printed that many overlay steps. */
async function worker(path: string, mode: 'work' | 'drain', name: string, killAfterSteps?: number): Promise<{ acked: string[]; lines: string[]; code: number | null; signal: string | null }> {
  const child = spawn(process.execPath, [WORKER, path, mode, name], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: string[] = [];
  let steps = 0;
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    if (line.startsWith('step ') && ++steps === killAfterSteps) child.kill('SIGKILL');
  });
  const { code, signal } = await exited;
  if (signal !== 'SIGKILL' && code !== 0) throw new Error(`worker ${name} exited ${String(code)}: ${stderr}`);
  return { acked: lines.filter((l) => l.startsWith('ack ')).map((l) => l.slice(4)), lines, code, signal };
}

describe('a kernel process killed at random moments (SQLite journal)', () => {
  it(`loses no acknowledged run and applies no step twice across ${KILLS} SIGKILLs`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 60 }), { minLength: KILLS, maxLength: KILLS }), async (killPoints) => {
        const path = join(dir, `journal-${Date.now()}.db`);
        const acked = new Set<string>();
        for (const [i, steps] of killPoints.entries()) {
          const result = await worker(path, 'work', `w${i}`, steps);
          expect(result.signal, result.lines.join('\n')).toBe('SIGKILL');
          for (const id of result.acked) acked.add(id);
        }
        const drain = await worker(path, 'drain', 'drain');
        expect(drain.lines.at(-1)).toBe('drained');
        expect(drain.lines.filter((l) => l.startsWith('done ')).every((l) => l.endsWith(' completed'))).toBe(true);

        const journal = new SqliteJournal({ path });
        await journal.open();
        try {
          expect(acked.size).toBeGreaterThan(0);
          const heads = await journal.list({ type: 'run' });
          const open = heads.filter((h) => !h.settled);
          expect(open, 'runs left unfinished').toEqual([]);
          for (const id of acked) {
            const entries = await journal.read(id);
            expect(entries.length, `acknowledged run ${id} is in the journal`).toBeGreaterThan(0);
          }
          for (const head of heads) {
            const entries = await journal.read(head.stream);
            const phases = entries.flatMap((e) => (e.kind === 'run.event' && e.body.event.type === 'PHASE_DONE' ? [(e.body.event as unknown as { outcome: { phase: string } }).outcome.phase] : []));
            expect(phases, `${head.stream}: each phase once, in order`).toEqual([...PHASES]);
            expect(entries.filter((e) => e.kind === 'run.settled').map((e) => (e.body as { status: string }).status), `${head.stream}: completes once`).toEqual(['completed']);
            expect(entries.filter((e) => e.kind === 'run.started'), `${head.stream}: starts once`).toHaveLength(1);
          }
        } finally {
          await journal.close();
        }
      }),
      { numRuns: 1 },
    );
  }, budget(600_000));
});
