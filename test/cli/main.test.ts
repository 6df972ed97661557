import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { CliIO, Command } from '../../src/cli/command.ts';
import { main } from '../../src/cli/main.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function io(): CliIO & { out: string; err: string } {
  const sink = {
    out: '',
    err: '',
    stdout: (text: string) => {
      sink.out += text;
    },
    stderr: (text: string) => {
      sink.err += text;
    },
  };
  return sink;
}

const echo: Command = {
  name: 'echo',
  summary: 'prints its arguments',
  help: 'Usage: forge-kernel echo [words…]',
  run: (args, out) => {
    out.stdout(`${args.join(' ')}\n`);
    return Promise.resolve(0);
  },
};

describe('forge-kernel CLI', () => {
  it('prints usage with --help and exits 0', async () => {
    const sink = io();
    expect(await main(['--help'], sink)).toBe(0);
    expect(sink.out).toContain('Usage: forge-kernel <command>');
    expect(sink.out).toContain('--version');
  });

  it('prints usage and exits 2 when run without a command', async () => {
    const sink = io();
    expect(await main([], sink)).toBe(2);
    expect(sink.out).toContain('Usage:');
  });

  it('prints the package version with --version and -v', async () => {
    for (const flag of ['--version', '-v']) {
      const sink = io();
      expect(await main([flag], sink)).toBe(0);
      expect(sink.out.trim()).toBe(pkg.version);
    }
  });

  it('refuses an unknown command or option with exit 2 and a pointer to --help', async () => {
    for (const argv of [['frobnicate'], ['--frob']]) {
      const sink = io();
      expect(await main(argv, sink)).toBe(2);
      expect(sink.err).toMatch(/unknown (command|option) "/);
      expect(sink.err).toContain('forge-kernel --help');
    }
  });

  it('lists registered commands, runs them, and shows their own --help', async () => {
    const sink = io();
    await main(['--help'], sink, [echo]);
    expect(sink.out).toMatch(/echo\s+prints its arguments/);
    const run = io();
    expect(await main(['echo', 'a', 'b'], run, [echo])).toBe(0);
    expect(run.out).toBe('a b\n');
    const help = io();
    expect(await main(['echo', '--help'], help, [echo])).toBe(0);
    expect(help.out).toContain('Usage: forge-kernel echo');
  });

  it('runs as the package bin in a real process', async () => {
    const bin = new URL('../../bin/forge-kernel.js', import.meta.url).pathname;
    const { stdout } = await promisify(execFile)(process.execPath, [bin, '--version']);
    expect(stdout.trim()).toBe(pkg.version);
    await expect(promisify(execFile)(process.execPath, [bin, 'nope'])).rejects.toMatchObject({ code: 2 });
  });
});
