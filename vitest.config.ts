import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    setupFiles: ['test/setup/signer-kinds.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // e2e suites start real servers (registry, Azurite, s3rver); two cores: keep files in few workers.
    maxWorkers: 2,
    typecheck: { enabled: true, include: ['test/**/*.test-d.ts'] },
  },
});
