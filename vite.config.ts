import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';
import { kioskAssets } from './scripts/kiosk-assets';
import { isBasePath, type SiteDefaults } from './src/edge/site';

/**
 * The owner's Ed25519 verification key the kiosk pins (64 hex digits): from
 * SEALED_EDGE_OWNER_KEY, or the file SEALED_EDGE_OWNER_KEY_FILE (default
 * data/owner-signing.pub, written by `sealed-edge protect`). Without one the build still
 * works, but the kiosk refuses every bundle.
 */
function ownerKey(): string {
  const fromEnv = process.env.SEALED_EDGE_OWNER_KEY?.trim();
  const file = process.env.SEALED_EDGE_OWNER_KEY_FILE ?? 'data/owner-signing.pub';
  const key = fromEnv || (existsSync(file) ? readFileSync(file, 'utf8').trim() : '');
  if (key !== '' && !/^[0-9a-f]{64}$/i.test(key)) throw new Error('SEALED_EDGE_OWNER_KEY must be 64 hex digits (a raw Ed25519 public key)');
  return key.toLowerCase();
}

/**
 * The kiosk's base path: relative by default, so the built kiosk works from any sub-path
 * of a static host; SEALED_EDGE_BASE=/kiosk/ pins an absolute one.
 */
function base(): string {
  const value = process.env.SEALED_EDGE_BASE ?? '';
  if (value === '') return './';
  if (!isBasePath(value)) {
    throw new Error(`SEALED_EDGE_BASE must be ./ or an absolute path that starts and ends with '/', such as /kiosk/; got '${value}'`);
  }
  return value;
}

// One config for the kiosk build and for Vitest.
export default defineConfig({
  base: base(),
  // `sealed-edge deploy` overrides __SEALED_EDGE_SITE__ (the backend URL and the bundle it opens).
  define: { __SEALED_EDGE_OWNER_KEY__: JSON.stringify(ownerKey()), __SEALED_EDGE_SITE__: JSON.stringify({} satisfies SiteDefaults) },
  resolve: {
    // onnxruntime-web's non-bundled WASM build: its runtime (.mjs + .wasm) is loaded from
    // `<base>ort/`, served by the app (kioskAssets), so threads work and no CDN is used.
    alias: [{ find: /^onnxruntime-web$/, replacement: resolve(import.meta.dirname, 'node_modules/onnxruntime-web/dist/ort.wasm.min.mjs') }],
  },
  plugins: [kioskAssets()],
  // Cross-origin isolation in dev too (onnxruntime-web threads, SharedArrayBuffer).
  server: { headers: { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' } },
  build: { target: 'es2022', chunkSizeWarningLimit: 4096 },
  worker: { format: 'es' },
  test: {
    include: ['tests/**/*.test.ts'],
    pool: 'forks',
    // Encrypted evaluation is CPU-bound: one test file per core.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 15 * 60 * 1000,
    hookTimeout: 5 * 60 * 1000,
    // A test file that keeps its fork busy in SEAL for a minute makes Vitest's progress
    // report to the main process time out ("Timeout calling onTaskUpdate") although every
    // test passed; such a report is not a test failure. Failed tests still fail the run.
    dangerouslyIgnoreUnhandledErrors: true,
  },
});
