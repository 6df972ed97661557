import { describe, expect, it } from 'vitest';
import { loadNativeOverlay, type NativeOverlay } from '../../src/wasm/trusted-engine.ts';
import { captureLogger } from '../support/engine.ts';

const native: NativeOverlay = {
  manifest: { name: 'native-scorer', version: '2.0.0', phases: ['analysis'] },
  exports: {
    run: (input, context) => {
      context.log('info', 'scoring');
      context.publish('capsule.scored', { score: 3 });
      (input as { mutated?: boolean }).mutated = true;
      return { score: 3 };
    },
    fail: (_input, context) => {
      context.publish('capsule.scored', { score: 0 });
      throw new Error('boom');
    },
    slow: () => new Promise(() => {}),
  },
};

describe('trusted mode (native TypeScript overlays)', () => {
  it('refuses a native overlay not registered as internal and trusted, with TRUST_REQUIRED', () => {
    for (const registration of [{ internal: false, trusted: true }, { internal: true, trusted: false }, {} as never]) {
      expect(() => loadNativeOverlay(native, registration)).toThrow(expect.objectContaining({ code: 'TRUST_REQUIRED' }) as Error);
    }
    expect(() => loadNativeOverlay(null as never, { internal: true, trusted: true })).toThrow(expect.objectContaining({ code: 'TRUST_REQUIRED' }) as Error);
  });

  it('runs a registered one unmetered, on a copy of the input, with buffered events and bound logs', async () => {
    const log = captureLogger();
    const delivered: unknown[] = [];
    const overlay = loadNativeOverlay(native, { internal: true, trusted: true, logger: log.logger, onEvents: (events) => delivered.push(...events) });
    const input = { id: 'c1' };
    const result = await overlay.call('run', input);
    expect(overlay.mode).toBe('trusted');
    expect(result).toMatchObject({ output: { score: 3 }, fuelUsed: 0, events: [{ type: 'capsule.scored', payload: { score: 3 }, source: overlay.id }] });
    expect(input).toEqual({ id: 'c1' });
    expect(delivered).toHaveLength(1);
    expect(log.lines().find((l) => l.msg === 'scoring')).toMatchObject({ overlayId: overlay.id });

    delivered.length = 0;
    await expect(overlay.call('fail', {})).rejects.toThrow('boom');
    expect(delivered).toEqual([]);
    await expect(overlay.call('slow', {}, { deadlineMs: 20 })).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    await overlay.close();
    await expect(overlay.call('run', {})).rejects.toMatchObject({ code: 'INSTANCE_TERMINATED' });
  });

  it('refuses wasm bytes in trusted mode', async () => {
    const { loadWasmOverlay } = await import('../../src/wasm/engine.ts');
    await expect(loadWasmOverlay(new Uint8Array(), { manifest: { name: 'x-y', version: '1.0.0', sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' }, mode: 'trusted' as never })).rejects.toMatchObject({
      code: 'TRUST_REQUIRED',
    });
  });
});
