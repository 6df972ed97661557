import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { ensureDebianPackage } from '../../scripts/services/common.ts';
import { JetStreamJournal } from '../../src/journal/jetstream-journal.ts';
import type { NewEntry } from '../../src/journal/journal.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { buildExamples, EXAMPLES_OUT, GOOD_CAPSULE } from '../support/examples.ts';
import { journalContract } from '../support/journal-contract.ts';
import { freePort } from '../support/net.ts';
import { deleteStreams } from '../support/nats.ts';
import { budget, until } from '../support/wait.ts';

const services = inject('services');
const TRUSTED = { internal: true, trusted: true } as const;
const made: JetStreamJournal[] = [];
const names: string[] = [];

async function jetstreamJournal(name = `t${randomUUID().slice(0, 8)}`): Promise<JetStreamJournal> {
  const journal = new JetStreamJournal({ servers: services.NATS_URL, name });
  made.push(journal);
  if (!names.includes(journal.streamName)) names.push(journal.streamName);
  await journal.open();
  return journal;
}

afterEach(async () => {
  await Promise.all(made.splice(0).map((j) => j.close().catch(() => undefined)));
});
afterAll(async () => {
  await deleteStreams(services.NATS_URL, names);
});

const event = (type: string): NewEntry => ({ kind: 'run.event', at: 1, body: { event: { type } } });

describe('journal contract: jetstream (real NATS JetStream)', () => journalContract(() => jetstreamJournal()));

describe('JetStream journal across processes (one connection each)', () => {
  it('one writer per run: of two journals racing at one sequence number exactly one lands, and a stale writer learns', async () => {
    const name = `t${randomUUID().slice(0, 8)}`;
    const a = await jetstreamJournal(name);
    const b = await jetstreamJournal(name);
    expect(await a.append('run_r', 0, [event('start')], { status: 'running', dedupeKey: 'a1' })).toBe(1);
    const results = await Promise.all([
      a.append('run_r', { after: 'a1' }, [event('A')], { status: 'running', dedupeKey: 'a2' }),
      b.append('run_r', 1, [event('B')], { status: 'running', dedupeKey: 'b2' }),
    ]);
    expect(results.filter((r) => r === 2)).toHaveLength(1);
    expect(results.filter((r) => r === undefined)).toHaveLength(1);
    const winner = results[0] === 2 ? 'A' : 'B';
    expect((await b.read('run_r')).map((e) => (e.body as { event: { type: string } }).event.type)).toEqual(['start', winner]);
    // `a` believed the run at its own head; after the other's append it is refused, and it can go on from a fresh read.
    expect(await a.append('run_r', 2, [event('C')], { status: 'paused', dedupeKey: 'a3' })).toBe(3);
    expect(await b.append('run_r', 2, [event('D')], { status: 'paused', dedupeKey: 'b3' })).toBeUndefined();
    expect(await b.head('run_r')).toMatchObject({ seq: 3, status: 'paused', lastKey: 'a3' });
  });

  it('a retry from another connection of an append that landed (its answer lost) lands once', async () => {
    const name = `t${randomUUID().slice(0, 8)}`;
    const a = await jetstreamJournal(name);
    const b = await jetstreamJournal(name);
    expect(await a.append('run_d', { after: null }, [event('start')], { status: 'running', dedupeKey: 'k1' })).toBe(1);
    expect(await b.append('run_d', { after: null }, [event('start')], { status: 'running', dedupeKey: 'k1' })).toBe(1);
    expect(await b.append('run_d', 0, [event('start')], { status: 'running', dedupeKey: 'k1' })).toBe(1);
    expect(await a.read('run_d')).toHaveLength(1);
  });

  it('lists what another process wrote, settled streams included, and prunes them for every process', async () => {
    const name = `t${randomUUID().slice(0, 8)}`;
    const a = await jetstreamJournal(name);
    const b = await jetstreamJournal(name);
    await a.append('run_done', 0, [event('A')], { status: 'completed', settled: true });
    await a.append('run_open', 0, [event('A')], { status: 'paused' });
    expect((await b.list()).map((h) => [h.stream, h.status, h.settled])).toEqual(
      expect.arrayContaining([
        ['run_done', 'completed', true],
        ['run_open', 'paused', false],
      ]),
    );
    expect(await b.prune({ maxAgeMs: 0, now: Date.now() + 1_000 })).toBe(1);
    expect((await a.list()).map((h) => h.stream)).toEqual(['run_open']);
    expect(await a.read('run_done')).toEqual([]);
  });

  it('a damaged message is a typed error naming the run, and other runs go on', async () => {
    const journal = await jetstreamJournal();
    await journal.append('run_ok', 0, [event('A')], { status: 'running' });
    await journal.append('run_bad', 0, [event('A')], { status: 'running' });
    const nc = await connect({ servers: services.NATS_URL });
    try {
      // Bit rot in an entry (its checksum no longer matches), then a message that is no append at all.
      const [entry] = await journal.read('run_bad');
      const line = JSON.stringify({ seq: 2, first: 2, status: 'running', settled: false, key: null, createdAt: 1, updatedAt: 1, bytes: 1 });
      await jetstream(nc).publish(`forge.journal.${journal.streamName.slice('FORGE_JOURNAL_'.length)}.run_bad`, `${line}\n123\t${JSON.stringify({ ...entry, seq: 2 })}`);
      await expect(journal.read('run_bad')).rejects.toMatchObject({ code: 'JOURNAL_CORRUPT', details: { stream: 'run_bad', seq: 2 } });
      await jetstream(nc).publish(`forge.journal.${journal.streamName.slice('FORGE_JOURNAL_'.length)}.run_bad`, 'not an append');
      await expect(journal.head('run_bad')).rejects.toMatchObject({ code: 'JOURNAL_CORRUPT', details: { stream: 'run_bad' } });
      // A subject that is no run id, and a run whose last message does not read: the list goes on without them.
      await jetstream(nc).publish(`forge.journal.${journal.streamName.slice('FORGE_JOURNAL_'.length)}.nonsense`, 'x');
      expect((await journal.list()).map((h) => h.stream)).toEqual(['run_ok']);
    } finally {
      await nc.close();
    }
    expect(await journal.read('run_ok')).toHaveLength(1);
  });

  it('refuses bad options with a typed error', () => {
    for (const options of [{}, { servers: '' }, { servers: [] }, { servers: 'nats://x', name: 'a.b' }, { servers: 'nats://x', replicas: 0 }, { servers: 'nats://x', timeoutMs: 'x' }]) {
      expect(() => new JetStreamJournal(options as never), JSON.stringify(options)).toThrow(expect.objectContaining({ code: 'INVALID_JOURNAL_INPUT' }) as Error);
    }
  });
});

describe('JetStream journal faults', () => {
  let server: ChildProcess | undefined;
  afterAll(() => {
    server?.kill('SIGKILL');
  });

  it('NATS without JetStream, or no NATS at all: the kernel refuses to start with JOURNAL_UNAVAILABLE', async () => {
    const binary = await ensureDebianPackage('nats-server', 'nats-server', { report: () => undefined, fix: 'apt-get install -y nats-server', codes: { missing: 'NATS_SERVER_MISSING', failed: 'NATS_INSTALL_FAILED' } });
    const port = await freePort();
    server = spawn(binary, ['--addr', '127.0.0.1', '--port', String(port)], { stdio: 'ignore' });
    const url = `nats://127.0.0.1:${port}`;
    await until(async () => {
      try {
        await (await connect({ servers: url, timeout: 1_000 })).close();
        return true;
      } catch {
        return false;
      }
    }, 'the plain NATS server to listen', { timeoutMs: budget(30_000) });
    const log = captureLogger();
    await expect(createKernel({ logger: log.logger, cacheDir: false, journal: { kind: 'jetstream', servers: url } })).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE', message: expect.stringContaining('no JetStream') as string });
    server.kill('SIGKILL');
    await new Promise((resolve) => server!.once('exit', resolve));
    await expect(createKernel({ logger: log.logger, cacheDir: false, journal: { kind: 'jetstream', servers: url, timeoutMs: 500 } })).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
  });
});

describe('kernels on a JetStream journal (real NATS)', () => {
  const kernels: Kernel[] = [];
  afterEach(async () => {
    await Promise.all(kernels.splice(0).map((k) => k.stop().catch(() => undefined)));
  });

  it('a run waiting for a decision in one kernel is decided, once, by another after the first is gone; its history replays', async () => {
    await buildExamples();
    const name = `t${randomUUID().slice(0, 8)}`;
    names.push(`FORGE_JOURNAL_${name}`);
    const log = captureLogger();
    const calls: string[] = [];
    const open = async (who: string): Promise<Kernel> => {
      const kernel = await createKernel({ logger: log.logger, cacheDir: false, journal: { kind: 'jetstream', servers: services.NATS_URL, name } });
      kernels.push(kernel);
      await kernel.overlays.loadDirectory(EXAMPLES_OUT, { grant: 'declared', mode: 'relaxed' });
      const voter: NativeOverlay = { manifest: { name: 'voter', version: '1.0.0', phases: ['consensus'] }, exports: { run: () => ({ ok: true, data: { needsDecision: true } }) } };
      const doer: NativeOverlay = { manifest: { name: 'doer', version: '1.0.0', phases: ['execution'] }, exports: { run: () => (calls.push(who), { ok: true, data: {} }) } };
      await kernel.overlays.load(voter, TRUSTED);
      await kernel.overlays.load(doer, TRUSTED);
      return kernel;
    };
    const first = await open('first');
    expect(first.journal?.kind).toBe('jetstream');
    const run = first.pipelines.start({ capsule: GOOD_CAPSULE });
    await until(() => run.status === 'awaitingDecision', 'the run to wait for a decision', { timeoutMs: budget(60_000) });
    await run.pause();
    await first.stop();

    const second = await open('second');
    const third = await open('third');
    const outcomes = await Promise.allSettled([second.pipelines.resume(run.id, { decision: 'approve', by: 'bob' }), third.pipelines.resume(run.id, { decision: 'reject', by: 'carol' })]);
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    // The loser either lost the conditional append (RUN_CLAIMED) or read the run as resumed already (RUN_NOT_PAUSED).
    expect(['RUN_CLAIMED', 'RUN_NOT_PAUSED']).toContain(((outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason as { code?: string }).code);
    const winner = (outcomes.find((o) => o.status === 'fulfilled') as PromiseFulfilledResult<{ done: Promise<{ status: string }> }>).value;
    expect(['completed', 'cancelled', 'failed']).toContain((await winner.done).status);
    const entries = await third.journal!.read(run.id);
    const kinds = entries.map((e) => (e.kind === 'run.event' ? `event:${e.body.event.type}` : e.kind));
    expect(kinds.filter((k) => k === 'run.settled')).toHaveLength(1);
    expect(kinds.filter((k) => k === 'event:DECIDE')).toHaveLength(1);
    expect(calls.length).toBeLessThanOrEqual(1);
    const report = await third.replay(run.id);
    expect(report.calls).toBeGreaterThan(0);
    expect(report.identical).toBe(true);
  });
});
