import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ForgeError, isForgeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { InspectionAdapter, InspectionRecord } from './adapter.ts';
import { stateName } from './adapter.ts';
import { ACTOR_KINDS, type ActorCatalog, type ActorKind, type CatalogEntry } from './catalog.ts';
import { layoutStatechart, type StatechartLayout } from './layout.ts';
import { INSPECTOR_PAGE } from './page.ts';
import { activeStateIds, MACHINES, statechart, type Statechart } from './statechart.ts';

/** The inspector's port unless told otherwise. */
export const DEFAULT_INSPECTOR_PORT = 4790;
/** Largest control request body accepted (bytes). */
const MAX_BODY = 16 * 1024;
/** SSE comment sent this often (ms) so proxies and browsers keep the stream open. */
const KEEPALIVE_MS = 15_000;

export interface InspectorListenOptions {
  /** Default 4790; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. Any other address requires a token. */
  host?: string;
  /** Required of every API request and control action when set (Bearer header, or `?token=` for the page). */
  token?: string;
}

/** What operators may do from the inspector: the kernel wires these to pipelines and overlays. */
export interface InspectorControls {
  decide(runId: string, decision: 'approve' | 'reject', by: string, reason?: string): Promise<unknown>;
  resume(runId: string): Promise<unknown>;
  cancel(runId: string): Promise<unknown>;
  resetBreaker(overlay: string): unknown;
  forceOpenBreaker(overlay: string): unknown;
  activate(overlay: string): unknown;
  deactivate(overlay: string): unknown;
}

export const CONTROL_ACTIONS = ['approve', 'reject', 'resume', 'cancel', 'reset-breaker', 'force-open', 'activate', 'deactivate'] as const;
export type ControlAction = (typeof CONTROL_ACTIONS)[number];

/** The inspector cannot start as asked (the caller's mistake or the machine's state). */
export class InspectorError extends ForgeError {}

/** A running inspector: its URL (with the token, when there is one) and how to stop it. */
export interface InspectorHandle {
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Whether an address to listen on is this machine only (any 127.x.y.z is). */
function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The origins a page of this inspector has: how a browser may name it (by loopback name, or its own host) and port. */
function ownOrigins(host: string, port: number): Set<string> {
  const names = isLoopback(host) ? ['127.0.0.1', 'localhost', '[::1]', ...(LOOPBACK.has(host) || host.includes(':') ? [] : [host])] : [host.includes(':') ? `[${host}]` : host];
  return new Set(names.map((name) => `http://${name}:${port}`));
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** An actor as the page lists it. */
function describeEntry(entry: CatalogEntry): Record<string, unknown> {
  const snapshot = entry.actor.getSnapshot() as { value?: unknown; status?: string };
  return {
    id: entry.id,
    kind: entry.kind,
    label: entry.label,
    state: stateName(snapshot.value),
    activeStates: activeStateIds(MACHINES[entry.kind].id, snapshot.value),
    status: snapshot.status ?? 'active',
    correlationId: entry.correlationId ?? null,
    details: entry.details(),
  };
}

/**
 * The live web inspector: one page (no hosted service, no CDN), a JSON API over the kernel's actor catalog, a
 * Server-Sent Events stream of inspection records, and operator controls. Loopback by default; elsewhere only with
 * a token, which every API request then carries. Control requests must be JSON with the `X-Forge-Inspector`
 * header, which a cross-site form cannot send without a CORS preflight the server never grants.
 */
export class Inspector {
  readonly #catalog: ActorCatalog;
  readonly #adapter: InspectionAdapter;
  readonly #controls: InspectorControls;
  readonly #logger: Logger;
  readonly #charts = new Map<ActorKind, Promise<{ chart: Statechart; layout: StatechartLayout; machine: unknown }>>();
  #handle: InspectorHandle | undefined;
  #enabledAdapter = false;
  readonly #streams = new Set<ServerResponse>();

  readonly #cluster: () => Promise<unknown[]>;
  readonly #stats: () => unknown;

  constructor(deps: { catalog: ActorCatalog; adapter: InspectionAdapter; controls: InspectorControls; logger: Logger; cluster?: () => Promise<unknown[]>; stats?: () => unknown }) {
    this.#cluster = deps.cluster ?? (() => Promise.resolve([]));
    this.#stats = deps.stats ?? (() => ({ overlays: [], phases: {} }));
    this.#catalog = deps.catalog;
    this.#adapter = deps.adapter;
    this.#controls = deps.controls;
    this.#logger = deps.logger;
  }

  /** Turns inspection on without serving the page (records reach `subscribe` listeners). */
  enable(): void {
    this.#adapter.enable();
  }

  disable(): void {
    this.#adapter.disable();
  }

  /** Every inspection record from now on (while inspection is on); returns the function that stops them. */
  subscribe(listener: (record: InspectionRecord) => void): () => void {
    return this.#adapter.subscribe(listener);
  }

  /** The buffered inspection records, oldest first. */
  records(): InspectionRecord[] {
    return this.#adapter.recent();
  }

  /** The running inspector, if `listen` was called. */
  get handle(): InspectorHandle | undefined {
    return this.#handle;
  }

  /** Serves the inspector; turns inspection on while it runs. */
  async listen(options: InspectorListenOptions = {}): Promise<InspectorHandle> {
    if (typeof options !== 'object' || options === null) throw new InspectorError('INVALID_INSPECTOR_OPTIONS', 'inspector.listen takes { port?, host?, token? }.');
    if (this.#handle !== undefined) throw new InspectorError('INSPECTOR_RUNNING', `The inspector already listens on ${this.#handle.url}: close it first.`);
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? DEFAULT_INSPECTOR_PORT;
    if (typeof host !== 'string' || host === '') throw new InspectorError('INVALID_INSPECTOR_OPTIONS', 'host must be an address such as 127.0.0.1.');
    if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new InspectorError('INVALID_INSPECTOR_OPTIONS', `port must be 0–65535, got ${String(port)}.`);
    if (options.token !== undefined && (typeof options.token !== 'string' || options.token.length < 16)) {
      throw new InspectorError('INVALID_INSPECTOR_OPTIONS', 'token must be a string of at least 16 characters (e.g. from crypto.randomUUID()).');
    }
    if (!isLoopback(host) && options.token === undefined) {
      throw new InspectorError('INSPECTOR_TOKEN_REQUIRED', `Serving the inspector on ${host} (beyond this machine) needs a token: listen({ host, token }). Controls can pause, approve and break things.`);
    }
    const token = options.token;
    let origins = new Set<string>();
    const server = createServer((req, res) => {
      this.#route(req, res, { token, loopback: isLoopback(host), origins }).catch((error: unknown) => this.#fail(res, error));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        reject(error.code === 'EADDRINUSE' ? new InspectorError('INSPECTOR_PORT_IN_USE', `Port ${port} on ${host} is taken: pass another port (0 picks a free one).`, { details: { port, host } }) : error);
      });
      server.listen(port, host, () => resolve());
    });
    if (!this.#adapter.enabled) {
      this.#adapter.enable();
      this.#enabledAdapter = true;
    }
    const unsubscribe = this.#adapter.subscribe((record) => this.#broadcast(record));
    const keepalive = setInterval(() => {
      for (const stream of this.#streams) stream.write(': keepalive\n\n');
    }, KEEPALIVE_MS);
    keepalive.unref();
    const actual = (server.address() as AddressInfo).port;
    origins = ownOrigins(host, actual);
    const shownHost = host.includes(':') ? `[${host}]` : host;
    const url = `http://${shownHost === '0.0.0.0' ? '127.0.0.1' : shownHost}:${actual}/${token === undefined ? '' : `?token=${encodeURIComponent(token)}`}`;
    this.#handle = {
      url,
      host,
      port: actual,
      close: async () => {
        unsubscribe();
        clearInterval(keepalive);
        for (const stream of this.#streams) stream.end();
        this.#streams.clear();
        if (this.#enabledAdapter) this.#adapter.disable();
        this.#enabledAdapter = false;
        this.#handle = undefined;
        // Every connection is cut now: one with a request in flight (a page reconnecting its event stream over a
        // kept-alive socket) would otherwise hold close() until Node's 60 s header timeout.
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
      },
    };
    this.#logger.info({ url: token === undefined ? url : url.replace(/token=[^&]+/, 'token=…') }, 'inspector listening');
    return this.#handle;
  }

  async close(): Promise<void> {
    await this.#handle?.close();
  }

  async #route(req: IncomingMessage, res: ServerResponse, security: { token: string | undefined; loopback: boolean; origins: ReadonlySet<string> }): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://inspector');
    if (security.loopback && !security.origins.has(`http://${(req.headers.host ?? '').toLowerCase()}`)) {
      return this.#json(res, 421, { error: { code: 'MISDIRECTED', message: 'The Host header does not name this inspector (127.0.0.1, localhost or [::1], with its port).' } });
    }
    if (req.method === 'GET' && (url.pathname === '/' || url.pathname === '/index.html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:" });
      res.end(INSPECTOR_PAGE);
      return;
    }
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (!url.pathname.startsWith('/api/')) return this.#json(res, 404, { error: { code: 'NOT_FOUND', message: `No page at ${url.pathname}.` } });
    if (security.token !== undefined) {
      const header = req.headers.authorization ?? '';
      const given = header.startsWith('Bearer ') ? header.slice(7) : (url.searchParams.get('token') ?? '');
      if (!sameSecret(given, security.token)) return this.#json(res, 401, { error: { code: 'UNAUTHORIZED', message: 'This inspector needs its token (the URL it printed carries it).' } });
    }
    if (req.method === 'GET' && url.pathname === '/api/actors') {
      return this.#json(res, 200, { live: this.#catalog.live().map(describeEntry), ended: this.#catalog.ended().map(describeEntry) });
    }
    if (req.method === 'GET' && url.pathname === '/api/cluster') return this.#json(res, 200, { members: await this.#cluster() });
    if (req.method === 'GET' && url.pathname === '/api/stats') return this.#json(res, 200, this.#stats());
    const chart = /^\/api\/statecharts\/([a-z]+)$/.exec(url.pathname);
    if (req.method === 'GET' && chart !== null) {
      const kind = chart[1] as ActorKind;
      if (!ACTOR_KINDS.includes(kind)) return this.#json(res, 404, { error: { code: 'UNKNOWN_MACHINE', message: `No machine "${kind}": one of ${ACTOR_KINDS.join(', ')}.` } });
      return this.#json(res, 200, { kind, ...(await this.#chart(kind)) });
    }
    if (req.method === 'GET' && url.pathname === '/api/events') {
      // A reconnecting EventSource names the last record it saw in Last-Event-ID.
      const after = Math.max(Number(url.searchParams.get('after') ?? 0) || 0, Number(req.headers['last-event-id'] ?? 0) || 0);
      return this.#stream(req, res, after);
    }
    if (req.method === 'POST' && url.pathname === '/api/control') {
      // A browser names the page that sent a state-changing request: only this inspector's own pages may.
      // Beyond loopback (a token is required there) the page is reached by whatever name the network gives this host:
      // a page of the same host and port as the request is this inspector's own.
      const origin = req.headers.origin;
      const sameHost = security.token !== undefined && origin !== undefined && origin.toLowerCase() === `http://${(req.headers.host ?? '').toLowerCase()}`;
      if (origin !== undefined && !sameHost && !security.origins.has(origin.toLowerCase())) return this.#json(res, 403, { error: { code: 'FORBIDDEN_ORIGIN', message: `Controls are accepted only from this inspector's own page, not from ${origin}.` } });
      return this.#control(req, res);
    }
    return this.#json(res, 404, { error: { code: 'NOT_FOUND', message: `No API ${req.method ?? ''} ${url.pathname}.` } });
  }

  #chart(kind: ActorKind): Promise<{ chart: Statechart; layout: StatechartLayout; machine: unknown }> {
    let cached = this.#charts.get(kind);
    if (cached === undefined) {
      const chart = statechart(MACHINES[kind]);
      cached = layoutStatechart(chart).then((layout) => ({ chart, layout, machine: MACHINES[kind].toJSON() }));
      this.#charts.set(kind, cached);
    }
    return cached;
  }

  #stream(req: IncomingMessage, res: ServerResponse, after: number): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    for (const record of this.#adapter.recent(after)) res.write(`id: ${record.seq}\ndata: ${JSON.stringify(record)}\n\n`);
    this.#streams.add(res);
    req.on('close', () => this.#streams.delete(res));
  }

  #broadcast(record: InspectionRecord): void {
    if (this.#streams.size === 0) return;
    const frame = `id: ${record.seq}\ndata: ${JSON.stringify(record)}\n\n`;
    for (const stream of this.#streams) stream.write(frame);
  }

  async #control(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!(req.headers['content-type'] ?? '').startsWith('application/json') || req.headers['x-forge-inspector'] === undefined) {
      return this.#json(res, 415, { error: { code: 'INVALID_CONTROL', message: 'Control requests are JSON with an X-Forge-Inspector header.' } });
    }
    let raw = '';
    for await (const chunk of req) {
      raw += (chunk as Buffer).toString();
      if (raw.length > MAX_BODY) return this.#json(res, 413, { error: { code: 'INVALID_CONTROL', message: 'The control request is too large.' } });
    }
    let body: { action?: unknown; target?: unknown; by?: unknown; reason?: unknown };
    try {
      body = JSON.parse(raw) as typeof body;
    } catch {
      return this.#json(res, 400, { error: { code: 'INVALID_CONTROL', message: 'The control request is not JSON.' } });
    }
    if (typeof body !== 'object' || body === null || !CONTROL_ACTIONS.includes(body.action as ControlAction) || typeof body.target !== 'string' || body.target === '') {
      return this.#json(res, 400, { error: { code: 'INVALID_CONTROL', message: `A control is { action: ${CONTROL_ACTIONS.join(' | ')}, target: '<run or overlay id>', by?, reason? }.` } });
    }
    const by = typeof body.by === 'string' && body.by.trim() !== '' ? body.by : 'inspector';
    const reason = typeof body.reason === 'string' ? body.reason : undefined;
    const target = body.target;
    const action = body.action as ControlAction;
    const c = this.#controls;
    const run: Record<ControlAction, () => unknown> = {
      approve: () => c.decide(target, 'approve', by, reason),
      reject: () => c.decide(target, 'reject', by, reason),
      resume: () => c.resume(target),
      cancel: () => c.cancel(target),
      'reset-breaker': () => c.resetBreaker(target),
      'force-open': () => c.forceOpenBreaker(target),
      activate: () => c.activate(target),
      deactivate: () => c.deactivate(target),
    };
    await run[action]();
    this.#logger.info({ action, target, by }, 'inspector control');
    return this.#json(res, 200, { ok: true, action, target });
  }

  #fail(res: ServerResponse, error: unknown): void {
    const code = isForgeError(error) ? error.code : 'UNEXPECTED';
    const status = code.endsWith('_NOT_FOUND') ? 404 : code.startsWith('INVALID_') ? 400 : isForgeError(error) ? 409 : 500;
    if (status === 500) this.#logger.error({ err: error }, 'inspector request failed');
    if (!res.headersSent) this.#json(res, status, { error: { code, message: error instanceof Error ? error.message : String(error) } });
    else res.end();
  }

  #json(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  }
}
