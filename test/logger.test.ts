import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isForgeError } from '../src/errors.ts';
import { createLogger } from '../src/logger.ts';

function capture(isTTY = false): { stream: Writable & { isTTY: boolean }; lines: () => string[] } {
  const chunks: string[] = [];
  const stream = Object.assign(
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk.toString());
        done();
      },
    }),
    { isTTY },
  );
  return { stream, lines: () => chunks.join('').split('\n').filter(Boolean) };
}

describe('createLogger', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('writes one JSON object a line by default, with child bindings on every line', () => {
    const out = capture();
    const logger = createLogger({ destination: out.stream, base: { service: 'billing' } });
    logger.child({ overlayId: 'ov_1', correlationId: 'c_9' }).info({ fuel: 42 }, 'overlay ran');
    const [line] = out.lines();
    expect(JSON.parse(line ?? '')).toMatchObject({ level: 30, service: 'billing', overlayId: 'ov_1', correlationId: 'c_9', fuel: 42, msg: 'overlay ran' });
  });

  it('drops lines below the configured level', () => {
    const out = capture();
    const logger = createLogger({ destination: out.stream, level: 'warn' });
    logger.info('quiet');
    logger.warn('loud');
    expect(out.lines().map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['loud']);
  });

  it('writes human-readable lines when pretty is asked for, or auto on a TTY', () => {
    for (const config of [{ format: 'pretty' as const, tty: false }, { format: 'auto' as const, tty: true }]) {
      const out = capture(config.tty);
      createLogger({ destination: out.stream, format: config.format }).info({ runId: 'r1' }, 'phase done');
      const text = out.lines().join('\n');
      expect(text).toContain('phase done');
      expect(text).toContain('r1');
      expect(() => {
        JSON.parse(out.lines()[0] ?? '');
      }).toThrow();
    }
  });

  it('stays JSON under auto when the destination is not a TTY', () => {
    const out = capture(false);
    createLogger({ destination: out.stream, format: 'auto' }).info('plain');
    expect(JSON.parse(out.lines()[0] ?? '')).toMatchObject({ msg: 'plain' });
  });

  it('takes level and format from FORGE_LOG_LEVEL / FORGE_LOG_FORMAT', () => {
    vi.stubEnv('FORGE_LOG_LEVEL', 'error');
    vi.stubEnv('FORGE_LOG_FORMAT', 'json');
    const out = capture();
    const logger = createLogger({ destination: out.stream });
    logger.warn('hidden');
    logger.error('shown');
    expect(out.lines()).toHaveLength(1);
  });

  it('refuses an unknown level or format, from options or environment, with INVALID_INPUT', () => {
    const attempts = [
      () => createLogger({ level: 'verbose' as never }),
      () => createLogger({ format: 'xml' as never }),
      () => {
        vi.stubEnv('FORGE_LOG_FORMAT', 'yaml');
        return createLogger();
      },
    ];
    for (const attempt of attempts) {
      let caught: unknown;
      try {
        attempt();
      } catch (error) {
        caught = error;
      }
      expect(isForgeError(caught, 'INVALID_INPUT')).toBe(true);
      vi.unstubAllEnvs();
    }
  });
});
