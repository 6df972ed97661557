import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_ARGS, ensureChromium } from '../../scripts/browser/chromium.ts';
import { ACTOR_KINDS } from '../../src/inspect/catalog.ts';
import { MACHINES, statechart, toMermaid } from '../../src/inspect/statechart.ts';
import { createKernel, type Kernel } from '../../src/kernel.ts';
import type { NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';
import { buildExamples, PERSONAL_CAPSULE } from '../support/examples.ts';
import { budget } from '../support/wait.ts';

const REPORTS = resolve(import.meta.dirname, '..', '..', '.forge', 'reports');
const TOKEN = 'e2e-token-0123456789abcdef';

/** A validation-phase overlay that holds each run until the test opens the gate. */
function gate(): { overlay: NativeOverlay; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return {
    open,
    overlay: { manifest: { name: 'review-gate', version: '1.0.0', phases: ['validation'] }, exports: { run: async () => (await opened, { ok: true, data: { gated: true } }) } },
  };
}

/** An overlay that always fails: its breaker opens after two calls. */
const fragile: NativeOverlay = { manifest: { name: 'fragile', version: '1.0.0' }, exports: { run: () => ({ ok: false, error: { message: 'always broken' } }) } };

describe('the web inspector in a real headless Chromium', () => {
  let kernel: Kernel;
  let browser: Browser;
  let page: Page;
  let url: string;
  const review = gate();

  beforeAll(async () => {
    const executablePath = await ensureChromium();
    const examples = await buildExamples();
    kernel = await createKernel({ logger: captureLogger().logger, cacheDir: false });
    await kernel.overlays.loadAll(Object.values(examples).map((e) => ({ source: e.wasm, options: { mode: 'relaxed' as const, grant: (e.manifest.capabilities ?? []) as never } })));
    await kernel.overlays.load(review.overlay, { internal: true, trusted: true });
    await kernel.overlays.load(fragile, { internal: true, trusted: true, breaker: { consecutiveFailures: 2, resetTimeoutMs: 600_000 } });
    url = (await kernel.inspector.listen({ port: 0 })).url;
    browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(url);
    await page.waitForSelector('#connection.live');
  }, budget(600_000));

  afterAll(async () => {
    await browser?.close();
    await kernel?.stop();
  });

  const stateOf = (id: string) => page.locator(`#actors [data-actor-id="${id}"] [data-role="state"]`).first();

  it('shows a pipeline advance through its phases, wait at consensus, and complete when approved on the page', async () => {
    const run = kernel.pipelines.start({ capsule: PERSONAL_CAPSULE }, { correlationId: 'corr-e2e' });
    const item = page.locator(`#actors [data-actor-id="${run.id}"]`);
    await item.click();
    await expect.poll(() => stateOf(run.id).textContent()).toBe('validation');
    await expect.poll(() => page.locator('#chart [data-state-id="pipeline.validation"]').getAttribute('class')).toContain('active');

    review.open();
    await expect.poll(() => stateOf(run.id).textContent()).toBe('awaitingDecision.open');
    await expect.poll(() => page.locator('#chart [data-state-id="pipeline.awaitingDecision.open"]').getAttribute('class')).toContain('active');
    await page.click('[data-action="approve"]');
    const result = await run.done;
    expect(result).toMatchObject({ status: 'completed', decision: { approve: true, by: 'inspector' } });
    await expect.poll(() => stateOf(run.id).textContent()).toBe('completed');

    await page.fill('#filter-correlation', 'corr-e2e');
    const log = await page.locator('[data-testid="log-entry"]').allTextContents();
    for (const step of ['ingestion → analysis', 'analysis → validation', 'validation → consensus', 'consensus → awaitingDecision.open on AWAIT_DECISION', 'awaitingDecision.open → execution on DECIDE', 'settlement → completed']) {
      expect(log.some((line) => line.includes(step))).toBe(true);
    }
    expect(log.every((line) => line.includes('corr-e2e'))).toBe(true);
    await page.fill('#filter-correlation', '');
  });

  it('shows a breaker trip open, and resets it from the page', async () => {
    const overlayId = kernel.overlays.get('fragile')!.id;
    for (let i = 0; i < 2; i++) await kernel.overlays.call('fragile', 'run', {});
    await expect.poll(() => stateOf(`${overlayId}:breaker`).textContent()).toBe('open');
    // The statistics panel shows the failing overlay's calls and its success rate, marked low.
    const row = page.locator('#stats tr', { hasText: 'fragile@1.0.0' });
    await expect.poll(() => row.locator('td').allTextContents()).toEqual(expect.arrayContaining(['fragile@1.0.0', '2', '0%']));
    await expect.poll(() => row.locator('td.low').count()).toBe(1);
    await page.locator(`#actors [data-actor-id="${overlayId}:breaker"]`).click();
    await expect.poll(() => page.locator('#chart [data-state-id="breaker.open"]').getAttribute('class')).toContain('active');
    mkdirSync(REPORTS, { recursive: true });
    await page.screenshot({ path: join(REPORTS, 'inspector.png'), fullPage: true });
    await page.click('[data-action="reset-breaker"]');
    await expect.poll(() => stateOf(`${overlayId}:breaker`).textContent()).toBe('closed');
    expect(kernel.overlays.get('fragile')?.breaker).toBe('closed');
  });

  it('prints Mermaid that Mermaid itself parses, for every machine', async () => {
    const blank = await browser.newPage();
    try {
      await blank.addScriptTag({ path: createRequire(import.meta.url).resolve('mermaid/dist/mermaid.min.js') });
      for (const kind of ACTOR_KINDS) {
        const text = toMermaid(statechart(MACHINES[kind]));
        const parsed = await blank.evaluate(async (source) => {
          const m = (globalThis as unknown as { mermaid: { parse(text: string): Promise<{ diagramType: string }> } }).mermaid;
          return (await m.parse(source)).diagramType;
        }, text);
        expect(parsed).toMatch(/^stateDiagram/);
      }
      const broken = await blank.evaluate(async () => {
        const m = (globalThis as unknown as { mermaid: { parse(text: string): Promise<unknown> } }).mermaid;
        return m.parse('stateDiagram-v2\n  a --> --> b').then(() => 'parsed', () => 'refused');
      });
      expect(broken).toBe('refused');
    } finally {
      await blank.close();
    }
  });

  it('needs a token beyond loopback, and refuses API calls and controls without it', async () => {
    await kernel.inspector.close();
    await expect(kernel.inspector.listen({ port: 0, host: '0.0.0.0' })).rejects.toMatchObject({ code: 'INSPECTOR_TOKEN_REQUIRED' });
    await expect(kernel.inspector.listen({ port: 0, token: 'short' })).rejects.toMatchObject({ code: 'INVALID_INSPECTOR_OPTIONS' });
    const handle = await kernel.inspector.listen({ port: 0, host: '0.0.0.0', token: TOKEN });
    const base = `http://127.0.0.1:${handle.port}`;
    const control = (headers: Record<string, string>) =>
      fetch(`${base}/api/control`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forge-inspector': '1', ...headers }, body: JSON.stringify({ action: 'deactivate', target: 'lineage-tracker' }) });
    expect((await control({})).status).toBe(401);
    expect((await control({ authorization: 'Bearer wrong-token-0123456789' })).status).toBe(401);
    expect(kernel.overlays.get('lineage-tracker')?.state).toBe('active');
    expect((await fetch(`${base}/api/actors`)).status).toBe(401);
    const allowed = await control({ authorization: `Bearer ${TOKEN}` });
    expect(allowed.status).toBe(200);
    expect(kernel.overlays.get('lineage-tracker')?.state).toBe('inactive');
    const bad = await fetch(`${base}/api/control`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'x-forge-inspector': '1' }, body: '{"action":"explode","target":"x"}' });
    expect(bad.status).toBe(400);
    const form = await fetch(`${base}/api/control`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain' }, body: '{"action":"activate","target":"lineage-tracker"}' });
    expect(form.status).toBe(415);

    const tokenPage = await browser.newPage();
    try {
      await tokenPage.goto(handle.url);
      await tokenPage.waitForSelector('#connection.live');
      await expect.poll(() => tokenPage.locator('[data-kind="overlay"]').count()).toBeGreaterThan(0);
    } finally {
      await tokenPage.close();
    }
  });
});
