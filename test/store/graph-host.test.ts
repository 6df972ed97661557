import type { Driver } from 'neo4j-driver';
import { describe, expect, it } from 'vitest';
import { graphHostFunctions } from '../../src/store/graph-host.ts';
import type { HostCallContext } from '../../src/wasm/host-functions.ts';
import { codeOf } from '../support/errors.ts';

describe('graph host functions, before Neo4j is asked', () => {
  it('refuse db_read parameters nested deeper than the kernel takes with a typed error, not a stack overflow', async () => {
    // Refused before the driver is touched: a driver that would throw on any use proves it.
    const driver = new Proxy({}, { get: () => { throw new Error('the driver was used'); } }) as Driver;
    const read = graphHostFunctions({ driver }).find((f) => f.name === 'db_read')!;
    const context = { signal: new AbortController().signal } as HostCallContext;
    const deep = `{"p":${'['.repeat(32_768)}${']'.repeat(32_768)}}`;
    expect(await codeOf(() => read.invoke(context, ['RETURN $p', deep]))).toBe('GRAPH_QUERY_FAILED');
  });
});
