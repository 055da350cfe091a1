import { describe, expect, it } from 'vitest';
import { type ImportOptions, importOnnx, type OnnxSplit, splitOnnx } from '../../src/model/onnx';
import { onnx } from '../../src/model/proto';
import { batchNorm, channelsFirst, cntkClassifier, evaluateHead, evaluateLayers, linear, maxRelativeDiff, ModelBuilder, randomInput, run, softmaxRows, square, summary } from './onnx-builder';

const BATCH = 3;
const TOLERANCE = 1e-4;

/**
 * The contract of `--split input`: no extractor, and the head's layers in float (the
 * image transposed to C×H×W first for an 'nhwc' head, as the device does) give what
 * onnxruntime gives for the original model. importOnnx's pass-through extractor
 * (a Transpose for 'nhwc') followed by the same head agrees too.
 */
async function checkInputSplit(model: Uint8Array, inputDims: number[], options: ImportOptions & { softmax?: boolean } = {}): Promise<OnnxSplit> {
  const split = splitOnnx(model, { ...options, split: 'input' });
  expect(split.extractor).toBeNull();
  expect(split.splitTensor).toBe(split.input.name);
  const samples = inputDims[0]!;
  const x = randomInput(17, inputDims);
  const original = await run(model, x, inputDims);
  const size = x.length / samples;
  const image = inputDims.slice(1) as [number, number, number];
  const scores = Float64Array.from(
    [...Array(samples).keys()].flatMap((s) => {
      const sample = x.subarray(s * size, (s + 1) * size);
      return Array.from(evaluateLayers(split.head, split.layout === 'nhwc' ? channelsFirst(sample, image) : sample));
    }),
  );
  const expected = options.softmax ? softmaxRows(scores, samples) : scores;
  expect(maxRelativeDiff(original.data, expected)).toBeLessThan(TOLERANCE);

  const imported = importOnnx(model, { ...options, split: 'input' });
  expect(imported.layout).toBe('nchw');
  const features = await run(imported.extractor, x, inputDims);
  const viaExtractor = evaluateHead(imported.head, features.data, samples);
  expect(maxRelativeDiff(original.data, options.softmax ? softmaxRows(viaExtractor, samples) : viaExtractor)).toBeLessThan(TOLERANCE);
  return split;
}

describe('--split input, PyTorch style (NCHW, Conv with bias, BatchNormalization, AveragePool, Flatten, Gemm)', () => {
  it('3 channels, odd sizes, asymmetric pads: batch norm folds into the conv, the pool after x² into the dense layer', async () => {
    const b = new ModelBuilder(31);
    const x = b.input('input', ['N', 3, 9, 7]);
    let t = b.node('Conv', [x, b.random([4, 3, 3, 3], 0.5), b.random([4], 0.2)], { kernel_shape: [3, 3], pads: [1, 0, 2, 1], strides: [1, 1], dilations: [1, 1], group: 1 }, { name: '/features/conv1/Conv' });
    t = batchNorm(b, t, 4, '/features/bn1/BatchNormalization');
    t = square(b, t, '/features/act1/Mul');
    t = b.node('AveragePool', [t], { kernel_shape: [2, 2], strides: [2, 2] }, { name: '/features/pool1/AveragePool' });
    t = b.node('Flatten', [t], { axis: 1 }, { name: '/features/flatten/Flatten' });
    t = linear(b, t, 60, 8, '/classifier/fc1/Gemm');
    const shifted = b.node('Add', [t, b.constant([], [2])], {}, { name: '/classifier/act/Add' });
    t = b.node('Mul', [shifted, t], {}, { name: '/classifier/act/Mul' });
    t = linear(b, t, 8, 5, '/classifier/fc2/Gemm');
    const split = await checkInputSplit(b.build(t), [BATCH, 3, 9, 7]);
    expect(summary(split.head)).toEqual(['conv 3×9×7 → 4, kernel 3×3, stride 1×1, pads [1, 0, 2, 1]', 'poly [0, 0, 1]', 'dense 240→8', 'poly [0, 2, 1]', 'dense 8→5']);
    expect(split).toMatchObject({ layout: 'nchw', input: { name: 'input', shape: ['N', 3, 9, 7] }, features: { name: 'input', shape: ['N', 3, 9, 7] } });
  });

  it('an AveragePool right after the Conv (batch norm between) merges into it: kernel and stride grow', async () => {
    for (const [size, kernel, strides, pads, pool, poolStrides] of [
      [[11, 10], [3, 4], [2, 1], [1, 2, 0, 1], [2, 3], [2, 2]],
      [[8, 8], [5, 5], [2, 2], [1, 1, 1, 1], [2, 2], [2, 2]],
      [[9, 7], [2, 3], [1, 2], [0, 1, 1, 0], [3, 1], [1, 1]],
    ] as const) {
      const b = new ModelBuilder(32);
      const x = b.input('input', ['N', 2, ...size]);
      let t = b.node('Conv', [x, b.random([3, 2, ...kernel], 0.5), b.random([3], 0.2)], { kernel_shape: [...kernel], pads: [...pads], strides: [...strides] }, { name: 'conv' });
      t = batchNorm(b, t, 3, 'bn');
      t = b.node('AveragePool', [t], { kernel_shape: [...pool], strides: [...poolStrides] }, { name: 'pool' });
      t = square(b, t, 'act');
      t = b.node('Flatten', [t], {}, { name: 'flatten' });
      const [oh, ow] = [0, 1].map((a) => Math.floor((size[a]! + pads[a]! + pads[a + 2]! - kernel[a]!) / strides[a]!) + 1);
      const [ph, pw] = [Math.floor((oh! - pool[0]) / poolStrides[0]) + 1, Math.floor((ow! - pool[1]) / poolStrides[1]) + 1];
      t = linear(b, t, 3 * ph * pw, 4, 'fc');
      const split = await checkInputSplit(b.build(t), [BATCH, 2, ...size]);
      expect(split.head.map((l) => l.kind)).toEqual(['conv', 'poly', 'dense']);
      const conv = split.head[0]!;
      if (conv.kind !== 'conv') throw new Error('unreachable');
      expect(conv.kernel).toEqual([kernel[0] + (pool[0] - 1) * strides[0], kernel[1] + (pool[1] - 1) * strides[1]]);
      expect(conv.stride).toEqual([strides[0] * poolStrides[0], strides[1] * poolStrides[1]]);
      expect(conv.pads.slice(0, 2)).toEqual(pads.slice(0, 2));
      expect(split.head[2]).toMatchObject({ inputs: 3 * ph * pw });
    }
  });

  it('a GlobalAveragePool right after the Conv merges into it (one output per map)', async () => {
    const b = new ModelBuilder(33);
    const x = b.input('input', ['N', 3, 7, 6]);
    let t = b.node('Conv', [x, b.random([5, 3, 3, 3], 0.5), b.random([5], 0.2)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] }, { name: 'conv' });
    t = b.node('GlobalAveragePool', [t], {}, { name: 'gap' });
    t = square(b, t, 'act');
    t = b.node('Flatten', [t], {}, { name: 'flatten' });
    t = linear(b, t, 5, 3, 'fc');
    const split = await checkInputSplit(b.build(t), [BATCH, 3, 7, 6]);
    expect(summary(split.head)).toEqual(['conv 3×7×6 → 5, kernel 9×7, stride 2×2, pads [1, 1, 1, 0]', 'poly [0, 0, 1]', 'dense 5→3']);
  });

  it('pools after the activation fold into the dense layer: padded (count_include_pad 0 and 1), SAME_UPPER, SAME_LOWER, ceil_mode, global', async () => {
    const pools: [string, Record<string, number | number[] | { s: string }>][] = [
      ['AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 0, 1, 2] }],
      ['AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 0, 1, 2], count_include_pad: 1 }],
      ['AveragePool', { kernel_shape: [3, 2], strides: [2, 2], auto_pad: { s: 'SAME_UPPER' } }],
      ['AveragePool', { kernel_shape: [2, 3], strides: [1, 2], auto_pad: { s: 'SAME_LOWER' } }],
      ['AveragePool', { kernel_shape: [3, 2], strides: [2, 1], ceil_mode: 1, auto_pad: { s: 'VALID' } }],
      ['GlobalAveragePool', {}],
    ];
    for (const [op, attrs] of pools) {
      const b = new ModelBuilder(34);
      const x = b.input('input', ['N', 3, 9, 8]);
      let t = b.node('Conv', [x, b.random([2, 3, 2, 3], 0.5), b.random([2], 0.2)], { kernel_shape: [2, 3], pads: [1, 1, 0, 0] }, { name: 'conv' });
      t = square(b, t, 'act');
      t = b.node(op, [t], attrs, { name: 'pool' });
      const shape = await run(b.build(t), randomInput(1, [1, 3, 9, 8]), [1, 3, 9, 8]);
      const pooled = shape.dims.slice(1).reduce((p, d) => p * d, 1);
      t = b.node('Flatten', [t], {}, { name: 'flatten' });
      t = linear(b, t, pooled, 4, 'fc');
      const split = await checkInputSplit(b.build(t), [BATCH, 3, 9, 8]);
      expect(summary(split.head).slice(1)).toEqual(['poly [0, 0, 1]', `dense ${2 * 9 * 7}→4`]);
    }
  });

  it('a pool between two activations becomes a dense layer of its own', async () => {
    const b = new ModelBuilder(35);
    const x = b.input('input', ['N', 1, 8, 8]);
    let t = b.node('Conv', [x, b.random([2, 1, 3, 3], 0.5), b.random([2], 0.2)], { kernel_shape: [3, 3] }, { name: 'conv' });
    t = square(b, t, 'act1');
    t = b.node('AveragePool', [t], { kernel_shape: [2, 2], strides: [2, 2] }, { name: 'pool' });
    t = b.node('Add', [square(b, t, 'act2'), t], {}, { name: 'act2_plus' });
    t = b.node('Flatten', [t], {}, { name: 'flatten' });
    t = linear(b, t, 18, 3, 'fc');
    const split = await checkInputSplit(b.build(t), [BATCH, 1, 8, 8]);
    expect(summary(split.head)).toEqual(['conv 1×8×8 → 2, kernel 3×3, stride 1×1, pads [0, 0, 0, 0]', 'poly [0, 0, 1]', 'dense 72→18', 'poly [0, 1, 1]', 'dense 18→3']);
  });

  it('two pools in a row compose before folding into the dense layer', async () => {
    const b = new ModelBuilder(39);
    const x = b.input('input', ['N', 2, 9, 9]);
    let t = b.node('Conv', [x, b.random([3, 2, 2, 2], 0.5), b.random([3], 0.2)], { kernel_shape: [2, 2] }, { name: 'conv' });
    t = square(b, t, 'act');
    t = b.node('AveragePool', [t], { kernel_shape: [2, 2], strides: [1, 1], pads: [1, 1, 0, 0] }, { name: 'pool1' });
    t = b.node('AveragePool', [t], { kernel_shape: [3, 3], strides: [2, 2] }, { name: 'pool2' });
    t = b.node('Flatten', [t], {}, { name: 'flatten' });
    t = linear(b, t, 27, 2, 'fc');
    const split = await checkInputSplit(b.build(t), [BATCH, 2, 9, 9]);
    expect(summary(split.head).slice(1)).toEqual(['poly [0, 0, 1]', 'dense 192→2']);
  });

  it('per-channel Add and Mul constants after a conv fold into it, scalar Sub and Div into the activation; y + y² of the same conv output is one activation', async () => {
    const b = new ModelBuilder(36);
    const x = b.input('input', ['N', 3, 6, 5]);
    let t = b.node('Conv', [x, b.random([4, 3, 3, 3], 0.5)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv' });
    t = b.node('Add', [t, b.random([4, 1, 1], 0.3)], {}, { name: 'bias' });
    t = b.node('Mul', [b.random([1, 4, 1, 1], 1), t], {}, { name: 'scale' });
    t = b.node('Sub', [t, b.init([1], [0.25])], {}, { name: 'shift' });
    t = b.node('Div', [t, b.init([], [2])], {}, { name: 'halve' });
    t = b.node('Add', [t, square(b, t, 'sq')], {}, { name: 'act' });
    t = b.node('Flatten', [t], {}, { name: 'flatten' });
    t = linear(b, t, 120, 3, 'fc');
    const split = await checkInputSplit(b.build(t), [BATCH, 3, 6, 5]);
    // y = (x − 0.25)/2: y + y² = 0.25x² + 0.375x − 0.109375.
    expect(summary(split.head)).toEqual(['conv 3×6×5 → 4, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]', 'poly [-0.109375, 0.375, 0.25]', 'dense 120→3']);
  });

  it('a Transpose of the 4-D feature map is a reordering, never an identity: it permutes the dense layer\'s columns', async () => {
    const b = new ModelBuilder(37);
    const x = b.input('input', ['N', 2, 5, 4]);
    let t = b.node('Conv', [x, b.random([3, 2, 2, 2], 0.5), b.random([3], 0.2)], { kernel_shape: [2, 2], strides: [1, 1] }, { name: 'conv' });
    t = square(b, t, 'act');
    t = b.node('Transpose', [t], { perm: [0, 3, 2, 1] }, { name: 'swap' });
    t = b.node('Flatten', [t], {}, { name: 'flatten' });
    t = linear(b, t, 36, 4, 'fc');
    const split = await checkInputSplit(b.build(t), [BATCH, 2, 5, 4]);
    expect(summary(split.head).slice(1)).toEqual(['poly [0, 0, 1]', 'dense 36→4']);
  });

  it('an MLP split at its input: the head starts with the Flatten of the image', async () => {
    const b = new ModelBuilder(38);
    const x = b.input('input', ['N', 1, 6, 5]);
    const t = linear(b, b.node('Flatten', [x], {}, { name: 'flatten' }), 30, 4, 'fc');
    const split = await checkInputSplit(b.build(t), [BATCH, 1, 6, 5]);
    expect(summary(split.head)).toEqual(['dense 30→4']);
  });
});

/**
 * tf2onnx writing a Keras model: NHWC input, Transpose to NCHW before the Conv (auto_pad
 * SAME_UPPER, dilations listed), an AveragePool in NCHW, Transpose back to NHWC before a
 * Reshape whose shape is computed at run time, Dense as MatMul + Add, Pow, Softmax.
 */
function tf2onnxModel(channels: number, options: { pool?: boolean } = {}) {
  const b = new ModelBuilder(41 + channels);
  const x = b.input('input_1', ['unk__9', 9, 7, channels]);
  let t = b.node('Transpose', [x], { perm: [0, 3, 1, 2] }, { name: 'sequential/conv2d/BiasAdd__6' });
  t = b.node('Conv', [t, b.random([4, channels, 3, 3], 0.5), b.random([4], 0.1)], { kernel_shape: [3, 3], strides: [2, 2], dilations: [1, 1], auto_pad: { s: 'SAME_UPPER' } }, { name: 'sequential/conv2d/BiasAdd' });
  t = b.node('Pow', [t, b.init([], [2])], {}, { name: 'sequential/conv2d/square' });
  if (options.pool) t = b.node('AveragePool', [t], { kernel_shape: [2, 2], strides: [1, 1], auto_pad: { s: 'VALID' } }, { name: 'sequential/average_pooling2d/AvgPool' });
  t = b.node('Transpose', [t], { perm: [0, 2, 3, 1] }, { name: 'sequential/conv2d/square__12' });
  const shape = b.node('Shape', [t], {}, { name: 'sequential/flatten/Shape' });
  const batch = b.node('Gather', [shape, b.ints([0])], { axis: 0 }, { name: 'sequential/flatten/strided_slice' });
  const target = b.node('Concat', [batch, b.ints([-1])], { axis: 0 }, { name: 'sequential/flatten/Reshape/shape_Concat' });
  t = b.node('Reshape', [t, target], {}, { name: 'sequential/flatten/Reshape' });
  const features = options.pool ? 4 * 4 * 3 : 4 * 5 * 4;
  t = b.node('MatMul', [t, b.random([features, 6], 0.3)], {}, { name: 'sequential/dense/MatMul' });
  t = b.node('Add', [t, b.random([6], 0.2)], {}, { name: 'sequential/dense/BiasAdd' });
  t = b.node('Mul', [t, t], {}, { name: 'sequential/dense/square' });
  t = b.node('MatMul', [t, b.random([6, 3], 0.5)], {}, { name: 'sequential/dense_1/MatMul' });
  t = b.node('Add', [b.random([3], 0.2), t], {}, { name: 'sequential/dense_1/BiasAdd' });
  t = b.node('Softmax', [t], { axis: -1 }, { name: 'sequential/dense_1/Softmax', output: 'dense_1' });
  return b.build(t);
}

describe('--split input, tf2onnx/Keras style (NHWC input + Transpose, Conv, MatMul + Add, Reshape)', () => {
  it('records the input layout nhwc; the NHWC flatten before the dense layer permutes its columns', async () => {
    const split = await checkInputSplit(tf2onnxModel(3), [BATCH, 9, 7, 3], { softmax: true });
    expect(split.layout).toBe('nhwc');
    expect(split.input).toEqual({ name: 'input_1', shape: ['unk__9', 9, 7, 3] });
    expect(summary(split.head)).toEqual(['conv 3×9×7 → 4, kernel 3×3, stride 2×2, pads [1, 1, 1, 1]', 'poly [0, 0, 1]', 'dense 80→6', 'poly [0, 0, 1]', 'dense 6→3']);
    expect(split.dropped).toEqual(["node 'sequential/dense_1/Softmax' (Softmax)"]);
  });

  it('one channel: still nhwc (the same order), and an AveragePool in NCHW merges into the conv', async () => {
    const split = await checkInputSplit(tf2onnxModel(1, { pool: true }), [BATCH, 9, 7, 1], { softmax: true });
    expect(split.layout).toBe('nhwc');
    expect(summary(split.head)[0]).toBe('conv 1×9×7 → 4, kernel 3×3, stride 2×2, pads [1, 1, 1, 1]');
    expect(summary(split.head).slice(1)).toEqual(['poly [0, 0, 1]', 'dense 80→6', 'poly [0, 0, 1]', 'dense 6→3']);
  });

  it('a split before the Transpose (after an NHWC rescaling): the extractor ends with the transpose, the head reads NCHW', async () => {
    const b = new ModelBuilder(44);
    const x = b.input('input_1', ['unk__9', 6, 5, 2]);
    let t = b.node('Mul', [x, b.init([], [1 / 255])], {}, { name: 'sequential/rescaling/mul' });
    t = b.node('Transpose', [t], { perm: [0, 3, 1, 2] }, { name: 'sequential/conv2d/BiasAdd__6' });
    t = b.node('Conv', [t, b.random([3, 2, 3, 3], 0.5), b.random([3], 0.1)], { kernel_shape: [3, 3], auto_pad: { s: 'SAME_LOWER' }, strides: [2, 1] }, { name: 'sequential/conv2d/BiasAdd' });
    t = b.node('Mul', [t, t], {}, { name: 'sequential/conv2d/square' });
    t = b.node('Reshape', [b.node('Transpose', [t], { perm: [0, 2, 3, 1] }), b.ints([-1, 45])], {}, { name: 'sequential/flatten/Reshape' });
    t = b.node('MatMul', [t, b.random([45, 4], 0.3)], {}, { name: 'sequential/dense/MatMul' });
    const model = b.build(t);
    const split = splitOnnx(model, { split: 'sequential/rescaling/mul' });
    expect(split).toMatchObject({ layout: 'nchw', features: { name: 'features', shape: ['unk__9', 2, 6, 5] } });
    const graph = onnx.GraphProto.fromObject(onnx.ModelProto.decode(split.extractor!).graph!);
    expect(graph.node.map((n) => n.opType)).toEqual(['Mul', 'Transpose']);
    const dims = [BATCH, 6, 5, 2];
    const input = randomInput(5, dims);
    const [original, features] = await Promise.all([run(model, input, dims), run(split.extractor!, input, dims)]);
    expect(features.dims).toEqual([BATCH, 2, 6, 5]);
    expect(maxRelativeDiff(original.data, evaluateHead(split.head, features.data, BATCH))).toBeLessThan(TOLERANCE);
  });

  it('importOnnx writes the NHWC → NCHW Transpose as the extractor', () => {
    const graph = onnx.GraphProto.fromObject(onnx.ModelProto.decode(importOnnx(tf2onnxModel(3), { split: 'input' }).extractor).graph!);
    expect(graph.node.map((n) => [n.opType, n.input, n.output])).toEqual([['Transpose', ['input_1'], ['features']]]);
    expect(graph.output[0]!.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue))).toEqual(['unk__9', 3, 9, 7]);
  });
});

/**
 * CNTK: a fixed batch of one, Conv without bias and with explicit asymmetric pads, the
 * bias as a separate Plus (Add of [C, 1, 1]), pooling, Reshape to a flat vector, Times as
 * MatMul with the input on the right (W · x), bias Adds in the matching layout.
 */
function cntkModel() {
  const b = new ModelBuilder(51);
  const x = b.input('Input3', [1, 3, 8, 7]);
  let t = b.node('Conv', [x, b.random([3, 3, 3, 2], 0.5)], { kernel_shape: [3, 2], strides: [2, 1], pads: [1, 0, 1, 1], group: 1, dilations: [1, 1] }, { name: 'Convolution28' });
  t = b.node('Add', [t, b.random([3, 1, 1], 0.2)], {}, { name: 'Plus30' });
  t = b.node('Mul', [t, t], {}, { name: 'Square32' });
  t = b.node('AveragePool', [t], { kernel_shape: [2, 2], strides: [2, 2], pads: [0, 0, 0, 1], count_include_pad: 1 }, { name: 'Pooling66' });
  return b.build(cntkClassifier(b, t, 24));
}

describe('--split input, CNTK style (Conv + Plus, explicit asymmetric pads, pooling, Reshape, W·x)', () => {
  it('folds the Plus into the conv and the pool into the W·x layer', async () => {
    const split = await checkInputSplit(cntkModel(), [1, 3, 8, 7]);
    expect(summary(split.head)).toEqual(['conv 3×8×7 → 3, kernel 3×2, stride 2×1, pads [1, 0, 1, 1]', 'poly [0, 0, 1]', 'dense 84→12', 'poly [0, 2, 1]', 'dense 12→5']);
    expect(split.features).toEqual({ name: 'Input3', shape: [1, 3, 8, 7] });
  });
});
