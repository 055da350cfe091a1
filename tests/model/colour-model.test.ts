// The colour model (models/colour-poly-square.onnx, trained by training/ on the synthetic
// colour set of training/colour_data.py) and its test images (tests/fixtures/colour-shapes).
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { floatEvaluate } from '../../src/he/reference';
import { importOnnx, splitOnnx } from '../../src/model/onnx';
import { onnx } from '../../src/model/proto';
import {
  argmax,
  COLOUR_FIXTURE,
  COLOUR_MODEL,
  COLOUR_SPEC_FILE,
  colourSpec,
  fixtureImages,
  fixtureLabels,
  floatLogits,
  generateColour,
  PIXELS,
  preprocessColour,
} from './colour-fixture';
import { evaluateHead } from './onnx-builder';

const model = new Uint8Array(readFileSync(COLOUR_MODEL));
const metrics = JSON.parse(readFileSync(COLOUR_MODEL.replace(/\.onnx$/, '.json'), 'utf8')) as { testAccuracy: number; inputSpec: unknown; onnx: { sha256: string } };
const labels = fixtureLabels();
const images = fixtureImages(labels);
const scratch = mkdtempSync(join(tmpdir(), 'sealed-edge-colour-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const kinds = (head: ReturnType<typeof splitOnnx>['head']) => head.map((l) => (l.kind === 'poly' ? l.coeffs : l.kind === 'dense' ? [l.inputs, l.outputs] : l.kind));
const relative = (want: ArrayLike<number>, got: ArrayLike<number>) => {
  let worst = 0;
  for (let k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs(want[k]! - got[k]!) / Math.max(1, Math.abs(want[k]!)));
  return worst;
};

describe('the colour test images (tests/fixtures/colour-shapes)', () => {
  it('are 200 PNG files of 32×32 RGB, under 1 MB in all, 20 of each class', () => {
    expect(labels.images.length).toBe(200);
    expect(labels.images.map((i) => i.file)).toEqual(readdirSync(COLOUR_FIXTURE).filter((f) => f.endsWith('.png')).sort());
    const bytes = readdirSync(COLOUR_FIXTURE).reduce((sum, f) => sum + statSync(join(COLOUR_FIXTURE, f)).size, 0);
    expect(bytes).toBeLessThan(1 << 20);
    expect(images.every((rgb) => rgb.length === PIXELS)).toBe(true);
    for (let c = 0; c < 10; c++) expect(labels.images.filter((i) => i.label === c).length).toBe(20);
  });

  it('are what training/colour_data.py generates, byte for byte (the generator is deterministic)', (context) => {
    const made = generateColour('test', labels.start, labels.images.length, scratch);
    if (made === null) return context.skip(); // no Debian numpy (CI installs it: training/install.sh)
    expect(made.labels).toEqual(labels.images.map((i) => i.label));
    made.images.forEach((rgb, i) => expect(Buffer.from(rgb).equals(Buffer.from(images[i]!)), labels.images[i]!.file).toBe(true));
  });

  it("carry the committed model's float labels from onnxruntime-node", async () => {
    expect(labels.floatLabelsFrom?.sha256).toBe(createHash('sha256').update(model).digest('hex'));
    const logits = await floatLogits(model, images, colourSpec());
    expect(logits.map(argmax)).toEqual(labels.images.map((i) => i.floatLabel));
  });
});

describe(COLOUR_MODEL, () => {
  it('records its input spec beside it, in its metrics and in its metadata, all equal', () => {
    const file = JSON.parse(readFileSync(COLOUR_SPEC_FILE, 'utf8')) as { inputSpec: Record<string, unknown>; protectFlags: string };
    const meta = Object.fromEntries(onnx.ModelProto.decode(model).metadataProps.map((p) => [p.key, p.value]));
    expect(file.inputSpec).toMatchObject({ channels: 3, height: 32, width: 32, layout: 'nchw', scale: 255, fit: 'center-crop', digitize: false });
    expect(JSON.parse(meta['sealed-edge.input-spec']!)).toEqual(file.inputSpec);
    expect(metrics.inputSpec).toEqual(file.inputSpec);
    expect(metrics.onnx.sha256).toBe(createHash('sha256').update(model).digest('hex'));
    const spec = colourSpec();
    expect(file.protectFlags).toBe(`--channels 3 --input-size 32x32 --layout nchw --scale 255 --mean ${spec.mean.join(',')} --std ${spec.std.join(',')} --fit center-crop`);
    // the channels' statistics differ: one mean for all would not do
    expect(Math.max(...spec.mean) - Math.min(...spec.mean)).toBeGreaterThan(0.05);
  });

  it('reaches its stated test accuracy (within 2 points) on 1,000 other held-out test images', async (context) => {
    const held = generateColour('test', labels.start + labels.images.length, 1000, scratch);
    if (held === null) return context.skip();
    const logits = await floatLogits(model, held.images, colourSpec());
    const accuracy = logits.filter((l, i) => argmax(l) === held.labels[i]).length / held.images.length;
    console.log(`${COLOUR_MODEL}: ${(accuracy * 100).toFixed(1)}% on test images 200–1199 (stated: ${(metrics.testAccuracy * 100).toFixed(2)}% on all 10,000)`);
    expect(accuracy).toBeGreaterThan(metrics.testAccuracy - 0.02);
    const docs = JSON.parse(readFileSync('docs/accuracy.json', 'utf8')) as { rows: { onnx: string; testAccuracy: number }[] };
    expect(docs.rows.find((r) => r.onnx === COLOUR_MODEL)?.testAccuracy).toBe(metrics.testAccuracy);
  });

  it('imports: split automatically, the head is dense 512→64, x², 64→10; extractor + float head equal the model', async () => {
    const imported = importOnnx(model, { source: COLOUR_MODEL });
    expect(imported.input.shape).toEqual(['N', 3, 32, 32]);
    expect(imported.features.shape).toEqual(['N', 512]);
    expect(kinds(imported.head)).toEqual([[512, 64], [0, 0, 1], [64, 10]]);
    const hint = onnx.ModelProto.decode(model).metadataProps.find((p) => p.key === 'sealed-edge.split');
    expect(imported.splitTensor).toBe(hint?.value);
    const spec = colourSpec();
    const batch = images.slice(0, 50);
    const x = new Float32Array(batch.length * PIXELS);
    batch.forEach((rgb, i) => x.set(preprocessColour(rgb, spec), i * PIXELS));
    const ort = await import('onnxruntime-node');
    const extractor = await ort.InferenceSession.create(imported.extractor);
    const features = (await extractor.run({ input: new ort.Tensor('float32', x, [batch.length, 3, 32, 32]) })).features!.data as Float32Array;
    await extractor.release();
    const scores = evaluateHead(imported.head, features, batch.length);
    const want = await floatLogits(model, batch, spec);
    batch.forEach((_, i) => expect(relative(want[i]!, scores.subarray(i * 10, (i + 1) * 10))).toBeLessThan(1e-4));
  });

  it('at --split input: conv 3×32×32 → 8×16×16, x², dense 2048→64 (the pool folded), x², 64→10, equal to the model', async () => {
    const split = splitOnnx(model, { split: 'input', source: COLOUR_MODEL });
    expect(split).toMatchObject({ extractor: null, layout: 'nchw', features: { name: 'input', shape: ['N', 3, 32, 32] } });
    expect(kinds(split.head)).toEqual(['conv', [0, 0, 1], [2048, 64], [0, 0, 1], [64, 10]]);
    expect(split.head[0]).toMatchObject({ inChannels: 3, inHeight: 32, inWidth: 32, outChannels: 8, kernel: [5, 5], stride: [2, 2], pads: [2, 2, 2, 2] });
    const spec = colourSpec();
    const batch = images.slice(0, 20);
    const want = await floatLogits(model, batch, spec);
    batch.forEach((rgb, i) => {
      const scores = floatEvaluate(split.head, preprocessColour(rgb, spec));
      expect(relative(want[i]!, scores)).toBeLessThan(1e-4);
      expect(argmax(scores)).toBe(labels.images[i]!.floatLabel);
    });
  });
});
