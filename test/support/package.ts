import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, relative, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import { budget } from './wait.ts';

export const ROOT = resolve(import.meta.dirname, '..', '..');
/** npm, compilers and installs take seconds to minutes, more on a busy machine: a ceiling, not a measurement. */
export const PACKAGE_BUDGET_MS = budget(600_000);
/** The oldest Node line `engines` promises; the consumer test runs the README's example on it too. */
export const NODE_22 = '22.23.3';

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** The Node this suite runs on (≥ 22) first on PATH, so npm scripts and `npx` bins run on it, not on an older system Node. */
export function pathWith(nodeBin = dirname(process.execPath)): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${nodeBin}${delimiter}${process.env.PATH ?? ''}` };
}

/** Runs a program; resolves with its exit code and output whatever it returns (a failure is for the test to judge). */
export function run(file: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Ran> {
  return promisify(execFile)(file, [...args], { cwd: options.cwd, env: options.env ?? pathWith(), timeout: PACKAGE_BUDGET_MS, maxBuffer: 64 * 1024 * 1024 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string; message: string }) => ({ code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message }),
  );
}

async function mustRun(file: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): Promise<Ran> {
  const result = await run(file, args, options);
  if (result.code !== 0) throw new Error(`${file} ${args.join(' ')} (in ${options.cwd}) exited ${result.code}:\n${result.stdout}\n${result.stderr}`);
  return result;
}

/** What a checkout holds that is not the project's own: installed, generated or local. */
const NOT_SOURCE = new Set(['node_modules', '.git', '.forge', 'dist', 'build', 'bench/results']);

/**
 * The text in `bytes` as UTF-8 and as UTF-16 read from either byte (AssemblyScript keeps its strings as UTF-16).
 * Each UTF-16 view is decoded from an aligned copy of even length: Node 24.21 corrupts its heap decoding a view that
 * starts at an odd offset and has an odd length ("double free or corruption", the process aborts).
 */
export function textViews(bytes: Uint8Array): string[] {
  const utf16 = (from: number) => Buffer.from(bytes.subarray(from, from + ((bytes.length - from) & ~1))).toString('utf16le');
  return [Buffer.from(bytes).toString('utf8'), utf16(0), utf16(1)];
}

/**
 * `npm pack` of the working tree, as a release would make it, without touching the checkout's own dist/ (other
 * tests use it): the working tree is copied to a staging folder that shares node_modules, and packed there, which
 * runs its prepare script (a clean dist/ and the prebuilt examples). Returns the tarball's path; `cleanup` removes
 * what it made.
 */
export async function packTarball(): Promise<{ tarball: string; cleanup: () => void }> {
  const staging = mkdtempSync(join(tmpdir(), 'forge-pack-'));
  cpSync(ROOT, staging, { recursive: true, filter: (source) => !NOT_SOURCE.has(relative(ROOT, source).split(sep).join('/')) });
  symlinkSync(join(ROOT, 'node_modules'), join(staging, 'node_modules'), 'dir');
  // The examples built by earlier tests or builds are reused when current (their inputs are named relative to the sources).
  const examples = join(ROOT, '.forge', 'cache', 'examples');
  if (existsSync(examples)) cpSync(examples, join(staging, '.forge', 'cache', 'examples'), { recursive: true });
  const out = join(staging, 'tarball');
  mkdirSync(out);
  const cleanup = () => rmSync(staging, { recursive: true, force: true });
  try {
    await mustRun('npm', ['pack', '--pack-destination', out, '--silent'], { cwd: staging });
  } catch (error) {
    cleanup();
    throw error;
  }
  const [tarball] = readdirSync(out).filter((f) => f.endsWith('.tgz'));
  if (tarball === undefined) throw new Error(`npm pack wrote no tarball in ${out}`);
  return { tarball: join(out, tarball), cleanup };
}

/** A fresh project with the tarball installed, as `npm install forge-kernel` would give it (plus the extra packages). */
export async function consumerProject(tarball: string, extra: readonly string[] = []): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'forge-consumer-'));
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
  await mustRun('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, ...extra], { cwd: dir });
  return dir;
}

/** The folder of a Node 22 binary (the npm `node` package), installed once per checkout. */
export async function node22(): Promise<string> {
  const dir = join(ROOT, '.forge', 'cache', `node-${NODE_22}`);
  const bin = join(dir, 'node_modules', '.bin');
  if (!existsSync(join(bin, 'node'))) {
    mkdirSync(dir, { recursive: true });
    // The `node` package installs the platform's binary from its preinstall script, which npm must be allowed to run.
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ private: true, allowScripts: { node: true } })}\n`);
    await mustRun('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', `node@${NODE_22}`], { cwd: dir });
  }
  return bin;
}
