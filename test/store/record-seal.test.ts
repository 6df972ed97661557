import { describe, expect, it } from 'vitest';
import { RecordSeal } from '../../src/store/record-seal.ts';

describe('RecordSeal', () => {
  const seal = new RecordSeal('a deployment secret');

  it('opens what it sealed, for the same record, and hides the text', () => {
    const sealed = seal.seal('{"decision":"reject","card":"4111"}', 'AuditEntry:a1');
    expect(sealed).not.toContain('reject');
    expect(sealed).not.toContain('4111');
    expect(seal.open(sealed, 'AuditEntry:a1')).toBe('{"decision":"reject","card":"4111"}');
  });

  it('refuses a sealed value moved to another record, changed, or sealed with another secret (STORE_CORRUPT)', () => {
    const sealed = seal.seal('{"decision":"reject"}', 'AuditEntry:a1');
    expect(() => seal.open(sealed, 'AuditEntry:a2')).toThrow(expect.objectContaining({ code: 'STORE_CORRUPT' }) as Error);
    const flipped = `${sealed.slice(0, -6)}${sealed.slice(-6, -5) === 'A' ? 'B' : 'A'}${sealed.slice(-5)}`;
    expect(() => seal.open(flipped, 'AuditEntry:a1')).toThrow(expect.objectContaining({ code: 'STORE_CORRUPT' }) as Error);
    expect(() => new RecordSeal('another secret').open(sealed, 'AuditEntry:a1')).toThrow(expect.objectContaining({ code: 'STORE_CORRUPT' }) as Error);
  });

  it('reads a record written before records were sealed as it is', () => {
    expect(seal.open('{"plain":true}', 'PipelineRunSnapshot:r1')).toBe('{"plain":true}');
  });
});
