import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WriteBehindBuffer } from '../../src/store/write-behind.ts';

describe('WriteBehindBuffer', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('batches by size and by interval', async () => {
    const batches: number[][] = [];
    const buffer = new WriteBehindBuffer<number>({ batchSize: 3, intervalMs: 50, write: (b) => (batches.push([...b]), Promise.resolve()) });
    for (let i = 1; i <= 3; i++) buffer.push(i);
    await vi.advanceTimersByTimeAsync(0);
    expect(batches).toEqual([[1, 2, 3]]);
    buffer.push(4);
    await vi.advanceTimersByTimeAsync(49);
    expect(batches).toEqual([[1, 2, 3]]);
    await vi.advanceTimersByTimeAsync(1);
    expect(batches).toEqual([[1, 2, 3], [4]]);
  });

  it('retries a failed batch with backoff and never drops or reorders an item; flush waits for it', async () => {
    const written: number[] = [];
    let failures = 3;
    const errors: number[] = [];
    const buffer = new WriteBehindBuffer<number>({
      batchSize: 2,
      retryDelayMs: 100,
      random: () => 0.999,
      onError: (_e, attempt) => errors.push(attempt),
      write: (b) => (failures-- > 0 ? Promise.reject(new Error('down')) : (written.push(...b), Promise.resolve())),
    });
    [1, 2, 3, 4, 5].forEach((i) => buffer.push(i));
    let flushed = false;
    void buffer.flush().then(() => (flushed = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(written).toEqual([]);
    await vi.advanceTimersByTimeAsync(100 + 200 + 400);
    expect(errors).toEqual([1, 2, 3]);
    expect(written).toEqual([1, 2, 3, 4, 5]);
    expect(flushed).toBe(true);
    expect(buffer.pending).toBe(0);
  });

  it('writes every item exactly once, in order, under any schedule of failures (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.constant('push' as const), fc.constant('fail' as const), fc.constant('flush' as const)), { maxLength: 60 }), fc.integer({ min: 1, max: 5 }), async (script, batchSize) => {
        const written: number[] = [];
        let failNext = 0;
        const buffer = new WriteBehindBuffer<number>({ batchSize, retryDelayMs: 10, maxRetryDelayMs: 40, write: (b) => (failNext > 0 ? (failNext--, Promise.reject(new Error('x'))) : (written.push(...b), Promise.resolve())) });
        let n = 0;
        for (const step of script) {
          if (step === 'push') buffer.push(n++);
          else if (step === 'fail') failNext++;
          else void buffer.flush();
          await vi.advanceTimersByTimeAsync(5);
        }
        const done = buffer.flush();
        await vi.advanceTimersByTimeAsync(10_000);
        await done;
        expect(written).toEqual(Array.from({ length: n }, (_, i) => i));
      }),
      { numRuns: 100 },
    );
  });
});
