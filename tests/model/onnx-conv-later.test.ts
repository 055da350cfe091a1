import { describe, expect, it } from 'vitest';
import { floatEvaluate } from '../../src/he/reference';
import { ModelError } from '../../src/model/errors';
import { type OnnxSplit, splitOnnx, splitPoints } from '../../src/model/onnx';
import { batchNorm, channelsFirst, cntkClassifier, linear, maxRelativeDiff, ModelBuilder, randomInput, run, softmaxRows, square, summary } from './onnx-builder';

const TOLERANCE = 1e-4;

/**
 * The head at `split` in float — floatEvaluate, the float model by definition, on the
 * extractor's output or (no extractor) the input, transposed to C×H×W for an 'nhwc'
 * head as the device does — against onnxruntime on the whole model, for inputs drawn
 * from each seed.
 */
async function check(model: Uint8Array, dims: number[], split: string, options: { softmax?: boolean; seeds?: number[] } = {}): Promise<OnnxSplit> {
  const result = splitOnnx(model, { split });
  const samples = dims[0]!;
  for (const seed of options.seeds ?? [1, 2, 3]) {
    const x = randomInput(seed, dims);
    const original = await run(model, x, dims);
    const features = result.extractor === null ? x : (await run(result.extractor, x, dims)).data;
    const size = features.length / samples;
    const scores = Float64Array.from(
      [...Array(samples).keys()].flatMap((s) => {
        const sample = features.subarray(s * size, (s + 1) * size);
        return Array.from(floatEvaluate(result.head, result.layout === 'nhwc' ? channelsFirst(sample, dims.slice(1) as [number, number, number]) : sample));
      }),
    );
    expect(maxRelativeDiff(original.data, options.softmax ? softmaxRows(scores, samples) : scores)).toBeLessThan(TOLERANCE);
  }
  return result;
}

function refused(bytes: Uint8Array, split: string, message: RegExp) {
  let error: unknown;
  try {
    splitOnnx(bytes, { split });
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ModelError);
  expect(error).toMatchObject({ code: 'E_UNSUPPORTED', message: expect.stringMatching(message) });
}

/**
 * PyTorch: input 3×11×9 → conv1 (3→5, 3×3, stride 2, pads 1) → x² → conv2 (5→7, 3×3,
 * pads [1, 0, 1, 1]) → BatchNormalization → x² → AveragePool 2×2 (drops the last row) →
 * Flatten → Gemm; with `poolFirst`, the pool comes right after the batch norm instead.
 */
function pytorchModel(options: { poolFirst?: boolean } = {}) {
  const b = new ModelBuilder(61);
  const x = b.input('input', ['N', 3, 11, 9]);
  let t = b.node('Conv', [x, b.random([5, 3, 3, 3], 0.5), b.random([5], 0.2)], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, { name: '/features/conv1/Conv' });
  t = square(b, t, '/features/act1/Mul');
  t = b.node('Conv', [t, b.random([7, 5, 3, 3], 0.3), b.random([7], 0.2)], { kernel_shape: [3, 3], pads: [1, 0, 1, 1] }, { name: '/features/conv2/Conv' });
  t = batchNorm(b, t, 7, '/features/bn2/BatchNormalization');
  const pool = (input: string) => b.node('AveragePool', [input], { kernel_shape: [2, 2], strides: [2, 2] }, { name: '/features/pool/AveragePool' });
  if (options.poolFirst) t = pool(t);
  t = square(b, t, '/features/act2/Mul');
  if (!options.poolFirst) t = pool(t);
  t = b.node('Flatten', [t], { axis: 1 }, { name: '/features/flatten/Flatten' });
  return b.build(linear(b, t, 42, 4, '/classifier/fc/Gemm'));
}

/**
 * tf2onnx writing Keras before its transpose optimizer: NHWC input; each Conv (SAME_UPPER)
 * between Transposes to NCHW and back; the second conv's bias an NHWC Add, its batch norm
 * in NCHW between Transposes; Pow activations in NHWC; AveragePool in NCHW; a Reshape of
 * computed shape; MatMul + Add; Softmax.
 */
function tf2onnxModel() {
  const b = new ModelBuilder(62);
  const nchw = (t: string, name: string) => b.node('Transpose', [t], { perm: [0, 3, 1, 2] }, { name });
  const nhwc = (t: string, name: string) => b.node('Transpose', [t], { perm: [0, 2, 3, 1] }, { name });
  const x = b.input('input_1', ['unk__9', 11, 9, 3]);
  let t = nchw(x, 'sequential/conv2d/BiasAdd__6');
  t = b.node('Conv', [t, b.random([5, 3, 3, 3], 0.5), b.random([5], 0.1)], { kernel_shape: [3, 3], strides: [2, 2], dilations: [1, 1], auto_pad: { s: 'SAME_UPPER' } }, { name: 'sequential/conv2d/BiasAdd' });
  t = b.node('Pow', [nhwc(t, 'sequential/conv2d/BiasAdd__12'), b.init([], [2])], {}, { name: 'sequential/conv2d/square' });
  t = nchw(t, 'sequential/conv2d_1/Conv2D__16');
  t = b.node('Conv', [t, b.random([7, 5, 3, 3], 0.3)], { kernel_shape: [3, 3], strides: [1, 1], dilations: [1, 1], auto_pad: { s: 'SAME_UPPER' } }, { name: 'sequential/conv2d_1/Conv2D' });
  t = b.node('Add', [nhwc(t, 'sequential/conv2d_1/Conv2D__20'), b.random([7], 0.2)], {}, { name: 'sequential/conv2d_1/BiasAdd' });
  t = nhwc(batchNorm(b, nchw(t, 'sequential/batch_normalization/FusedBatchNormV3__24'), 7, 'sequential/batch_normalization/FusedBatchNormV3'), 'sequential/batch_normalization/FusedBatchNormV3__28');
  t = b.node('Pow', [t, b.init([], [2])], {}, { name: 'sequential/conv2d_1/square' });
  t = b.node('AveragePool', [nchw(t, 'sequential/average_pooling2d/AvgPool__32')], { kernel_shape: [2, 2], strides: [2, 2], auto_pad: { s: 'VALID' } }, { name: 'sequential/average_pooling2d/AvgPool' });
  t = nhwc(t, 'sequential/average_pooling2d/AvgPool__36');
  const shape = b.node('Shape', [t], {}, { name: 'sequential/flatten/Shape' });
  const batch = b.node('Gather', [shape, b.ints([0])], { axis: 0 }, { name: 'sequential/flatten/strided_slice' });
  t = b.node('Reshape', [t, b.node('Concat', [batch, b.ints([-1])], { axis: 0 }, { name: 'sequential/flatten/Reshape/shape_Concat' })], {}, { name: 'sequential/flatten/Reshape' });
  t = b.node('MatMul', [t, b.random([42, 6], 0.3)], {}, { name: 'sequential/dense/MatMul' });
  t = b.node('Add', [t, b.random([6], 0.2)], {}, { name: 'sequential/dense/BiasAdd' });
  return b.build(b.node('Softmax', [t], { axis: -1 }, { name: 'sequential/dense/Softmax', output: 'dense' }));
}

/**
 * CNTK: a batch of one; Convs without bias and with explicit asymmetric pads, the first
 * bias a Plus, a BatchNormalization after the second; Square as Mul; AveragePool with
 * count_include_pad=1; CNTK's Reshape + W·x classifier.
 */
function cntkModel() {
  const b = new ModelBuilder(63);
  const x = b.input('Input3', [1, 3, 11, 9]);
  let t = b.node('Conv', [x, b.random([5, 3, 3, 2], 0.5)], { kernel_shape: [3, 2], strides: [2, 1], pads: [1, 0, 1, 1], group: 1, dilations: [1, 1] }, { name: 'Convolution28' });
  t = b.node('Add', [t, b.random([5, 1, 1], 0.2)], {}, { name: 'Plus30' });
  t = b.node('Mul', [t, t], {}, { name: 'Square32' });
  t = b.node('Conv', [t, b.random([7, 5, 3, 3], 0.3)], { kernel_shape: [3, 3], strides: [1, 2], pads: [0, 1, 0, 1], group: 1, dilations: [1, 1] }, { name: 'Convolution40' });
  t = batchNorm(b, t, 7, 'BatchNormalization42');
  t = b.node('Mul', [t, t], {}, { name: 'Square44' });
  t = b.node('AveragePool', [t], { kernel_shape: [2, 2], strides: [2, 2], pads: [0, 0, 0, 1], count_include_pad: 1 }, { name: 'Pooling66' });
  return b.build(cntkClassifier(b, t, 42));
}

describe('convolutions after the first encrypted layer: conv → x² → conv → batch norm → x² → pool → dense, float head = onnxruntime', () => {
  it('PyTorch style (NCHW), at --split input and after the first conv block', async () => {
    const model = pytorchModel();
    const whole = await check(model, [3, 3, 11, 9], 'input');
    expect(summary(whole.head)).toEqual([
      'conv 3×11×9 → 5, kernel 3×3, stride 2×2, pads [1, 1, 1, 1]',
      'poly [0, 0, 1]',
      'conv 5×6×5 → 7, kernel 3×3, stride 1×1, pads [1, 0, 1, 1]',
      'poly [0, 0, 1]',
      'dense 168→4',
    ]);
    const later = await check(model, [3, 3, 11, 9], '/features/act1/Mul');
    expect(later).toMatchObject({ layout: 'nchw', features: { name: 'features', shape: ['N', 5, 6, 5] } });
    expect(summary(later.head)).toEqual(summary(whole.head).slice(2));
  });

  it('PyTorch style, the pool right after the second conv (batch norm between): it merges into that conv', async () => {
    const split = await check(pytorchModel({ poolFirst: true }), [3, 3, 11, 9], 'input');
    expect(summary(split.head)).toEqual([
      'conv 3×11×9 → 5, kernel 3×3, stride 2×2, pads [1, 1, 1, 1]',
      'poly [0, 0, 1]',
      'conv 5×6×5 → 7, kernel 4×4, stride 2×2, pads [1, 0, 1, 1]',
      'poly [0, 0, 1]',
      'dense 42→4',
    ]);
  });

  it('tf2onnx style (NHWC input, Transposes around every layer), at --split input and after the first conv block', async () => {
    const model = tf2onnxModel();
    const whole = await check(model, [3, 11, 9, 3], 'input', { softmax: true });
    expect(whole.layout).toBe('nhwc');
    expect(summary(whole.head)).toEqual([
      'conv 3×11×9 → 5, kernel 3×3, stride 2×2, pads [1, 1, 1, 1]',
      'poly [0, 0, 1]',
      'conv 5×6×5 → 7, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]',
      'poly [0, 0, 1]',
      'dense 210→6',
    ]);
    const later = await check(model, [3, 11, 9, 3], 'sequential/conv2d/square', { softmax: true });
    expect(later).toMatchObject({ layout: 'nchw', features: { name: 'features', shape: ['unk__9', 5, 6, 5] } });
    expect(summary(later.head)).toEqual(summary(whole.head).slice(2));
  });

  it('CNTK style (batch of one, Plus, W·x), at --split input and after the first conv block', async () => {
    const model = cntkModel();
    const seeds = [1, 2, 3, 4, 5];
    const whole = await check(model, [1, 3, 11, 9], 'input', { seeds });
    expect(summary(whole.head)).toEqual([
      'conv 3×11×9 → 5, kernel 3×2, stride 2×1, pads [1, 0, 1, 1]',
      'poly [0, 0, 1]',
      'conv 5×6×9 → 7, kernel 3×3, stride 1×2, pads [0, 1, 0, 1]',
      'poly [0, 0, 1]',
      'dense 140→12',
      'poly [0, 2, 1]',
      'dense 12→5',
    ]);
    const later = await check(model, [1, 3, 11, 9], 'Square32', { seeds });
    expect(summary(later.head)).toEqual(summary(whole.head).slice(2));
  });

  it('splitPoints offers the splits before a later conv block, and --split input', () => {
    expect(splitPoints(pytorchModel())).toEqual(['input', '/features/act1/Mul', '/features/act2/Mul', '/features/pool/AveragePool', '/features/flatten/Flatten']);
    expect(splitPoints(cntkModel())).toEqual(['input', 'Square32', 'Square44', 'Pooling66', 'Times212_reshape0', 'Activation216', 'Times230_reshape1']);
  });
});

/** input 2×10×8 → conv1 (2→3, 3×3, pads 1) → `between` → conv2 (3→4, `conv2`) → x² → Flatten (→ Gemm: `finish`). */
function twoConvs(between: (b: ModelBuilder, t: string) => string, conv2: { kernel: [number, number]; pads?: number[]; strides?: number[] }) {
  const b = new ModelBuilder(64);
  const x = b.input('image', ['N', 2, 10, 8]);
  let t = b.node('Conv', [x, b.random([3, 2, 3, 3], 0.5), b.random([3], 0.2)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv1' });
  t = between(b, t);
  t = b.node('Conv', [t, b.random([4, 3, ...conv2.kernel], 0.4), b.random([4], 0.2)], { kernel_shape: conv2.kernel, pads: conv2.pads ?? [0, 0, 0, 0], strides: conv2.strides ?? [1, 1] }, { name: 'conv2' });
  t = b.node('Flatten', [square(b, t, 'act2')], {}, { name: 'flatten' });
  return { b, t };
}

/** The model ended with the Gemm, its width read off a run of the model up to the Flatten. */
async function finish({ b, t }: { b: ModelBuilder; t: string }): Promise<Uint8Array> {
  const width = (await run(b.build(t), randomInput(1, [1, 2, 10, 8]), [1, 2, 10, 8])).dims[1]!;
  return b.build(linear(b, t, width, 3, 'fc'));
}

const DIMS = [3, 2, 10, 8];
const pool = (b: ModelBuilder, t: string, attrs: Record<string, number[] | number>) => b.node('AveragePool', [t], attrs, { name: 'pool' });

describe('linear maps between two convolutions compose into one where exact', () => {
  it('an AveragePool between the activation and the next conv: merges into it when its windows tile the input (with or without padding in the conv)', async () => {
    // 10×8 pooled 2×2 / 2 is exact, windows and all; the padded 3×3 conv then reads 2 rows of zeros per padded row.
    const padded = await check(await finish(twoConvs((b, t) => pool(b, square(b, t, 'act1'), { kernel_shape: [2, 2], strides: [2, 2] }), { kernel: [3, 3], pads: [1, 1, 1, 1] })), DIMS, 'input');
    expect(summary(padded.head).slice(1, 3)).toEqual(['poly [0, 0, 1]', 'conv 3×10×8 → 4, kernel 6×6, stride 2×2, pads [2, 2, 2, 2]']);
    // Split right before the pool, the merged conv is the first encrypted layer.
    const atPool = await check(await finish(twoConvs((b, t) => pool(b, square(b, t, 'act1'), { kernel_shape: [2, 2], strides: [2, 2] }), { kernel: [3, 3], pads: [1, 1, 1, 1] })), DIMS, 'act1');
    expect(summary(atPool.head)[0]).toBe('conv 3×10×8 → 4, kernel 6×6, stride 2×2, pads [2, 2, 2, 2]');
    // An unpadded conv reads no padding: any pool composes, overlapping windows and a dropped last row included.
    const overlapping = await check(await finish(twoConvs((b, t) => pool(b, square(b, t, 'act1'), { kernel_shape: [3, 2], strides: [2, 1] }), { kernel: [2, 3], strides: [1, 2] })), DIMS, 'input');
    expect(summary(overlapping.head).slice(1, 3)).toEqual(['poly [0, 0, 1]', 'conv 3×10×8 → 4, kernel 5×4, stride 2×2, pads [0, 0, 0, 0]']);
    // A per-channel affine map after the pool (a batch norm) folds in too.
    const normalized = await check(
      await finish(twoConvs((b, t) => batchNorm(b, pool(b, square(b, t, 'act1'), { kernel_shape: [2, 2], strides: [2, 2] }), 3, 'bn'), { kernel: [2, 2] })),
      DIMS,
      'input',
    );
    expect(summary(normalized.head).slice(1, 3)).toEqual(['poly [0, 0, 1]', 'conv 3×10×8 → 4, kernel 4×4, stride 2×2, pads [0, 0, 0, 0]']);
  });

  it('a conv right after a conv (a batch norm between, no activation) composes with it when the second reads no padding', async () => {
    const oneByOne = await check(await finish(twoConvs((_, t) => t, { kernel: [1, 1] })), DIMS, 'input');
    expect(summary(oneByOne.head).slice(0, 2)).toEqual(['conv 2×10×8 → 4, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]', 'poly [0, 0, 1]']);
    const strided = await check(await finish(twoConvs((b, t) => batchNorm(b, t, 3, 'bn1'), { kernel: [3, 2], strides: [2, 2] })), DIMS, 'input');
    expect(summary(strided.head).slice(0, 2)).toEqual(['conv 2×10×8 → 4, kernel 5×4, stride 2×2, pads [1, 1, 0, 1]', 'poly [0, 0, 1]']);
  });

  it('a per-channel scale and shift after the activation fold into an unpadded next conv', async () => {
    const split = await check(await finish(twoConvs((b, t) => batchNorm(b, square(b, t, 'act1'), 3, 'bn1'), { kernel: [3, 3], strides: [2, 1] })), DIMS, 'input');
    expect(summary(split.head).slice(1, 3)).toEqual(['poly [0, 0, 1]', 'conv 3×10×8 → 4, kernel 3×3, stride 2×1, pads [0, 0, 0, 0]']);
  });
});

describe('convolutions after the first encrypted layer: what is refused names the node and the remedy', () => {
  it('a pool that drops a last row before a padded conv; the remedy imports', async () => {
    const b = new ModelBuilder(65);
    const x = b.input('image', ['N', 2, 9, 8]);
    let t = b.node('Conv', [x, b.random([3, 2, 3, 3], 0.5), b.random([3], 0.2)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv1' });
    t = pool(b, square(b, t, 'act1'), { kernel_shape: [2, 2], strides: [2, 2] });
    t = b.node('Conv', [t, b.random([4, 3, 3, 3], 0.4)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv2' });
    const model = b.build(linear(b, b.node('Flatten', [square(b, t, 'act2')]), 4 * 4 * 4, 3, 'fc'));
    refused(
      model,
      'input',
      /^node 'pool' \(AveragePool\) averages the activations that node 'conv2' \(Conv\) reads, and the two do not compose exactly: .*the pool drops a last row or column.*: pool right after the convolution before the activation, export the convolution without padding, or split after it \(--split pool\) so that the convolution is the first encrypted layer$/,
    );
    expect(summary((await check(model, [3, 2, 9, 8], 'pool')).head)[0]).toBe('conv 3×4×4 → 4, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]');
  });

  it('a pool that leaves padding out of its averages (count_include_pad 0), or two pools in a row, before a conv', async () => {
    const model = await finish(twoConvs((b, t) => pool(b, square(b, t, 'act1'), { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }), { kernel: [2, 2] }));
    refused(model, 'input', /^node 'pool' \(AveragePool\) averages the activations that node 'conv2' \(Conv\) reads, but not as one window average per channel .*: pool right after the convolution before the activation, or split after it \(--split pool\)/);
    const twoPools = await finish(
      twoConvs((b, t) => b.node('AveragePool', [pool(b, square(b, t, 'act1'), { kernel_shape: [2, 2], strides: [1, 1] })], { kernel_shape: [2, 2], strides: [2, 2] }, { name: 'pool2' }), { kernel: [2, 2] }),
    );
    refused(twoPools, 'input', /^node 'pool2' \(AveragePool\) averages the activations that node 'conv2' \(Conv\) reads, but not as one window average per channel .*split after it \(--split pool2\)/);
  });

  it('a padded conv right after a conv; the remedy imports', async () => {
    const model = await finish(twoConvs((b, t) => batchNorm(b, t, 3, 'bn1'), { kernel: [3, 3], pads: [1, 1, 1, 1] }));
    refused(
      model,
      'input',
      /^node 'conv2' \(Conv\) follows the convolution before it with no activation between them, and the two compose into one convolution only when it reads none of its zero padding: export it without padding, put an activation between them, or split after node 'bn1' \(BatchNormalization\) \(--split bn1\) so that it is the first encrypted layer$/,
    );
    expect(summary((await check(model, DIMS, 'bn1')).head)[0]).toBe('conv 3×10×8 → 4, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]');
  });

  it('a conv right after a dense layer', () => {
    const b = new ModelBuilder(66);
    let t = linear(b, b.input('x', ['N', 12]), 12, 18, 'fc1');
    t = b.node('Reshape', [t, b.ints([-1, 2, 3, 3])], {}, { name: 'to_image' });
    t = b.node('Conv', [t, b.random([2, 2, 2, 2], 0.5)], { kernel_shape: [2, 2] }, { name: 'conv' });
    refused(b.build(linear(b, b.node('Flatten', [t]), 8, 3, 'fc2')), 'input', /^node 'conv' \(Conv\) follows a dense layer with no activation between them: put an activation between them, or split after node 'to_image' \(Reshape\) \(--split to_image\) so that it is the first encrypted layer$/);
  });

  it('a per-channel shift after the activation before a padded conv; per-position constants before a conv', async () => {
    const shifted = await finish(twoConvs((b, t) => batchNorm(b, square(b, t, 'act1'), 3, 'bn1'), { kernel: [3, 3], pads: [0, 1, 0, 0] }));
    refused(
      shifted,
      'input',
      /^node 'conv2' \(Conv\) reads the activation's outputs shifted per channel \(a batch norm after the activation, say\) and reads zero padding, which stays unshifted: move the shift before the activation, export the convolution without padding, or split after node 'bn1' \(BatchNormalization\) \(--split bn1\) so that it is the first encrypted layer$/,
    );
    const perPosition = await finish(twoConvs((b, t) => b.node('Mul', [square(b, t, 'act1'), b.random([1, 1, 10, 8], 1)], {}, { name: 'scale' }), { kernel: [3, 3] }));
    refused(perPosition, 'input', /^node 'conv2' \(Conv\) reads the activation's outputs scaled or shifted differently across the positions of a channel: only per-channel constants fold into a convolution; split after node 'scale' \(Mul\) \(--split scale\)/);
  });

  it('a conv reading the activations transposed', async () => {
    const model = await finish(twoConvs((b, t) => b.node('Transpose', [square(b, t, 'act1')], { perm: [0, 1, 3, 2] }, { name: 'swap' }), { kernel: [3, 3] }));
    refused(model, 'input', /^node 'conv2' \(Conv\) reads '.*' transposed from the order the layer before it produces \(channels first, C×H×W\): undo the transpose before the convolution, or split after node 'swap' \(Transpose\)/);
  });
});
