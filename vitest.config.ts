import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Real servers (redis, clusters, child processes) take a moment to start.
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // A test that asserts nothing cannot fail: refuse it.
    expect: { requireAssertions: true },
    reporters: ['default', 'json'],
    outputFile: { json: '.vitest-results.json' },
  },
});
