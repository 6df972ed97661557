import { defineConfig } from 'vitest/config';
import { budget } from './test/support/wait.ts';

/**
 * Three projects: `unit` (in-memory, no services), `package` (the packed tarball installed into an empty project) and
 * `integration` (real Neo4j and NATS JetStream, started by the global setup unless NEO4J_URI / NATS_URL point at
 * running servers). `npm test` runs them all; `npx vitest run --project unit` is the fast loop.
 */
export default defineConfig({
  test: {
    // The JSON report is what .ci/run reads for its "N passed, N failed" line.
    reporters: ['default', ['json', { outputFile: '.forge/reports/vitest.json' }]],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/integration/**', 'test/package/**'],
          // Ceilings, not targets: a test that waits polls with its own deadline (test/support/wait.ts); all of them
          // scale with FORGE_TEST_SLOWDOWN, which `npm run test:stress` sets while it loads the machine.
          testTimeout: budget(30_000),
          hookTimeout: budget(120_000),
          // expect.poll waits this long (its own default, 1 s, is a fixed short timeout).
          expect: { poll: { timeout: budget(15_000) } },
        },
      },
      {
        test: {
          // The package as a consumer gets it: packed, installed into an empty project, used from there (no servers).
          name: 'package',
          include: ['test/package/**/*.test.ts'],
          testTimeout: budget(600_000),
          hookTimeout: budget(600_000),
          expect: { poll: { timeout: budget(15_000) } },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          testTimeout: budget(120_000),
          hookTimeout: budget(300_000),
          expect: { poll: { timeout: budget(15_000) } },
          // The servers are shared: one file at a time keeps tests that restart or load them from colliding.
          fileParallelism: false,
        },
      },
    ],
  },
});
