import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { SDK_IMPORT } from '../build/asc.ts';
import { PACKAGE_ROOT, VERSION } from '../package-root.ts';
import type { CliIO, Command } from './command.ts';

/** The package's name, as the scaffold depends on it and imports it. */
const PACKAGE = 'forge-kernel';

const HELP = `Usage: forge-kernel init <name> [--dir parent]

Scaffolds a new AssemblyScript overlay in <parent>/<name>/ (default parent: the current folder):
  <name>.ts         the overlay, with its manifest declared at the top
  <name>.test.mjs   a test (node --test) that builds it and calls it through the sandbox
  package.json      "npm test" runs the test, "npm run build" builds the overlay (Node >= 22)
  README.md         how to build, test, call and load it

<name> is lower-case kebab-case, e.g. capsule-scorer. The scaffold finds forge-kernel the way Node does: installed
in it or in a folder above it. Where Node would not find it (made from a checkout of forge-kernel, or outside the
project that has it), its package.json links the forge-kernel that made it: npm install there first.`;

const NAME = /^[a-z][a-z0-9-]{0,62}[a-z0-9]$/;

/**
 * True when Node finds a forge-kernel package from `dir`: in a `node_modules` folder of it or of a folder above it
 * (the package's own folder does not count: the scaffold has a package.json of its own).
 */
function resolvableFrom(dir: string): boolean {
  for (let folder = dir; ; folder = dirname(folder)) {
    if (existsSync(join(folder, 'node_modules', PACKAGE, 'package.json'))) return true;
    if (dirname(folder) === folder) return false;
  }
}

/**
 * What the scaffold's package.json asks for: the running version where Node already finds forge-kernel from the
 * scaffold (a project that has it installed), else a link to the running kernel itself (a checkout, or an install
 * the scaffold sits outside of), which `npm install` in the scaffold makes.
 */
function kernelDependency(dir: string, linked: boolean): string {
  return linked ? `file:${relative(dir, PACKAGE_ROOT).split(sep).join('/')}` : `^${VERSION}`;
}

/** A path as a shell reads it: quoted when it holds anything but plain characters. */
function shellPath(path: string): string {
  return /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replaceAll("'", "'\\''")}'`;
}

function overlaySource(name: string): string {
  return `/* forge:manifest
{
  "name": "${name}",
  "version": "0.1.0",
  "description": "Says hello to a capsule's author.",
  "phases": ["analysis"],
  "subscribes": [],
  "capabilities": ["LOGGING"],
  "trustRequired": 0,
  "fuel": { "run": 1000000 },
  "memoryPages": 16,
  "timeoutMs": 1000,
  "dependencies": {}
}
*/
import { fail, input, log, ok, Value } from "${SDK_IMPORT}";

/** Called once per capsule: input is JSON (the run's data), output is ok(data) or fail(message). */
export function run(text: string): string {
  const data = input(text);
  const capsule = data.get("capsule");
  if (capsule === null || !capsule.isObject()) return fail("input has no capsule object");
  const author = capsule.getString("author");
  if (author.length == 0) return fail("capsule.author is missing");
  log.info("greeting " + author);
  return ok(Value.object().setString("greeting", "hello, " + author).setNumber("length", capsule.getString("content").length));
}
`;
}

function testSource(name: string): string {
  return `// npm test (or node --test): builds the overlay, then calls it in the sandbox.
import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildOverlays, createLogger, loadWasmOverlay } from '${PACKAGE}';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
let overlay;

before(async () => {
  const [built] = await buildOverlays([here('${name}.ts')], { outDir: here('build') });
  assert.notEqual(built.status, 'failed', built.error?.message);
  const manifest = JSON.parse(await readFile(built.manifest, 'utf8'));
  const logger = createLogger({ level: 'warn' }); // the overlay's own log lines are checked below, not printed
  overlay = await loadWasmOverlay(await readFile(built.wasm), { manifest, grant: manifest.capabilities, mode: 'strict', logger });
});

after(() => overlay?.close());

test('greets the author of a capsule', async () => {
  const result = await overlay.call('run', { capsule: { id: 'c1', author: 'ada', content: 'hello' } });
  assert.deepEqual(result.output, { ok: true, data: { greeting: 'hello, ada', length: 5 } });
  assert.ok(result.fuelUsed > 0);
  assert.deepEqual(result.logs.map((line) => line.message), ['greeting ada']);
});

test('refuses a capsule without an author', async () => {
  const result = await overlay.call('run', { capsule: { id: 'c2' } });
  assert.deepEqual(result.output, { ok: false, error: { message: 'capsule.author is missing' } });
});

test('refuses input that is not a capsule run', async () => {
  const result = await overlay.call('run', [1, 2]);
  assert.deepEqual(result.output, { ok: false, error: { message: 'input has no capsule object' } });
});
`;
}

function packageJson(name: string, dir: string, linked: boolean): string {
  const manifest = {
    name,
    version: '0.1.0',
    private: true,
    type: 'module',
    description: 'A Forge Kernel overlay in AssemblyScript.',
    engines: { node: '>=22' },
    scripts: { build: `forge-kernel build ${name}.ts --out build`, test: 'node --test' },
    devDependencies: { [PACKAGE]: kernelDependency(dir, linked) },
  };
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

function readme(name: string): string {
  return `# ${name}

A Forge Kernel overlay in AssemblyScript. Its manifest is the \`/* forge:manifest … */\` block at the top of
\`${name}.ts\`: name, version, phases, capabilities, fuel budgets, memory cap, deadline. It needs Node.js 22 or later.

    npm test                  # builds it, then calls it through the sandbox
    npm run build             # → build/${name}.wasm + build/${name}.manifest.json
    npx forge-kernel call build/${name}.wasm run --input '{"capsule":{"author":"ada"}}'

Load it in a service with \`kernel.overlays.load('build/${name}.wasm', { grant: ['LOGGING'] })\` (the manifest is read
beside it). The SDK (\`import { … } from "${SDK_IMPORT}"\`) gives \`input\`, \`ok\`, \`fail\`, \`Value\` (JSON),
\`log\`, \`publish\`, \`dbRead\` and \`dbWrite\`; each host function needs its capability in the manifest (the build
refuses a module that imports one its manifest does not declare).
`;
}

function run(args: readonly string[], io: CliIO): Promise<number> {
  return Promise.resolve(scaffold(args, io));
}

function scaffold(args: readonly string[], io: CliIO): number {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], allowPositionals: true, options: { dir: { type: 'string' } } });
  } catch (error) {
    io.stderr(`forge-kernel init: ${(error as Error).message}\n`);
    return 2;
  }
  const [name, ...extra] = parsed.positionals;
  if (name === undefined || extra.length > 0) {
    io.stderr('forge-kernel init: give exactly one overlay name, e.g. forge-kernel init capsule-scorer\n');
    return 2;
  }
  if (!NAME.test(name)) {
    io.stderr(`forge-kernel init: "${name}" is not a valid overlay name: use lower-case kebab-case (2–64 characters), e.g. capsule-scorer\n`);
    return 2;
  }
  const dir = resolve(parsed.values.dir ?? '.', name);
  if (existsSync(dir)) {
    io.stderr(`forge-kernel init: ${dir} already exists; nothing was changed. Choose another name or --dir.\n`);
    return 1;
  }
  mkdirSync(dir, { recursive: true });
  const linked = !resolvableFrom(dir);
  writeFileSync(join(dir, `${name}.ts`), overlaySource(name));
  writeFileSync(join(dir, `${name}.test.mjs`), testSource(name));
  writeFileSync(join(dir, 'package.json'), packageJson(name, dir, linked));
  writeFileSync(join(dir, 'README.md'), readme(name));
  const shown = relative(process.cwd(), dir) || dir;
  io.stdout(`Created ${shown}/ with ${name}.ts, ${name}.test.mjs, package.json and README.md.\nNext: cd ${shellPath(shown)} && ${linked ? 'npm install && ' : ''}npm test\n`);
  return 0;
}

export const initCommand: Command = { name: 'init', summary: 'scaffold a new AssemblyScript overlay with a test', help: HELP, run };
