import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: a real server, JWKS server and WASM instances per file; keep the pool small.
    pool: 'forks',
    maxWorkers: 2,
  },
});
