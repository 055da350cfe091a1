import { defineConfig } from 'vitest/config';

// One config for the kiosk build (issue 5 adds its entry points) and for Vitest.
export default defineConfig({
  worker: { format: 'es' },
  test: {
    include: ['tests/**/*.test.ts'],
    pool: 'forks',
    // Encrypted evaluation is CPU-bound: one test file per core.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 15 * 60 * 1000,
    hookTimeout: 5 * 60 * 1000,
  },
});
