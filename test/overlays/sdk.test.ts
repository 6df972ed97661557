import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ABI } from '../../src/wasm/abi.ts';
import { scanModule } from '../../src/wasm/binary.ts';
import { loadWasmOverlay, type OverlayEngine } from '../../src/wasm/engine.ts';
import { BUILTIN_HOST_FUNCTIONS, type HostFunction } from '../../src/wasm/host-functions.ts';
import { GRAPH_UNAVAILABLE_FUNCTIONS } from '../../src/wasm/graph-unavailable.ts';
import { captureLogger, testCache } from '../support/engine.ts';
import { buildFixture } from '../support/overlays.ts';

const stub = (name: 'db_read' | 'db_write'): HostFunction => ({
  ...GRAPH_UNAVAILABLE_FUNCTIONS.find((f) => f.name === name)!,
  invoke: (_context, args) => JSON.stringify({ called: name, query: args[0] }),
});

describe('AssemblyScript SDK', () => {
  let fixture: { bytes: Uint8Array; manifest: Record<string, unknown> };
  let echo: OverlayEngine;

  beforeAll(async () => {
    fixture = await buildFixture('fixtures/sdk-echo.ts', { capabilities: ['LOGGING', 'EVENT_PUBLISH', 'DATABASE_READ', 'DATABASE_WRITE'] });
    echo = await loadWasmOverlay(fixture.bytes, {
      manifest: fixture.manifest,
      grant: ['LOGGING', 'EVENT_PUBLISH', 'DATABASE_READ', 'DATABASE_WRITE'],
      mode: 'relaxed',
      cache: testCache,
      logger: captureLogger().logger,
      hostFunctions: [stub('db_read'), stub('db_write')],
    });
  });
  afterAll(async () => {
    await echo.close();
  });

  it('imports exactly the host functions of the ABI, from the ABI module', () => {
    const imports = WebAssembly.Module.imports(new WebAssembly.Module(fixture.bytes as Uint8Array<ArrayBuffer>));
    const known = [...BUILTIN_HOST_FUNCTIONS, ...GRAPH_UNAVAILABLE_FUNCTIONS].map((f) => f.name);
    const host = imports.filter((i) => i.module === ABI.hostModule).map((i) => i.name).sort();
    expect(host).toEqual([...known].sort());
    for (const other of imports.filter((i) => i.module !== ABI.hostModule)) {
      expect(other.module).toBe(ABI.runtimeModule);
      expect(ABI.runtimeImports).toContain(other.name);
    }
  });

  it('binds log, publish, dbRead and dbWrite to the host', async () => {
    const result = await echo.call('all', {});
    expect(result.output).toEqual({
      ok: true,
      data: [
        { called: 'db_read', query: 'RETURN 1' },
        { called: 'db_write', query: '[{"merge":"Probe","key":{"id":"p1"}}]' },
      ],
    });
    expect(result.events).toEqual([{ type: 'sdk.tested', payload: { by: 'sdk-echo' }, source: echo.id }]);
    expect(result.logs).toEqual([{ level: 'info', message: 'all' }]);
  });

  it('imports db_write with one parameter, the mutations, and db_read with the query and its parameters', () => {
    const imports = scanModule(fixture.bytes).imports.filter((i) => i.module === ABI.hostModule);
    expect(imports.find((i) => i.name === 'db_write')?.type).toEqual({ params: ['i32'], results: ['i32'] });
    expect(imports.find((i) => i.name === 'db_read')?.type).toEqual({ params: ['i32', 'i32'], results: ['i32'] });
  });

  it('builds each mutation as the JSON db_write takes, in order, leaving out what was not given', async () => {
    const node = (label: string, id: string) => ({ label, key: { id } });
    const expected = [
      { merge: 'Capsule', key: { id: 'c1' }, set: { kind: 'insight' }, remove: ['old'] },
      { merge: 'Capsule', key: { id: 'c0' } },
      { create: 'Capsule', properties: { id: 'c2', n: 3, tags: ['a', 'b'] } },
      { update: 'Capsule', key: { id: 'c1' }, set: { score: 0.5, seen: true }, remove: ['draft'] },
      { update: 'Capsule', key: { id: 'c1' }, set: { status: 'stored' } },
      { update: 'Capsule', key: { id: 'c1' }, remove: ['kind', 'old'] },
      { delete: 'Capsule', key: { id: 'c0' } },
      { link: 'DERIVED_FROM', from: node('Capsule', 'c2'), to: node('Capsule', 'c1'), properties: { weight: 2 } },
      { link: 'CITES', from: node('Capsule', 'c2'), to: node('Source', 's1') },
      { unlink: 'DERIVED_FROM', from: node('Capsule', 'c2'), to: node('Capsule', 'c1') },
    ];
    expect((await echo.call('mutationsJson', {})).output).toBe(JSON.stringify(expected));
  });

  it('sends a batch made with Mutations.from exactly as it was given, malformed or not', async () => {
    for (const raw of [[{ merge: 'A', key: { id: 'x' } }], 'MATCH (n) DETACH DELETE n', [], { merge: 'A' }, null]) {
      expect((await echo.call('mutationsFrom', raw)).output, JSON.stringify(raw)).toBe(JSON.stringify(raw));
    }
  });

  it('parses and prints any JSON value the way JSON.stringify does (integers, strings, nesting, key order)', async () => {
    const value = fc.letrec((tie) => ({
      json: fc.oneof(
        { depthSize: 'small' },
        fc.constant(null),
        fc.boolean(),
        fc.integer({ min: -1_000_000_000, max: 1_000_000_000 }),
        fc.constantFrom(0.5, -2.25, 3.125, 1e-7, 123.456),
        fc.string({ unit: 'grapheme' }),
        fc.string({ unit: 'binary-ascii' }),
        fc.array(tie('json'), { maxLength: 4 }),
        fc.dictionary(fc.string({ maxLength: 6 }), tie('json'), { maxKeys: 4 }),
      ),
    })).json;
    await fc.assert(
      fc.asyncProperty(value, async (v) => {
        const result = await echo.call('run', v);
        expect(result.output).toEqual(JSON.parse(JSON.stringify(v)));
      }),
      { numRuns: 150 },
    );
  });

  it('refuses invalid JSON instead of guessing', async () => {
    for (const bad of ['{', '[1,]', '{"a":1,}', '"unterminated', 'tru', '01x', '{"a" 1}', '[1] 2', '"\\x"', '"\u0001"']) {
      expect((await echo.call('check', bad)).output, bad).toEqual({ valid: false });
    }
    expect((await echo.call('check', ' {"a":[1,2,{"b":null}],"c":"\\u00e9\\n"} ')).output).toEqual({ valid: true });
  });

  it('refuses nesting deeper than 64 levels without exhausting the call depth', async () => {
    const deep = '['.repeat(200) + ']'.repeat(200);
    expect((await echo.call('check', deep)).output).toEqual({ valid: false });
    await expect(echo.call('run', JSON.parse('['.repeat(100) + ']'.repeat(100)))).rejects.toMatchObject({ code: 'OVERLAY_TRAP' });
  });
});
