// The trained colour model through the kiosk (issue 13): models/colour-poly-square.onnx
// protected with its per-channel normalization flags (models/colour-poly-square.input.json)
// and --calibration tests/fixtures/colour-shapes/, the default split (the 512→64→x²→64→10
// head encrypted), the kiosk's demo stream the fixture's 200 PNG files as `start --demo DIR`
// ships them, the HE workers as the kiosk sets them by default (auto mode: frames may run
// one per worker and complete out of order). Each frame's input tensor is the Node
// reference's of one fixture image, and the backend stores onnxruntime-node's float label
// of that image (labels.json), results joined to frames by idempotency key.
// NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core; skipped, loudly, without.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkInputSpec, type InputSpec } from '../../src/model/input-spec';
import { preprocess } from '../../src/model/preprocess';
import { decodeImageFile } from '../../src/node/images';
import { decrypted } from '../backend/helpers';
import { argmax, COLOUR_FIXTURE, COLOUR_MODEL, COLOUR_SPEC_FILE, fixtureLabels } from '../model/colour-fixture';
import { buildSite, COLOUR_ID, enrollKiosk, hasChromium, kioskFrames, launch, protectColour, type Site } from './kiosk';

if (!hasChromium) console.warn('tests/browser/colour-trained.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

/** Demo frames streamed: every fixture image once (under a minute on 2 cores; the float labels' smallest top-2 margin is 0.43). */
const COUNT = 200;

interface Reference {
  /** SHA-256 of the float32 input tensor, as the kiosk records it. */
  sha256: string;
  /** onnxruntime-node's label of that tensor on the original ONNX model. */
  label: number;
}

/** The Node reference of every fixture image: src/model/preprocess.ts, then onnxruntime-node on the whole model. */
async function references(spec: InputSpec, files: string[]): Promise<Reference[]> {
  const session = await ort.InferenceSession.create(COLOUR_MODEL);
  try {
    const out: Reference[] = [];
    for (const file of files) {
      const { tensor, shape } = preprocess(spec, decodeImageFile(join(COLOUR_FIXTURE, file)));
      const scores = (await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', tensor, shape) }))[session.outputNames[0]!]!.data as Float32Array;
      out.push({ sha256: createHash('sha256').update(Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength)).digest('hex'), label: argmax(scores) });
    }
    return out;
  } finally {
    await session.release();
  }
}

describe.skipIf(!hasChromium)('the trained colour model through the kiosk', () => {
  let root: string;
  let site: Site;
  let context: BrowserContext;
  let page: Page;
  let deviceId: string;
  const labels = fixtureLabels();
  const spec = checkInputSpec((JSON.parse(readFileSync(COLOUR_SPEC_FILE, 'utf8')) as { inputSpec: InputSpec }).inputSpec);

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sealed-edge-colour-trained-'));
    site = await buildSite({ model: await protectColour(root), demo: COLOUR_FIXTURE });
    context = await launch(site.root);
    page = await context.newPage();
    await page.goto(`${site.kioskUrl}?bundle=models/${COLOUR_ID}/latest.json`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    deviceId = await enrollKiosk(page, site.ws, 'kiosk-colour-trained');
  }, 5 * 60_000);

  afterAll(async () => {
    await context?.close();
    await site?.close();
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
  });

  it(`${COUNT} fixture images from the demo stream: each frame is one image's reference tensor, and the backend stores its onnxruntime-node float label`, async () => {
    expect(await page.textContent('#input-spec')).toBe('3×32×32 NCHW RGB, (pixel/255 − [0.4027, 0.4554, 0.5021]) / [0.2206, 0.2314, 0.2655], center-crop');
    expect(await page.textContent('#demo-what')).toBe('200 image files');
    // The reference: src/model/preprocess.ts + onnxruntime-node gives labels.json's float labels (training's float32 preprocessing).
    const refs = await references(spec, labels.images.map((i) => i.file));
    expect(refs.map((r) => r.label)).toEqual(labels.images.map((i) => i.floatLabel));
    const bySha = new Map(refs.map((r, i) => [r.sha256, i]));
    expect(bySha.size).toBe(refs.length);

    await page.fill('#demo-count', String(COUNT));
    await page.click('#demo-start');
    await page.waitForSelector(`#outbox[data-delivered="${COUNT}"]`, { timeout: 5 * 60_000 });
    const frames = await kioskFrames(page);
    const stored = await decrypted(site.ws.store, { deviceId, timeoutMs: 60_000 });
    expect(frames).toHaveLength(COUNT);
    expect(stored).toHaveLength(COUNT);
    const labelOf = new Map(stored.map((r) => [r.idempotencyKey, r.label]));
    // Which image each frame was, by its input tensor: each of the demo stream's images once.
    const images = frames.map((f) => bySha.get(f.inputSha256));
    expect([...images].sort((a, b) => a! - b!)).toEqual(Array.from({ length: COUNT }, (_, i) => i));
    const seen = frames.map((f, k) => ({ image: labels.images[images[k]!]!.file, source: f.source, label: labelOf.get(f.idempotencyKey) }));
    const want = frames.map((_, k) => ({ image: labels.images[images[k]!]!.file, source: 'demo', label: labels.images[images[k]!]!.floatLabel }));
    expect(seen).toEqual(want);
    // Every class is among them: a constant input or output would not pass.
    expect(new Set(want.map((w) => w.label)).size).toBe(10);
    const modes = new Set(frames.map((f) => f.mode));
    console.log(`colour model in the kiosk: ${COUNT} frames, median ${frames.map((f) => f.totalMs).sort((a, b) => a - b)[COUNT / 2]!.toFixed(0)} ms, modes ${[...modes].join(', ')}; ${await page.textContent('#workers')}`);
  }, 5 * 60_000);
});
