// Models whose input is not MNIST's through the kiosk: a small NHWC colour CNN protected
// with per-channel normalization and center-crop (a demo stream of colour PNG files of
// other sizes, `start --demo` DIR's format, and dropped files), and a one-channel model
// that expects raw 0–255 pixels at 12×12 (100 distinct MNIST test digits, resized). The
// kiosk must apply exactly the manifest's spec: each frame's image and input tensor
// (SHA-256) are the Node reference's, and the backend stores onnxruntime-node's float
// label of that tensor (results joined to frames by idempotency key).
// NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core; skipped, loudly, without.
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { BrowserContext, Page } from 'playwright-core';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDemoSource, writeDemoStream } from '../../src/cli/demo-stream';
import { main } from '../../src/cli/main';
import { checkInputSpec } from '../../src/model/input-spec';
import { preprocess, readImageSet, type Rgba } from '../../src/model/preprocess';
import { demoDigitsIdx } from '../../scripts/kiosk-assets';
import { decodeImage } from '../../src/node/images';
import { decrypted } from '../backend/helpers';
import { writeColourIdx, writeColourModel, writeRawGreyModel } from '../model/colour-model';
import { random } from '../model/onnx-builder';
import { buildSite, enrollKiosk, hasChromium, kioskFrames, launch, type Site } from './kiosk';

if (!hasChromium) console.warn('tests/browser/colour.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

const KEK = '7c'.repeat(32);
const SPEC = checkInputSpec({ channels: 3, height: 8, width: 8, layout: 'nhwc', scale: 255, mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26], fit: 'center-crop', digitize: false });
const RAW = checkInputSpec({ channels: 1, height: 12, width: 12, layout: 'nchw', scale: 1, mean: [0], std: [1], fit: 'resize', digitize: false });

/** Runs the CLI in this process, quietly, with the test's key-encryption key. */
async function cli(...args: string[]): Promise<number> {
  const previous = process.env.SEALED_EDGE_KEK;
  process.env.SEALED_EDGE_KEK = KEK;
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = () => true;
  try {
    return await main(args);
  } finally {
    process.stdout.write = write;
    if (previous === undefined) delete process.env.SEALED_EDGE_KEK;
    else process.env.SEALED_EDGE_KEK = previous;
  }
}

/** A seeded opaque colour PNG of width × height with smooth gradients (so the fit matters). */
function colourPng(width: number, height: number, seed: number): Buffer {
  const r = random(seed);
  const [a, b, c] = [r(), r(), r()];
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 4 * (y * width + x);
      png.data[i] = Math.floor(127.5 + 127 * Math.sin(a * 3 + x / 3));
      png.data[i + 1] = Math.floor(127.5 + 127 * Math.cos(b * 3 + y / 4));
      png.data[i + 2] = Math.floor(127.5 + 127 * Math.sin(c * 3 + (x + y) / 5));
      png.data[i + 3] = 255;
    }
  }
  return PNG.sync.write(png);
}

describe.skipIf(!hasChromium)('models whose input is not MNIST’s through the kiosk (the manifest’s input spec)', () => {
  let root: string;
  let site: Site;
  let context: BrowserContext;
  let page: Page;
  let deviceId: string;
  let model: string;
  let rawModel: string;
  const demoFiles: Buffer[] = [];
  const posts: string[] = [];

  /** The Node reference for a picture: image, tensor hash and the float model's label. */
  async function reference(picture: Buffer | Rgba, spec = SPEC, onnx = model): Promise<{ pixels: number[]; sha256: string; label: number }> {
    const { image, tensor, shape } = preprocess(spec, Buffer.isBuffer(picture) ? decodeImage(picture, 'png') : picture);
    const session = await ort.InferenceSession.create(onnx);
    const scores = (await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', tensor, shape) }))[session.outputNames[0]!]!.data as Float32Array;
    await session.release();
    return {
      pixels: Array.from(image.pixels),
      sha256: createHash('sha256').update(Buffer.from(tensor.buffer)).digest('hex'),
      label: scores.reduce((best, v, i) => (v > scores[best]! ? i : best), 0),
    };
  }

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sealed-edge-colour-'));
    model = writeColourModel(root, 'nhwc');
    const calibration = join(root, 'calibration.idx');
    writeColourIdx(calibration, 100, 10, 12);
    const at = ['--data', join(root, 'data'), '--out', join(root, 'models'), '--json'];
    expect(await cli('protect', model, '--id', 'colour', '--mean', SPEC.mean.join(','), '--std', SPEC.std.join(','), '--fit', 'center-crop', '--calibration', calibration, ...at)).toBe(0);
    // Raw pixels, 12×12: calibrated on MNIST test digits (28×28), resized by the spec's fit.
    rawModel = writeRawGreyModel(root);
    const digits = join(root, 'digits.idx');
    writeFileSync(digits, demoDigitsIdx(100));
    expect(await cli('protect', rawModel, '--id', 'raw-grey', '--scale', '1', '--mean', '0', '--std', '1', '--fit', 'resize', '--calibration', digits, ...at)).toBe(0);
    site = await buildSite({ model: { dataDir: join(root, 'data'), modelDir: join(root, 'models', 'colour'), env: { SEALED_EDGE_KEK: KEK } } });
    cpSync(join(root, 'models', 'raw-grey'), join(site.site, 'models', 'raw-grey'), { recursive: true });
    // The demo stream: colour pictures of other sizes and aspect ratios, as `start --demo DIR` ships them.
    const dir = join(root, 'pictures');
    mkdirSync(dir);
    [[13, 9], [8, 8], [7, 15], [40, 30], [5, 5], [21, 11]].forEach(([w, h], i) => {
      demoFiles.push(colourPng(w!, h!, 100 + i));
      writeFileSync(join(dir, `p${i}.png`), demoFiles[i]!);
    });
    writeDemoStream(site.site, readDemoSource(dir));
    context = await launch(site.root);
    page = await context.newPage();
    page.on('request', (r) => {
      if (r.method() === 'POST' && r.url().includes('/api/v1/inferences')) posts.push(r.url());
    });
    await page.goto(`${site.kioskUrl}?workers=1&bundle=models/colour/latest.json`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    deviceId = await enrollKiosk(page, site.ws, 'kiosk-colour');
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
  });

  it('the demo stream: each frame is the Node reference’s image and tensor, and the backend stores its float label', async () => {
    expect(await page.textContent('#input-spec')).toBe('3×8×8 NHWC RGB, (pixel/255 − [0.49, 0.48, 0.45]) / [0.25, 0.24, 0.26], center-crop');
    expect(await page.textContent('#demo-what')).toBe('6 image files');
    const count = 8; // loops: frames 6 and 7 are pictures 0 and 1 again
    await page.fill('#demo-count', String(count));
    await page.click('#demo-start');
    await page.waitForSelector(`#outbox[data-delivered="${count}"]`, { timeout: 10 * 60_000 });
    const frames = await kioskFrames(page);
    const stored = new Map((await decrypted(site.ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
    expect(frames).toHaveLength(count);
    for (const [i, frame] of frames.entries()) {
      const expected = await reference(demoFiles[i % demoFiles.length]!);
      expect({ i, source: frame.source, pixels: frame.pixels, sha256: frame.inputSha256, label: stored.get(frame.idempotencyKey) }).toEqual({ i, source: 'demo', ...expected });
    }
    // The preview is the 8×8 colour image the model saw.
    expect(await page.evaluate(() => {
      const canvas = document.getElementById('input-preview') as HTMLCanvasElement;
      return [canvas.width, canvas.height];
    })).toEqual([8, 8]);
  });

  it('dropped files go through the same spec; what does not decode is refused visibly and nothing is sent', async () => {
    const before = (await kioskFrames(page)).length;
    const file = colourPng(33, 17, 7);
    await page.setInputFiles('#file-input', { name: 'wide.png', mimeType: 'image/png', buffer: file });
    await page.waitForFunction((n) => (globalThis as unknown as { sealedEdgeKiosk: { frameCount: number } }).sealedEdgeKiosk.frameCount > n, before);
    await page.waitForSelector('#outbox[data-pending="0"]', { timeout: 2 * 60_000 });
    const frame = (await kioskFrames(page)).at(-1)!;
    const stored = new Map((await decrypted(site.ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
    expect({ pixels: frame.pixels, sha256: frame.inputSha256, label: stored.get(frame.idempotencyKey) }).toEqual(await reference(file));
    const postsBefore = posts.length;
    await page.setInputFiles('#file-input', { name: 'cut.png', mimeType: 'image/png', buffer: file.subarray(0, 60) });
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toBe('cut.png was not classified: not an image this browser can decode (type: image/png)');
    expect((await kioskFrames(page)).length).toBe(before + 1);
    expect(posts.length).toBe(postsBefore);
  });

  it('a camera that delivers no frame is a clear error on screen, and nothing is sent', async () => {
    const before = (await kioskFrames(page)).length;
    const postsBefore = posts.length;
    await page.evaluate(() => {
      // A camera that never presents a frame: a canvas stream nobody draws on.
      const stream = document.createElement('canvas').captureStream(0);
      navigator.mediaDevices.getUserMedia = async () => stream;
      (globalThis as unknown as { sealedEdgeKiosk: { camera: { timeoutMs: number } } }).sealedEdgeKiosk.camera.timeoutMs = 1000;
    });
    await page.click('#camera-start');
    await page.waitForSelector('#state[data-state="error"]', { timeout: 60_000 });
    expect(await page.textContent('#error')).toBe('A frame failed: the camera delivered no frame in 1 s');
    expect((await kioskFrames(page)).length).toBe(before);
    expect(posts.length).toBe(postsBefore);
  });

  it('a one-channel model that expects raw 0–255 pixels: 100 distinct digits, each the Node reference’s tensor and float label', async () => {
    const digits = join(root, 'digits.idx');
    writeDemoStream(site.site, readDemoSource(digits));
    await page.goto(`${site.kioskUrl}?workers=1&bundle=models/raw-grey/latest.json`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.textContent('#input-spec')).toBe('1×12×12 NCHW grey, (pixel − 0) / 1, resize');
    const count = 100;
    const before = (await kioskFrames(page)).length;
    const delivered = Number(await page.getAttribute('#outbox', 'data-delivered'));
    await page.fill('#demo-count', String(count));
    await page.click('#demo-start');
    await page.waitForSelector(`#outbox[data-delivered="${delivered + count}"]`, { timeout: 10 * 60_000 });
    const frames = (await kioskFrames(page)).slice(before);
    expect(frames).toHaveLength(count);
    const stored = new Map((await decrypted(site.ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
    const images = readImageSet(demoDigitsIdx(100));
    const seen = frames.map((f) => ({ pixels: f.pixels, sha256: f.inputSha256, label: stored.get(f.idempotencyKey) }));
    const expected = [];
    for (let i = 0; i < count; i++) expected.push(await reference(images.at(i), RAW, rawModel));
    expect(seen).toEqual(expected);
    // The labels are not all one class: the test would not notice a constant input otherwise.
    expect(new Set(expected.map((e) => e.label)).size).toBeGreaterThan(1);
  });
});
