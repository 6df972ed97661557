import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readmeBlock } from '../support/readme.ts';
import { consumerProject, node22, NODE_22, PACKAGE_BUDGET_MS, packTarball, pathWith, ROOT, run, textViews, type Ran } from '../support/package.ts';

/** The versions this checkout's tests use, so the consumer's type check runs the same compiler (from npm's cache). */
const devVersion = (name: string) => (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;

const expectOk = (result: Ran) => expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);

describe('the packed package, installed into an empty project', () => {
  let project: string;
  /** A metering cache of its own: every overlay load starts cold, as on a consumer's first run. */
  let cacheDir: string;
  const env = (nodeBin?: string) => ({ ...pathWith(nodeBin), FORGE_CACHE_DIR: cacheDir });

  const cleanups: (() => void)[] = [];

  beforeAll(async () => {
    const packed = await packTarball();
    cleanups.push(packed.cleanup);
    project = await consumerProject(packed.tarball, [`typescript@${devVersion('typescript')}`, `@types/node@${devVersion('@types/node')}`]);
    cacheDir = mkdtempSync(join(tmpdir(), 'forge-consumer-cache-'));
    cleanups.push(() => rmSync(project, { recursive: true, force: true }), () => rmSync(cacheDir, { recursive: true, force: true }));
  }, PACKAGE_BUDGET_MS);

  afterAll(() => {
    for (const cleanup of cleanups) cleanup();
  });

  it('ships the library, the CLI, the SDK, the asconfig and the examples prebuilt, and no sources, tests or maps', () => {
    const pkg = join(project, 'node_modules', 'forge-kernel');
    for (const file of ['dist/src/index.js', 'dist/src/index.d.ts', 'bin/forge-kernel.js', 'asconfig.json', 'overlays-as/sdk/index.ts', 'overlays-as/examples/ingestion-normalizer.ts', 'dist/examples/ingestion-normalizer.wasm', 'dist/examples/ingestion-normalizer.manifest.json']) {
      expect(existsSync(join(pkg, file)), file).toBe(true);
    }
    for (const absent of ['src', 'test', 'bench', 'scripts', 'overlays-as/fixtures']) expect(existsSync(join(pkg, absent)), absent).toBe(false);
    const files = readdirSync(join(pkg, 'dist', 'src'), { recursive: true }).map(String);
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    for (const file of readdirSync(join(pkg, 'dist', 'examples'))) {
      for (const text of textViews(readFileSync(join(pkg, 'dist', 'examples', file)))) for (const path of [ROOT, tmpdir()]) expect(text.includes(path), `${file} holds ${path}`).toBe(false);
    }
  });

  it('runs the README embedding example as written, from the prebuilt examples (nothing compiled)', async () => {
    writeFileSync(join(project, 'embed.ts'), readmeBlock('embed.ts'));
    const result = await run(process.execPath, ['embed.ts'], { cwd: project, env: env() });
    expectOk(result);
    expect(result.stdout).toMatch(/^completed ops@example\.com \{/);
    expect(result.stdout).toContain("'lineage-tracker':");
    expect(existsSync(join(cacheDir, 'examples')), 'the examples were compiled instead of loaded prebuilt').toBe(false);
  }, PACKAGE_BUDGET_MS);

  it(`runs the README embedding example on Node ${NODE_22}, the oldest Node the package supports`, async () => {
    writeFileSync(join(project, 'embed.ts'), readmeBlock('embed.ts'));
    const bin = await node22();
    const version = await run(join(bin, 'node'), ['--version'], { cwd: project, env: env(bin) });
    expect(version.stdout.trim()).toBe(`v${NODE_22}`);
    const result = await run(join(bin, 'node'), ['embed.ts'], { cwd: project, env: env(bin) });
    expectOk(result);
    expect(result.stdout).toMatch(/^completed ops@example\.com \{/m);
    // Node 22 has no JSPI: the overlay with an async host function falls back to strict mode, and says so.
    expect(result.stdout).toContain('this Node lacks it, so the overlay runs in strict mode');
  }, PACKAGE_BUDGET_MS);

  it('answers npx forge-kernel --help', async () => {
    const result = await run('npx', ['forge-kernel', '--help'], { cwd: project, env: env() });
    expectOk(result);
    expect(result.stdout).toContain('init');
  }, PACKAGE_BUDGET_MS);

  it('scaffolds an overlay with npx forge-kernel init whose npm test passes as generated', async () => {
    expectOk(await run('npx', ['forge-kernel', 'init', 'scorer'], { cwd: project, env: env() }));
    const scaffold = join(project, 'scorer');
    for (const file of ['scorer.ts', 'scorer.test.mjs', 'package.json']) expect(readFileSync(join(scaffold, file), 'utf8')).not.toMatch(/dist\/|node_modules/);
    const result = await run('npm', ['test'], { cwd: scaffold, env: env() });
    expectOk(result);
    expect(result.stdout).toMatch(/pass 3/);
    expect(result.stdout).toMatch(/fail 0/);
  }, PACKAGE_BUDGET_MS);

  it('scaffolds outside the project a package that links the installed kernel, and its test passes after npm install', async () => {
    const elsewhere = mkdtempSync(join(tmpdir(), 'forge-elsewhere '));
    cleanups.push(() => rmSync(elsewhere, { recursive: true, force: true }));
    const init = await run('npx', ['forge-kernel', 'init', 'far-scorer', '--dir', elsewhere], { cwd: project, env: env() });
    expectOk(init);
    expect(init.stdout).toMatch(/Next: cd '.*forge-elsewhere .*far-scorer' && npm install && npm test/);
    const scaffold = join(elsewhere, 'far-scorer');
    expectOk(await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: scaffold, env: env() }));
    const result = await run('npm', ['test'], { cwd: scaffold, env: env() });
    expectOk(result);
    expect(result.stdout).toMatch(/pass 3/);
  }, PACKAGE_BUDGET_MS);

  it('builds the shipped examples with npx forge-kernel build to the same bytes as the prebuilt ones', async () => {
    const result = await run('npx', ['forge-kernel', 'build', '--out', 'built', '--json'], { cwd: project, env: env() });
    expectOk(result);
    const results = JSON.parse(result.stdout) as { name: string; status: string; sha256: string }[];
    expect(results).toHaveLength(7);
    for (const built of results) {
      expect(built.status).toBe('built');
      const shipped = JSON.parse(readFileSync(join(project, 'node_modules', 'forge-kernel', 'dist', 'examples', `${built.name}.manifest.json`), 'utf8')) as { sha256: string };
      expect(built.sha256, built.name).toBe(shipped.sha256);
    }
  }, PACKAGE_BUDGET_MS);

  it('runs npx forge-kernel demo --capsules 20 --json', async () => {
    const result = await run('npx', ['forge-kernel', 'demo', '--capsules', '20', '--json'], { cwd: project, env: env() });
    expectOk(result);
    const summary = JSON.parse(result.stdout) as { ok: boolean; capsules: number; runs: { completed: number; failed: number } };
    expect(summary).toMatchObject({ ok: true, capsules: 20 });
    expect(summary.runs.completed + summary.runs.failed).toBe(20);
  }, PACKAGE_BUDGET_MS);

  it('type-checks a consumer file against the public types with tsc --strict, moduleResolution nodenext', async () => {
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2023', noEmit: true, types: ['node'], noUncheckedIndexedAccess: true }, files: ['consumer.ts'] }),
    );
    writeFileSync(
      join(project, 'consumer.ts'),
      `import { buildExampleOverlays, createKernel, isForgeError, loadWasmOverlay, parseManifest, PHASES, type CallResult, type Kernel, type OverlayManifest, type Phase, type RunResult } from 'forge-kernel';
import { readFile } from 'node:fs/promises';

const kernel: Kernel = await createKernel({ logger: { level: 'silent' } });
const dir: string = await buildExampleOverlays();
await kernel.overlays.loadDirectory(dir, { grant: 'declared', mode: 'strict' });
const result: RunResult = await kernel.pipelines.start({ capsule: { id: 'c1', kind: 'note', content: 'hi', author: 'ada', trust: 0.5 } }).done;
const first: Phase = PHASES[0];
const manifest: OverlayManifest = parseManifest(JSON.parse(await readFile(dir + '/ingestion-normalizer.manifest.json', 'utf8')) as unknown);
const overlay = await loadWasmOverlay(await readFile(dir + '/ingestion-normalizer.wasm'), { manifest, grant: ['LOGGING'] });
try {
  const call: CallResult = await overlay.call('run', { capsule: {} });
  console.log(result.status, first, call.fuelUsed);
} catch (error) {
  if (isForgeError(error)) console.log(error.code);
}
await overlay.close();
await kernel.stop();
`,
    );
    const result = await run(join(project, 'node_modules', '.bin', 'tsc'), ['-p', '.'], { cwd: project, env: env() });
    expectOk(result);
  }, PACKAGE_BUDGET_MS);
});
