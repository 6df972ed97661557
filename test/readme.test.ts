import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { readmeBlock } from './support/readme.ts';
import { budget } from './support/wait.ts';

const ROOT = resolve(import.meta.dirname, '..');

describe('README', () => {
  it('embeds the kernel in at most 20 lines that run as written', async () => {
    const code = readmeBlock('embed.ts');
    expect(code.trim().split('\n').length).toBeLessThanOrEqual(20);
    const dir = join(ROOT, '.forge', 'tmp');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `readme-embed-${process.pid}.ts`);
    // The published package name resolves to dist/; the test runs the same program against the sources.
    writeFileSync(file, code.replace("from 'forge-kernel'", `from ${JSON.stringify(join(ROOT, 'src', 'index.ts'))}`));
    const { stdout } = await promisify(execFile)(process.execPath, [file], { env: { ...process.env, FORGE_CACHE_DIR: join(ROOT, '.forge', 'cache', 'cli-run') }, timeout: 120_000 });
    expect(stdout).toMatch(/^completed ops@example\.com \{/);
    expect(stdout).toContain("op: 'store'");
    expect(stdout).toContain("'lineage-tracker':");
  }, budget(150_000));
});
