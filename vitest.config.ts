import { defineConfig } from 'vitest/config';

/**
 * Two projects: `unit` (in-memory, no services) and `integration` (real Neo4j and NATS JetStream, started by the
 * global setup unless NEO4J_URI / NATS_URL point at running servers). `npm test` runs both;
 * `npx vitest run --project unit` is the fast loop.
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
          exclude: ['test/integration/**'],
          testTimeout: 10_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          // The servers are shared: one file at a time keeps tests that restart or load them from colliding.
          fileParallelism: false,
        },
      },
    ],
  },
});
