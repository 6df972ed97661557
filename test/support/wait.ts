import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';

/**
 * Waiting in tests without deciding a pass on how fast this machine is: poll a condition until a deadline, and scale
 * deadlines by FORGE_TEST_SLOWDOWN (default 1; `npm run test:stress` sets it while it loads the machine).
 */
export const SLOWDOWN = Math.max(1, Number(process.env.FORGE_TEST_SLOWDOWN ?? 1) || 1);

/** A time budget for work whose duration depends on the machine, scaled for a slower or busier one. */
export const budget = (ms: number): number => Math.round(ms * SLOWDOWN);

/**
 * Resolves once `condition` holds; rejects naming `what` when it has not by the deadline (default 30 s, scaled).
 * Polls every `everyMs` ms (0: every turn of the event loop).
 */
export async function until(condition: () => boolean | Promise<boolean>, what: string, options: { timeoutMs?: number; everyMs?: number } = {}): Promise<void> {
  const timeoutMs = options.timeoutMs ?? budget(30_000);
  const deadline = Date.now() + timeoutMs;
  const every = options.everyMs ?? 10;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`);
    await new Promise((resolve) => (every === 0 ? setImmediate(resolve) : setTimeout(resolve, every)));
  }
}

/**
 * Where a child process of a test writes its stderr (the kernel's logs among it): a file under .forge/reports/,
 * not the test runner's console. Returns the stream to pipe into.
 */
export function childLog(name: string): WriteStream {
  const dir = join(import.meta.dirname, '..', '..', '.forge', 'reports', 'children');
  mkdirSync(dir, { recursive: true });
  return createWriteStream(join(dir, `${name.replace(/[^\w.-]/g, '_')}.log`), { flags: 'a' });
}
