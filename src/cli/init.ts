import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { CliIO, Command } from './command.ts';

const HELP = `Usage: forge-kernel init <name> [--dir parent]

Scaffolds a new AssemblyScript overlay in <parent>/<name>/ (default parent: the current folder):
  <name>.ts         the overlay, with its manifest declared at the top
  <name>.test.mjs   a test (node --test) that builds it and calls it through the sandbox
  README.md         how to build, test, call and load it

<name> is lower-case kebab-case, e.g. capsule-scorer.`;

const NAME = /^[a-z][a-z0-9-]{0,62}[a-z0-9]$/;
const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SDK = join(PACKAGE_ROOT, 'overlays-as', 'sdk', 'index');
const BIN = join(PACKAGE_ROOT, 'bin', 'forge-kernel.js');

function importPath(from: string, to: string): string {
  const path = relative(from, to).split('\\').join('/');
  return path.startsWith('.') ? path : `./${path}`;
}

function overlaySource(name: string, sdk: string): string {
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
import { fail, input, log, ok, Value } from "${sdk}";

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

function testSource(name: string, bin: string): string {
  return `// Run with: node --test ${name}.test.mjs   (builds the overlay, then calls it in the sandbox)
import { execFileSync } from 'node:child_process';
import { strict as assert } from 'node:assert';
import { test } from 'node:test';

const bin = new URL(${JSON.stringify(bin)}, import.meta.url).pathname;
const here = new URL('.', import.meta.url).pathname;
const forge = (...args) => execFileSync(process.execPath, [bin, ...args], { cwd: here, encoding: 'utf8' });
const call = (input) => {
  try {
    return JSON.parse(forge('call', 'build/${name}.wasm', 'run', '--input', JSON.stringify(input), '--json'));
  } catch (error) {
    return JSON.parse(error.stdout);
  }
};

test('builds', () => {
  forge('build', '${name}.ts', '--out', 'build');
});

test('greets the author of a capsule', () => {
  const result = call({ capsule: { id: 'c1', author: 'ada', content: 'hello' } });
  assert.equal(result.ok, true);
  assert.deepEqual(result.output, { ok: true, data: { greeting: 'hello, ada', length: 5 } });
  assert.ok(result.fuelUsed > 0);
});

test('refuses a capsule without an author', () => {
  const result = call({ capsule: { id: 'c2' } });
  assert.deepEqual(result.output, { ok: false, error: { message: 'capsule.author is missing' } });
});

test('traps on input that is not a capsule run', () => {
  assert.equal(call([1, 2]).output.ok, false);
});
`;
}

function readme(name: string): string {
  return `# ${name}

A Forge Kernel overlay in AssemblyScript. Its manifest is the \`/* forge:manifest … */\` block at the top of
\`${name}.ts\`: name, version, phases, capabilities, fuel budgets, memory cap, deadline.

    npx forge-kernel build ${name}.ts --out build                 # → build/${name}.wasm + build/${name}.manifest.json
    node --test ${name}.test.mjs                                  # build, then call it through the sandbox
    npx forge-kernel call build/${name}.wasm run --input '{"capsule":{"author":"ada"}}'

Load it in a service with \`loadWasmOverlay(bytes, { manifest, grant: ['LOGGING'] })\`. The SDK
(\`overlays-as/sdk\` in the forge-kernel package) gives \`input\`, \`ok\`, \`fail\`, \`Value\` (JSON), \`log\`,
\`publish\`, \`dbRead\` and \`dbWrite\`; each host function needs its capability in the manifest.
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
  writeFileSync(join(dir, `${name}.ts`), overlaySource(name, importPath(dir, SDK)));
  writeFileSync(join(dir, `${name}.test.mjs`), testSource(name, importPath(dir, BIN)));
  writeFileSync(join(dir, 'README.md'), readme(name));
  io.stdout(`Created ${relative(process.cwd(), dir) || dir}/ with ${name}.ts, ${name}.test.mjs and README.md.\nNext: cd ${relative(process.cwd(), dir) || dir} && node --test ${name}.test.mjs\n`);
  return 0;
}

export const initCommand: Command = { name: 'init', summary: 'scaffold a new AssemblyScript overlay with a test', help: HELP, run };
