// The kiosk's preprocessing in Chromium gives the Node reference's bytes: the built kiosk
// exposes its own preprocessing module and image decoder (src/edge/main.ts); the same
// pictures and specs go through both, grey and colour, NCHW and NHWC, every fit, both
// scales, digitized; PNG files decode in the page to pngjs's bytes.
// NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core; skipped, loudly, without.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkInputSpec, FITS, type InputSpec, LAYOUTS, MNIST_SPEC } from '../../src/model/input-spec';
import { preprocess, type Rgba } from '../../src/model/preprocess';
import { decodeImage } from '../../src/node/images';
import { random } from '../model/onnx-builder';
import { buildKiosk, hasChromium, launch } from './kiosk';
import { inkOnPaper, greyToRgba, mnistTestImages, digitAt } from './media';

if (!hasChromium) console.warn('tests/browser/preprocess.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

/** A seeded picture; `alpha` mixes in transparency (composited on white by the spec's step 1). */
function picture(width: number, height: number, seed: number, alpha: boolean): Rgba {
  const r = random(seed);
  const data = new Uint8ClampedArray(4 * width * height);
  for (let i = 0; i < data.length; i++) data[i] = (i & 3) === 3 && !alpha ? 255 : Math.floor((r() + 1) * 128);
  return { width, height, data };
}

const PICTURES: Record<string, Rgba> = {
  wide: picture(37, 23, 7, true),
  tall: picture(19, 41, 8, false),
  ink: (() => {
    const { width, height, grey } = inkOnPaper(digitAt(mnistTestImages(), 3), 3, 9);
    return greyToRgba(width, height, grey);
  })(),
};

function specs(): InputSpec[] {
  const out: InputSpec[] = [];
  for (const channels of [1, 3] as const) {
    for (const layout of LAYOUTS) {
      for (const fit of FITS) {
        for (const scale of [255, 1] as const) {
          const mean = channels === 1 ? [scale === 1 ? 33 : 0.2] : scale === 1 ? [120, 110, 100] : [0.485, 0.456, 0.406];
          const std = channels === 1 ? [scale === 1 ? 77 : 0.3] : scale === 1 ? [60, 58, 57] : [0.229, 0.224, 0.225];
          out.push(checkInputSpec({ channels, height: 12, width: 16, layout, scale, mean, std, fit, digitize: false }));
        }
      }
    }
  }
  for (const layout of LAYOUTS) for (const scale of [255, 1] as const) out.push(checkInputSpec({ ...MNIST_SPEC, layout, scale, ...(scale === 1 ? { mean: [0], std: [1] } : {}) }));
  out.push(checkInputSpec({ ...MNIST_SPEC, height: 20, width: 24 }));
  return out;
}

const b64 = (bytes: ArrayBufferView) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');

function serve(root: string): Promise<{ server: Server; url: string }> {
  const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    try {
      const body = readFileSync(join(root, path.endsWith('/') ? `${path}index.html` : path));
      res.writeHead(200, { 'content-type': types[extname(path)] ?? (path.endsWith('/') ? 'text/html' : 'application/octet-stream') }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/` })));
}

describe.skipIf(!hasChromium)('the kiosk’s preprocessing in Chromium equals the Node reference, byte for byte', () => {
  let root: string;
  let server: Server;
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sealed-edge-preprocess-'));
    await buildKiosk(join(root, 'site'), '00'.repeat(32));
    let url: string;
    ({ server, url } = await serve(join(root, 'site')));
    context = await launch(root);
    page = await context.newPage();
    await page.goto(url);
    await page.waitForFunction(() => 'sealedEdgePreprocessing' in globalThis, undefined, { timeout: 60_000 });
  });

  afterAll(async () => {
    await context?.close();
    server?.close();
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
  });

  it('grey and colour × NCHW and NHWC × every fit × both scales, and digitized: the same image and tensor bytes', async () => {
    const all = specs();
    const pictures = Object.entries(PICTURES).map(([name, p]) => ({ name, width: p.width, height: p.height, data: b64(p.data) }));
    const inPage = await page.evaluate(
      ({ pictures, specs }) => {
        const { preprocess } = (globalThis as unknown as { sealedEdgePreprocessing: { preprocess: typeof import('../../src/model/preprocess').preprocess } }).sealedEdgePreprocessing;
        const bytes = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
        const text = (b: ArrayBufferView) => btoa(String.fromCharCode(...new Uint8Array(b.buffer, b.byteOffset, b.byteLength)));
        return pictures.flatMap((p) =>
          specs.map((spec) => {
            const { image, tensor } = preprocess(spec, { width: p.width, height: p.height, data: bytes(p.data) });
            return { image: text(image.pixels), tensor: text(tensor) };
          }),
        );
      },
      { pictures, specs: all },
    );
    const inNode = Object.values(PICTURES).flatMap((p) =>
      all.map((spec) => {
        const { image, tensor } = preprocess(spec, p);
        return { image: b64(image.pixels), tensor: b64(tensor) };
      }),
    );
    expect(inPage).toHaveLength(3 * (24 + 5));
    expect(inPage).toEqual(inNode);
  });

  it('PNG files decode in the page (createImageBitmap) to pngjs’s bytes, so their tensors are equal too', async () => {
    const colour = new PNG({ width: 21, height: 13 });
    colour.data.set(picture(21, 13, 9, false).data);
    const files = [PNG.sync.write(colour), PNG.sync.write(Object.assign(new PNG({ width: 28, height: 28 }), { data: Buffer.from(greyToRgba(28, 28, digitAt(mnistTestImages(), 5)).data) }))];
    const colourSpec = checkInputSpec({ channels: 3, height: 8, width: 8, layout: 'nhwc', scale: 255, mean: [0.5, 0.4, 0.3], std: [0.2, 0.3, 0.4], fit: 'letterbox', digitize: false });
    const inPage = await page.evaluate(
      async ({ files, specs }) => {
        const { preprocess, decodeImageFile } = (globalThis as unknown as { sealedEdgePreprocessing: { preprocess: typeof import('../../src/model/preprocess').preprocess; decodeImageFile: (b: Blob) => Promise<import('../../src/model/preprocess').Rgba> } })
          .sealedEdgePreprocessing;
        const text = (b: ArrayBufferView) => btoa(String.fromCharCode(...new Uint8Array(b.buffer, b.byteOffset, b.byteLength)));
        const out = [];
        for (const [i, f] of files.entries()) {
          const rgba = await decodeImageFile(new Blob([Uint8Array.from(atob(f), (c) => c.charCodeAt(0))], { type: 'image/png' }));
          out.push({ rgba: text(rgba.data), tensor: text(preprocess(specs[i]!, rgba).tensor) });
        }
        return out;
      },
      { files: files.map((f) => f.toString('base64')), specs: [colourSpec, MNIST_SPEC] },
    );
    const inNode = files.map((f, i) => {
      const rgba = decodeImage(f, `file ${i}`);
      return { rgba: b64(rgba.data), tensor: b64(preprocess([colourSpec, MNIST_SPEC][i]!, rgba).tensor) };
    });
    expect(inPage).toEqual(inNode);
  });

  it('refuses in the page what is no image, with the message the kiosk shows', async () => {
    const message = await page.evaluate(async () => {
      const { decodeImageFile } = (globalThis as unknown as { sealedEdgePreprocessing: { decodeImageFile: (b: Blob) => Promise<unknown> } }).sealedEdgePreprocessing;
      return decodeImageFile(new Blob(['not a picture'], { type: 'text/plain' })).then(
        () => 'decoded',
        (e: Error) => e.message,
      );
    });
    expect(message).toBe('not an image this browser can decode (type: text/plain)');
  });
});
