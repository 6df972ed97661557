import { afterAll, describe, expect, it } from 'vitest';
import { isForgeError } from '../../src/errors.ts';
import { MAX_JSON_NESTING } from '../../src/json-nesting.ts';
import { OverlayRegistry } from '../../src/overlays/registry.ts';
import { loadWasmOverlay, type LoadWasmOptions, type OverlayEngine } from '../../src/wasm/engine.ts';
import type { HostCallContext, HostFunction } from '../../src/wasm/host-functions.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { codeOf } from '../support/errors.ts';
import { EMPTY_OBJECT, hostileModule, manifestOf, READ_NUMBER } from '../support/hostile.ts';
import { budget, until } from '../support/wait.ts';

// What an outside review of the sandbox found, each attacked as a class: state one call leaves for the next, host
// reads past the memory the module has, JSON nested past what serializing it again takes, calls outliving close(),
// fuel past the service's ceiling, re-instantiation nobody pays for, recursion through the host.

const modes = ['strict', 'relaxed'] as const;
const PAGE = 65_536;

/** A data segment holding `text` as an AssemblyScript string at `at` (its byte length in the 4 bytes before). */
function stringData(at: number, text: string): string {
  const bytes = [...new Uint8Array(new Uint32Array([text.length * 2]).buffer), ...[...text].flatMap((c) => [c.charCodeAt(0), 0])];
  return `(data (i32.const ${at - 4}) "${bytes.map((b) => `\\${b.toString(16).padStart(2, '0')}`).join('')}")`;
}

const PUBLISH_IMPORT = '(import "forge" "event_publish" (func $publish (param i32 i32) (result i32)))';
/** Where the modules keep the event type `probe.seen`. */
const TYPE_AT = 64;

/** A passive data segment one export drops and another copies into memory. */
const SEGMENTS = hostileModule(`(data $passive "\\2a\\2a\\2a\\2a")
  (func (export "drop") (param i32) (result i32) (data.drop $passive) (i32.const ${EMPTY_OBJECT}))
  (func (export "init") (param i32) (result i32) (memory.init $passive (i32.const 2048) (i32.const 0) (i32.const 4)) (i32.const ${EMPTY_OBJECT}))`);

/**
 * Sees 2 pages and really has 4 (room for a first grow, as the meter's doubling would give). `stash` grows past that
 * room, to 5 pages seen (8 real), and keeps its input on page 4: past the end of a fresh instance's memory.
 */
const SECRET_AT = 4 * PAGE + 16;
/** On page 3: past the 3 pages the module sees after growing one, inside the 4 it really has. */
const PAST_SIZE_AT = 3 * PAGE + 16;
/** Writes the string `{}` at `at` and leaves its pointer. */
const writeEmptyObject = (at: number) => `(i32.store (i32.const ${at - 4}) (i32.const 4)) (i32.store (i32.const ${at}) (i32.const 0x007d007b)) (i32.const ${at})`;
const GROWN = hostileModule(
  `${stringData(TYPE_AT, 'probe.seen')}
  (func (export "stash") (param $in i32) (result i32) (local $len i32)
    (local.set $len (i32.load (i32.sub (local.get $in) (i32.const 4))))
    (if (i32.eq (memory.grow (i32.const 3)) (i32.const -1)) (then unreachable))
    (memory.copy (i32.const ${SECRET_AT}) (local.get $in) (local.get $len))
    (i32.store (i32.const ${SECRET_AT - 4}) (local.get $len))
    (i32.const ${EMPTY_OBJECT}))
  (func (export "load") (param i32) (result i32) (drop (i32.load (i32.const ${SECRET_AT}))) (i32.const ${EMPTY_OBJECT}))
  (func (export "returnIt") (param i32) (result i32) (i32.const ${SECRET_AT}))
  (func (export "publishIt") (param i32) (result i32) (drop (call $publish (i32.const ${TYPE_AT}) (i32.const ${SECRET_AT}))) (i32.const ${EMPTY_OBJECT}))
  (func (export "returnPastSize") (param i32) (result i32)
    (drop (memory.grow (i32.const 1)))
    ${writeEmptyObject(PAST_SIZE_AT)})
  (func (export "publishPastSize") (param i32) (result i32)
    (drop (memory.grow (i32.const 1)))
    (drop (call $publish (i32.const ${TYPE_AT}) ${writeEmptyObject(PAST_SIZE_AT)}))
    (i32.const ${EMPTY_OBJECT}))`,
  { pages: 2, imports: PUBLISH_IMPORT },
);

/** `[` × n then `]` × n at NEST_AT, n being the call's input: JSON nested n deep. */
const NEST_AT = PAGE + 16;
const DEEP = hostileModule(
  `${stringData(TYPE_AT, 'probe.seen')}
  ${READ_NUMBER}
  (func $nest (param $levels i32) (result i32) (local $i i32)
    (i32.store (i32.const ${NEST_AT - 4}) (i32.shl (local.get $levels) (i32.const 2)))
    (block $done (loop $brackets
      (br_if $done (i32.ge_u (local.get $i) (local.get $levels)))
      (i32.store16 (i32.add (i32.const ${NEST_AT}) (i32.shl (local.get $i) (i32.const 1))) (i32.const 0x5b))
      (i32.store16 (i32.add (i32.const ${NEST_AT}) (i32.shl (i32.add (local.get $i) (local.get $levels)) (i32.const 1))) (i32.const 0x5d))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $brackets)))
    (i32.const ${NEST_AT}))
  (func (export "deepOutput") (param $in i32) (result i32) (call $nest (call $number (local.get $in))))
  (func (export "deepEvent") (param $in i32) (result i32) (drop (call $publish (i32.const ${TYPE_AT}) (call $nest (call $number (local.get $in))))) (i32.const ${EMPTY_OBJECT}))`,
  { pages: 4, imports: PUBLISH_IMPORT },
);

const DB_IMPORT = '(import "forge" "db_read" (func $db (param i32 i32) (result i32)))';
const WAITS_ON_DB = hostileModule(`(func (export "wait") (param i32) (result i32) (call $db (i32.const ${EMPTY_OBJECT}) (i32.const ${EMPTY_OBJECT})))`, { imports: DB_IMPORT });

/** A loop of `n` (the input) iterations. */
const LOOP = hostileModule(`${READ_NUMBER}
  (func (export "loop") (param $in i32) (result i32) (local $n i32)
    (local.set $n (call $number (local.get $in)))
    (block $done (loop $again (br_if $done (i32.eqz (local.get $n))) (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br $again)))
    (i32.const ${EMPTY_OBJECT}))`);

/** A start function that burns fuel and changes a table, which no snapshot can hold: every instance must run it. */
const START_LOOPS = 1_000;
const DIRTY_START = hostileModule(`(table $t 1 funcref) (elem (i32.const 0) $entry) (func $entry (result i32) (i32.const ${EMPTY_OBJECT}))
  (start $boot)
  (func $boot (local $i i32)
    (loop $spin (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $spin (i32.lt_u (local.get $i) (i32.const ${START_LOOPS}))))
    (table.set $t (i32.const 0) (ref.null func)))`);

/**
 * A start function that clears a data segment and writes far from it; `check` traps unless memory is as the
 * start function left it, `grow` grows past the room an instance starts with, so the next call gets a new instance.
 */
const STARTED = hostileModule(`(data (i32.const 8192) "\\01\\02\\03\\04\\05\\06\\07\\08")
  (start $boot) (func $boot (i64.store (i32.const 8192) (i64.const 0)) (i32.store (i32.const ${3 * PAGE + 8}) (i32.const 7)))
  (func (export "check") (param i32) (result i32)
    (if (i64.ne (i64.load (i32.const 8192)) (i64.const 0)) (then unreachable))
    (if (i32.ne (i32.load (i32.const ${3 * PAGE + 8})) (i32.const 7)) (then unreachable))
    (i32.const ${EMPTY_OBJECT}))
  (func (export "grow") (param i32) (result i32) (drop (memory.grow (i32.const 40))) (i32.const ${EMPTY_OBJECT}))`, { pages: 4 });

/** A big memory the module starts with; `touch` writes its last page. */
const BIG_PAGES = 1_024;
const BIG = hostileModule(`(func (export "touch") (param i32) (result i32) (i32.store (i32.const ${BIG_PAGES * PAGE - 4}) (i32.const 1)) (i32.const ${EMPTY_OBJECT}))`, { pages: BIG_PAGES });

/** The allocator calls a host function whose string result the host passes in through the allocator: recursion through the host. */
const ECHO_IMPORT = '(import "forge" "echo" (func $echo (result i32)))';
const ECHOES = hostileModule(`(func (export "echo") (param i32) (result i32) (drop (call $echo)) (i32.const ${EMPTY_OBJECT}))`, { imports: ECHO_IMPORT, onAllocate: '(drop (call $echo))' });

const DB_READ = { name: 'db_read', capability: 'DATABASE_READ', async: true, params: ['string', 'string'], result: 'string' } as const;

describe.each(modes)('the sandbox after review, %s mode', (mode) => {
  const engines: OverlayEngine[] = [];
  const load = async (bytes: Uint8Array, options: Partial<LoadWasmOptions> & { manifest?: Record<string, unknown> } = {}): Promise<OverlayEngine> => {
    const engine = await loadWasmOverlay(bytes, { mode, cache: testCache, logger: captureLogger().logger, poolSize: 1, ...options, manifest: manifestOf(bytes, options.manifest) });
    engines.push(engine);
    return engine;
  };
  const outcome = (promise: Promise<{ output: unknown; events: { payload: unknown }[] }>) =>
    promise.then(
      (r) => ({ output: r.output, events: r.events.map((e) => e.payload) }),
      (error: unknown) => ({ code: isForgeError(error) ? error.code : `untyped ${String(error)}` }),
    );
  afterAll(async () => {
    await Promise.all(engines.map((e) => e.close()));
  });

  it('starts every call with the data segments as after instantiation: a segment one caller dropped is whole for the next', async () => {
    const overlay = await load(SEGMENTS);
    expect((await overlay.call('init', null)).output).toEqual({});
    expect((await overlay.call('drop', null)).output).toEqual({});
    for (let i = 0; i < 2; i++) expect((await overlay.call('init', null)).output).toEqual({});
  });

  it("gives the next caller none of the pages an earlier caller grew, neither through the module nor through the host", async () => {
    const overlay = await load(GROWN, { manifest: { memoryPages: 64, capabilities: ['EVENT_PUBLISH'] }, grant: ['EVENT_PUBLISH'] });
    const probes = { load: 'OVERLAY_TRAP', returnIt: 'INVALID_OUTPUT', publishIt: 'INVALID_EVENT' } as const;
    for (const [probe, code] of Object.entries(probes)) {
      await overlay.call('stash', { card: '4111-1111-1111-1111' });
      const seen = await outcome(overlay.call(probe, null));
      expect(JSON.stringify(seen), probe).not.toContain('4111');
      // As on a fresh instance, where the address is past the end of memory.
      expect(seen, probe).toEqual({ code });
    }
  });

  it('reads and writes for the module only within the memory size it sees, never the larger real memory behind it', async () => {
    const overlay = await load(GROWN, { manifest: { memoryPages: 64, capabilities: ['EVENT_PUBLISH'] }, grant: ['EVENT_PUBLISH'] });
    expect(await outcome(overlay.call('returnPastSize', null))).toEqual({ code: 'INVALID_OUTPUT' });
    expect(await outcome(overlay.call('publishPastSize', null))).toEqual({ code: 'INVALID_EVENT' });
  });

  it(`refuses JSON nested deeper than ${MAX_JSON_NESTING} levels in outputs and event payloads with a typed error, and takes it up to there`, async () => {
    const overlay = await load(DEEP, { manifest: { capabilities: ['EVENT_PUBLISH'] }, grant: ['EVENT_PUBLISH'] });
    const nested = (levels: number): unknown => (levels === 0 ? undefined : [nested(levels - 1)].filter((x) => x !== undefined));
    expect(await outcome(overlay.call('deepOutput', MAX_JSON_NESTING))).toEqual({ output: nested(MAX_JSON_NESTING), events: [] });
    expect(await outcome(overlay.call('deepEvent', MAX_JSON_NESTING))).toEqual({ output: {}, events: [nested(MAX_JSON_NESTING)] });
    for (const levels of [MAX_JSON_NESTING + 1, 32_768]) {
      expect(await outcome(overlay.call('deepOutput', levels)), `output ${levels}`).toEqual({ code: 'INVALID_OUTPUT' });
      expect(await outcome(overlay.call('deepEvent', levels)), `event ${levels}`).toEqual({ code: 'INVALID_EVENT' });
    }
  });

  it('types a host function result JSON cannot carry', async () => {
    const overlay = await load(WAITS_ON_DB, { manifest: { capabilities: ['DATABASE_READ'] }, grant: ['DATABASE_READ'], hostFunctions: [{ ...DB_READ, invoke: () => Promise.resolve({ big: 1n }) }] });
    expect(await codeOf(overlay.call('wait', null))).toBe('UNSERIALIZABLE_MESSAGE');
  });

  it('ends a call in flight with INSTANCE_TERMINATED when the overlay is closed, and stops its host work', async () => {
    const contexts: HostCallContext[] = [];
    const hanging: HostFunction = { ...DB_READ, invoke: (context) => (contexts.push(context), new Promise(() => {})) };
    const overlay = await load(WAITS_ON_DB, { manifest: { capabilities: ['DATABASE_READ'] }, grant: ['DATABASE_READ'], hostFunctions: [hanging] });
    const pending = codeOf(overlay.call('wait', null, { deadlineMs: budget(120_000) }));
    await until(() => contexts.length === 1, 'the host call');
    await overlay.close();
    expect(await pending).toBe('INSTANCE_TERMINATED');
    expect(contexts[0]!.signal.aborted).toBe(true);
  });

  it('refuses at load a manifest asking more fuel than the service allows, and holds calls to the ceiling', async () => {
    expect(await codeOf(load(LOOP, { manifest: { fuel: { loop: 5_000_000 } }, maxFuel: 1_000_000 }))).toBe('FUEL_LIMIT');
    const overlay = await load(LOOP, { maxFuel: 1_000 });
    // An export the manifest gives no budget gets the ceiling, not the default 10,000,000.
    expect(await codeOf(overlay.call('loop', 10_000))).toBe('OUT_OF_FUEL');
    expect(await codeOf(overlay.call('loop', 1, { fuel: 1_001 }))).toBe('FUEL_LIMIT');
    expect((await overlay.call('loop', 1, { fuel: 1_000 })).output).toEqual({});
  });

  it('charges a start function that every instance must run to the calls, and runs it only within their budget', async () => {
    const overlay = await load(DIRTY_START, { poolSize: 1 });
    const fuel = new Set<number>();
    for (let i = 0; i < 3; i++) fuel.add((await overlay.call('run', null)).fuelUsed);
    expect(fuel.size).toBe(1);
    const [used] = [...fuel];
    expect(used).toBeGreaterThan(START_LOOPS * 3);
    expect(await codeOf(overlay.call('run', null, { fuel: used! - 1 }))).toBe('OUT_OF_FUEL');
    expect((await overlay.call('run', null, { fuel: used! })).fuelUsed).toBe(used);
  });

  it('starts a new instance from the state after the start function, without running it again', async () => {
    const overlay = await load(STARTED, { manifest: { memoryPages: 64 } });
    for (let i = 0; i < 3; i++) {
      expect((await overlay.call('check', null)).output).toEqual({});
      expect((await overlay.call('grow', null)).output).toEqual({});
    }
  });

  it('prepares each instance of a module with a large memory in time that follows its data, not its size', async () => {
    const overlay = await load(BIG, { manifest: { memoryPages: BIG_PAGES } });
    await overlay.call('touch', null);
    // Each of these calls gets a fresh instance (its memory is past what is cheap to reset). Scanning or zeroing
    // 64 MiB took ≈ 250 ms here; preparing an instance from the snapshot, under a millisecond.
    const started = performance.now();
    for (let i = 0; i < 10; i++) expect((await overlay.call('touch', null)).output).toEqual({});
    expect(performance.now() - started).toBeLessThan(budget(1_000));
  });

  it('fails recursion through a host call-back with STACK_OVERFLOW at the deterministic limit', async () => {
    let levels = 0;
    const echo: HostFunction = { name: 'echo', capability: 'LOGGING', async: false, params: [], result: 'string', invoke: () => (levels++, 'x') };
    const overlay = await load(ECHOES, { manifest: { capabilities: ['LOGGING'] }, grant: ['LOGGING'], hostFunctions: [echo] });
    expect(await codeOf(overlay.call('echo', null))).toBe('STACK_OVERFLOW');
    expect(levels).toBeGreaterThan(10);
    expect(levels).toBeLessThan(400);
  });
});

describe('both engines', () => {
  it('stop recursion through a host call-back at the same depth', async () => {
    const depths: number[] = [];
    for (const mode of modes) {
      let levels = 0;
      const echo: HostFunction = { name: 'echo', capability: 'LOGGING', async: false, params: [], result: 'string', invoke: () => (levels++, 'x') };
      const overlay = await loadWasmOverlay(ECHOES, { mode, cache: testCache, logger: captureLogger().logger, poolSize: 1, manifest: manifestOf(ECHOES, { capabilities: ['LOGGING'] }), grant: ['LOGGING'], hostFunctions: [echo] });
      try {
        expect(await codeOf(overlay.call('echo', null))).toBe('STACK_OVERFLOW');
        depths.push(levels);
      } finally {
        await overlay.close();
      }
    }
    expect(depths[1]).toBe(depths[0]);
  });
});

describe('relaxed mode', () => {
  it('holds an overlay to its instance limit: calls past it wait for a free instance, then all finish', async () => {
    const waiting: (() => void)[] = [];
    const db: HostFunction = { ...DB_READ, invoke: () => new Promise<string>((resolve) => waiting.push(() => resolve('{}'))) };
    const overlay = await loadWasmOverlay(WAITS_ON_DB, { mode: 'relaxed', cache: testCache, logger: captureLogger().logger, poolSize: 2, manifest: manifestOf(WAITS_ON_DB, { capabilities: ['DATABASE_READ'] }), grant: ['DATABASE_READ'], hostFunctions: [db] });
    try {
      const calls = Array.from({ length: 5 }, () => overlay.call('wait', null, { deadlineMs: budget(60_000) }));
      await until(() => waiting.length === 2, 'two host calls');
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(waiting).toHaveLength(2);
      let answered = 0;
      await until(() => {
        while (answered < waiting.length) waiting[answered++]!();
        return answered === 5;
      }, 'every call to reach the host');
      expect((await Promise.all(calls)).map((r) => r.output)).toEqual([{}, {}, {}, {}, {}]);
    } finally {
      await overlay.close();
    }
  });
});

describe('the registry', () => {
  it('holds overlays to its fuel ceiling', async () => {
    const registry = new OverlayRegistry({ logger: captureLogger().logger, cache: testCache, maxFuel: 1_000_000 });
    expect(await codeOf(registry.load(LOOP, { manifest: manifestOf(LOOP, { fuel: { loop: 2_000_000 } }) }))).toBe('FUEL_LIMIT');
  });
});
