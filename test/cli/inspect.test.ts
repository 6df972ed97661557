import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { buildExamples, EXAMPLES_OUT } from '../support/examples.ts';
import { until, budget } from '../support/wait.ts';

const BIN = new URL('../../bin/forge-kernel.js', import.meta.url).pathname;

describe('forge-kernel inspect', () => {
  beforeAll(async () => {
    await buildExamples();
  }, budget(120_000));

  it('serves the inspector with the overlays and a demo workload until it is stopped', async () => {
    const child = spawn(process.execPath, [BIN, 'inspect', '--port', '0', '--json', '--demo', '--overlays', EXAMPLES_OUT], { stdio: ['ignore', 'pipe', 'ignore'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const line = await new Promise<string>((resolve) => createInterface({ input: child.stdout }).once('line', resolve));
      const { url } = JSON.parse(line) as { url: string };
      let pipelines = 0;
      await until(
        async () => {
          const { live, ended } = (await (await fetch(`${url}api/actors`)).json()) as { live: { kind: string }[]; ended: { kind: string }[] };
          pipelines = [...live, ...ended].filter((a) => a.kind === 'pipeline').length;
          expect(live.filter((a) => a.kind === 'overlay').length).toBeGreaterThanOrEqual(8);
          return pipelines > 0;
        },
        'the demo to start a pipeline run',
        { everyMs: 100 },
      );
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  }, budget(60_000));

  it.each([[['inspect', '--port', 'x']], [['inspect', '--store', 'mongo']], [['inspect', '--bogus']]])('refuses %j with a usage error', async (args) => {
    let stdout = '';
    const code = await main([...args, '--json'], { stdout: (t) => (stdout += t), stderr: () => undefined });
    expect(code).toBe(2);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, error: { code: 'USAGE' } });
  });

  it('fails with exit 1 when the host needs a token it was not given', async () => {
    let stdout = '';
    const code = await main(['inspect', '--host', '0.0.0.0', '--port', '0', '--overlays', EXAMPLES_OUT, '--json'], { stdout: (t) => (stdout += t), stderr: () => undefined });
    expect(code).toBe(1);
    expect(JSON.parse(stdout)).toMatchObject({ ok: false, error: { code: 'INSPECTOR_TOKEN_REQUIRED' } });
  }, budget(30_000));
});
