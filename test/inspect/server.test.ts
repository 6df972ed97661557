import { request } from 'node:http';
import { connect, createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import { captureLogger } from '../support/engine.ts';

describe('kernel.inspector', () => {
  let kernel: Kernel | undefined;
  afterEach(async () => {
    await kernel?.stop();
    kernel = undefined;
  });
  const start = async (): Promise<Kernel> => (kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false }));

  it.each([
    ['a negative port', { port: -1 }, 'INVALID_INSPECTOR_OPTIONS'],
    ['a port too large', { port: 70_000 }, 'INVALID_INSPECTOR_OPTIONS'],
    ['an empty host', { host: '' }, 'INVALID_INSPECTOR_OPTIONS'],
    ['a short token', { port: 0, token: 'abc' }, 'INVALID_INSPECTOR_OPTIONS'],
    ['a public host without a token', { port: 0, host: '0.0.0.0' }, 'INSPECTOR_TOKEN_REQUIRED'],
    ['no options object', null, 'INVALID_INSPECTOR_OPTIONS'],
  ])('refuses %s', async (_name, options, code) => {
    const k = await start();
    await expect(k.inspector.listen(options as never)).rejects.toMatchObject({ code });
    expect(k.inspector.handle).toBeUndefined();
  });

  it('reports a taken port as INSPECTOR_PORT_IN_USE, and a second listen as INSPECTOR_RUNNING', async () => {
    const k = await start();
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as { port: number }).port;
    try {
      await expect(k.inspector.listen({ port })).rejects.toMatchObject({ code: 'INSPECTOR_PORT_IN_USE' });
    } finally {
      blocker.close();
    }
    await k.inspector.listen({ port: 0 });
    await expect(k.inspector.listen({ port: 0 })).rejects.toMatchObject({ code: 'INSPECTOR_RUNNING' });
  });

  it('serves the page, actors, statecharts with a layout, and 404s for unknown paths and machines', async () => {
    const k = await start();
    const { port, url } = await k.inspector.listen({ port: 0 });
    expect(url).toBe(`http://127.0.0.1:${port}/`);
    const page = await fetch(url);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(await page.text()).toContain('Forge Kernel inspector');
    const chart = (await (await fetch(`${url}api/statecharts/pipeline`)).json()) as { chart: { states: unknown[] }; layout: { states: { x: number }[]; width: number } };
    expect(chart.chart.states.length).toBe(chart.layout.states.length);
    expect(chart.layout.width).toBeGreaterThan(0);
    expect((await fetch(`${url}api/statecharts/toaster`)).status).toBe(404);
    expect((await fetch(`${url}nothing-here`)).status).toBe(404);
    expect((await fetch(`${url}api/actors`)).status).toBe(200);
    const { members } = (await (await fetch(`${url}api/cluster`)).json()) as { members: { self: boolean; transport: string }[] };
    expect(members).toMatchObject([{ self: true, transport: 'memory' }]);
  });

  it('serves call statistics per overlay and per phase at /api/stats', async () => {
    const k = await start();
    const { url } = await k.inspector.listen({ port: 0 });
    await k.overlays.load({ manifest: { name: 'scorer', version: '1.2.0', phases: ['analysis'] }, exports: { run: (input) => ((input as { fail?: boolean }).fail === true ? { ok: false, error: { message: 'no' } } : { ok: true }) } }, { internal: true, trusted: true });
    await k.pipelines.start({ capsule: { id: 'c1' } }).done;
    await k.overlays.call('scorer', 'run', { fail: true });
    const stats = (await (await fetch(`${url}api/stats`)).json()) as { overlays: Record<string, unknown>[]; phases: Record<string, { runs: number; completed: number }> };
    expect(stats.overlays).toMatchObject([{ name: 'scorer', version: '1.2.0', calls: 2, ok: 1, faults: 1, successRate: 0.5, durationMs: { p50: expect.any(Number) as number } }]);
    expect(stats.phases.analysis).toMatchObject({ runs: 1, completed: 1 });
  });

  it('streams records as Server-Sent Events, resuming after the last one a client saw', async () => {
    const k = await start();
    const { url } = await k.inspector.listen({ port: 0 });
    await k.overlays.load({ manifest: { name: 'echo', version: '1.0.0' }, exports: { run: () => ({ ok: true }) } }, { internal: true, trusted: true });
    const read = async (headers: Record<string, string>): Promise<number[]> => {
      const controller = new AbortController();
      const res = await fetch(`${url}api/events`, { headers, signal: controller.signal });
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes('\n\n') || (text.match(/^id: /gm)?.length ?? 0) < 1) text += new TextDecoder().decode((await reader.read()).value);
      await new Promise((r) => setTimeout(r, 50));
      controller.abort();
      return [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    };
    const all = await read({});
    expect(all.length).toBeGreaterThanOrEqual(3);
    const rest = await read({ 'last-event-id': String(all[0]) });
    expect(rest[0]).toBe(all[1]);
  });

  it('closes at once with a request still in flight on a connection (a page reconnecting its event stream)', async () => {
    const k = await start();
    const { port } = await k.inspector.listen({ port: 0 });
    // Half a request: Node counts the connection as busy until the headers end, or its 60 s header timeout.
    const socket = connect(port, '127.0.0.1');
    // The server cuts the connection: a reset is the expected end here.
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write('GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    await new Promise((resolve) => setImmediate(resolve));
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await k.inspector.close();
    await ended;
    expect(k.inspector.handle).toBeUndefined();
  });

  it('refuses malformed control requests with a typed error and changes nothing', async () => {
    const k = await start();
    await k.overlays.load({ manifest: { name: 'echo', version: '1.0.0' }, exports: { run: () => ({ ok: true }) } }, { internal: true, trusted: true });
    const { url } = await k.inspector.listen({ port: 0 });
    const post = (body: string, headers: Record<string, string> = { 'content-type': 'application/json', 'x-forge-inspector': '1' }) => fetch(`${url}api/control`, { method: 'POST', headers, body });
    const cases: [string, Record<string, string> | undefined, number, string][] = [
      ['not json', undefined, 400, 'INVALID_CONTROL'],
      ['{"action":"approve"}', undefined, 400, 'INVALID_CONTROL'],
      ['{"action":"launch","target":"echo"}', undefined, 400, 'INVALID_CONTROL'],
      ['{"action":"deactivate","target":"echo"}', { 'content-type': 'application/json' }, 415, 'INVALID_CONTROL'],
      ['{"action":"approve","target":"run_missing"}', undefined, 404, 'RUN_NOT_FOUND'],
      ['{"action":"reset-breaker","target":"ghost"}', undefined, 404, 'OVERLAY_NOT_FOUND'],
    ];
    for (const [body, headers, status, code] of cases) {
      const res = await post(body, headers);
      expect([body, res.status]).toEqual([body, status]);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
    }
    expect(k.overlays.get('echo')?.state).toBe('active');
    // A page on another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused by its Host header.
    const status = await new Promise<number>((resolve, reject) => {
      request(url, { headers: { host: 'attacker.example' } }, (res) => resolve(res.statusCode ?? 0)).on('error', reject).end();
    });
    expect(status).toBe(421);
  });

  it('answers only requests that name it exactly (no DNS rebinding), and controls only from its own page', async () => {
    const k = await start();
    await k.overlays.load({ manifest: { name: 'echo', version: '1.0.0' }, exports: { run: () => ({ ok: true }) } }, { internal: true, trusted: true });
    const { port } = await k.inspector.listen({ port: 0 });
    const send = (headers: Record<string, string>, body?: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: body === undefined ? '/api/actors' : '/api/control', method: body === undefined ? 'GET' : 'POST', headers }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(body);
      });
    const control = JSON.stringify({ action: 'force-open', target: 'echo' });
    const json = { 'content-type': 'application/json', 'x-forge-inspector': '1' };
    for (const host of [`127.0.0.1.evil.example:${port}`, `127.0.0.2:${port}`, `localhost.evil.example:${port}`, `127.0.0.1:${port + 1}`, '127.0.0.1', `[::1]:${port}x`]) {
      expect([host, await send({ host })]).toEqual([host, 421]);
      expect([host, await send({ ...json, host }, control)]).toEqual([host, 421]);
    }
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `LOCALHOST:${port}`]) expect([host, await send({ host })]).toEqual([host, 200]);
    expect(await send({ ...json, host: `127.0.0.1:${port}`, origin: 'http://evil.example' }, control)).toBe(403);
    expect(await send({ ...json, host: `127.0.0.1:${port}`, origin: `http://127.0.0.1.evil.example:${port}` }, control)).toBe(403);
    expect(k.overlays.get('echo')?.breaker).toBe('closed');
    expect(await send({ ...json, host: `localhost:${port}`, origin: `http://localhost:${port}` }, control)).toBe(200);
    expect(k.overlays.get('echo')?.breaker).toBe('forcedOpen');
  });

  it('beyond loopback (with its token), takes controls from its own page by whatever name the network gives it', async () => {
    const k = await start();
    await k.overlays.load({ manifest: { name: 'echo', version: '1.0.0' }, exports: { run: () => ({ ok: true }) } }, { internal: true, trusted: true });
    const token = 'a-long-enough-token-for-tests';
    const { port } = await k.inspector.listen({ host: '0.0.0.0', port: 0, token });
    const send = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/api/control', method: 'POST', headers: { 'content-type': 'application/json', 'x-forge-inspector': '1', authorization: `Bearer ${token}`, ...headers } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(JSON.stringify({ action: 'force-open', target: 'echo' }));
      });
    expect(await send({ host: `192.168.1.20:${port}`, origin: 'http://evil.example' })).toBe(403);
    expect(await send({ host: `192.168.1.20:${port}`, origin: `http://192.168.1.21:${port}` })).toBe(403);
    expect(k.overlays.get('echo')?.breaker).toBe('closed');
    expect(await send({ host: `192.168.1.20:${port}`, origin: `http://192.168.1.20:${port}` })).toBe(200);
    expect(k.overlays.get('echo')?.breaker).toBe('forcedOpen');
  });
});
