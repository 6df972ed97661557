import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createKernel } from '../../src/kernel.ts';
import { DEFAULT_MEMORY_AUDIT_LIMIT, DEFAULT_MEMORY_DEAD_LETTER_LIMIT, MemoryStore } from '../../src/store/memory-store.ts';
import type { AuditEntry } from '../../src/store/store.ts';
import { storeContract } from '../support/store-contract.ts';

storeContract('memory', () => Promise.resolve(new MemoryStore()));

const entry = (i: number): AuditEntry => ({ id: `aud_${i}`, runId: `run_${i}`, capsuleId: `cap_${i % 3}`, decision: 'approve', detail: { i }, at: i });

describe('memory store audit trail', () => {
  it('keeps the last auditLimit entries, oldest first, whatever the number appended', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 40 }), async (limit, count) => {
        const store = new MemoryStore({ auditLimit: limit });
        for (let i = 0; i < count; i++) store.appendAudit(entry(i));
        const kept = await store.listAudit();
        const expected = Array.from({ length: Math.min(limit, count) }, (_, k) => Math.max(0, count - limit) + k);
        expect(kept.map((a) => a.at)).toEqual(expected);
        // Filters apply to what is kept, in the same order.
        expect((await store.listAudit({ capsuleId: 'cap_1' })).map((a) => a.at)).toEqual(expected.filter((i) => i % 3 === 1));
      }),
    );
  });

  it('bounds the trail by default', async () => {
    const store = new MemoryStore();
    for (let i = 0; i < DEFAULT_MEMORY_AUDIT_LIMIT + 5; i++) store.appendAudit(entry(i));
    const kept = await store.listAudit();
    expect(kept).toHaveLength(DEFAULT_MEMORY_AUDIT_LIMIT);
    expect(kept[0]!.at).toBe(5);
  });

  it('refuses a malformed auditLimit with a typed error', async () => {
    for (const auditLimit of [0, -1, 1.5, Number.NaN, '10', null]) {
      expect(() => new MemoryStore({ auditLimit } as never)).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
      await expect(createKernel({ store: { kind: 'memory', auditLimit } as never, logger: { level: 'silent' } })).rejects.toMatchObject({ code: 'INVALID_CONFIG' });
    }
    expect(() => new MemoryStore(null as never)).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
  });

  it('takes auditLimit from the kernel option', async () => {
    const kernel = await createKernel({ store: { kind: 'memory', auditLimit: 2 }, logger: { level: 'silent' }, cacheDir: false });
    try {
      for (let i = 0; i < 3; i++) kernel.store.appendAudit(entry(i));
      expect((await kernel.store.listAudit()).map((a) => a.id)).toEqual(['aud_1', 'aud_2']);
    } finally {
      await kernel.stop();
    }
  });
});

describe('memory store dead letters', () => {
  const letter = (i: number) => ({ id: `dl_${i}`, event: { i }, subscriber: 's', error: { code: 'X', message: 'm' }, attempts: 3, at: i });

  it('keeps the last deadLetterLimit letters, oldest dropped first, so a kernel failing for days stays flat', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 40 }), async (limit, count) => {
        const store = new MemoryStore({ deadLetterLimit: limit });
        for (let i = 0; i < count; i++) await store.saveDeadLetter(letter(i));
        expect((await store.listDeadLetters()).map((d) => d.at)).toEqual(Array.from({ length: Math.min(limit, count) }, (_, k) => Math.max(0, count - limit) + k));
      }),
    );
    const store = new MemoryStore();
    for (let i = 0; i < DEFAULT_MEMORY_DEAD_LETTER_LIMIT + 5; i++) await store.saveDeadLetter(letter(i));
    expect(await store.listDeadLetters()).toHaveLength(DEFAULT_MEMORY_DEAD_LETTER_LIMIT);
  });

  it('refuses a malformed deadLetterLimit with a typed error', async () => {
    for (const deadLetterLimit of [0, -1, 1.5, '10', null]) {
      expect(() => new MemoryStore({ deadLetterLimit } as never)).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
      await expect(createKernel({ store: { kind: 'memory', deadLetterLimit } as never, logger: { level: 'silent' } })).rejects.toMatchObject({ code: 'INVALID_CONFIG' });
    }
  });
});
