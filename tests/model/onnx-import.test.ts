import { describe, expect, it } from 'vitest';
import type { Layer } from '../../src/he';
import { FEATURES, type ImportedModel, type ImportOptions, importOnnx, splitOnnx } from '../../src/model/onnx';
import { onnx, tensorDims, tensorValues } from '../../src/model/proto';
import { cntkClassifier, evaluateHead, maxAbsDiff, ModelBuilder, randomInput, run, softmaxRows } from './onnx-builder';

const BATCH = 3;
const TOLERANCE = 1e-4;

/**
 * The import's contract: the extractor run by onnxruntime, then the head in float, gives
 * what onnxruntime gives for the original model (after softmax when the model ends in one).
 */
async function checkSplit(model: Uint8Array, inputDims: number[], options: ImportOptions & { softmax?: boolean } = {}): Promise<ImportedModel> {
  const imported = importOnnx(model, options);
  const samples = inputDims[0]!;
  const x = randomInput(7, inputDims);
  const original = await run(model, x, inputDims);
  const features = await run(imported.extractor, x, inputDims);
  const scores = evaluateHead(imported.head, features.data, samples);
  const expected = options.softmax ? softmaxRows(scores, samples) : scores;
  expect(maxAbsDiff(original.data, expected)).toBeLessThan(TOLERANCE);
  expect(features.dims).toEqual(imported.features.shape?.map((d) => (typeof d === 'number' ? d : samples)));
  return imported;
}

/** The head's layers as `inspect` lists them. */
const summary = (head: readonly Layer[]) =>
  head.map((l) => (l.kind === 'poly' ? `poly [${l.coeffs.map((c) => Number(c.toFixed(6))).join(', ')}]` : l.kind === 'dense' ? `dense ${l.inputs}→${l.outputs}` : 'conv'));

/**
 * PyTorch's exporter: Conv, Relu, MaxPool, Flatten, Gemm(transB=1), x²+2x in Horner form
 * ((x + 2)·x as Add and Mul), Dropout where eval export left it.
 */
function pytorchModel(options: { batchNorm?: boolean } = {}) {
  const b = new ModelBuilder(1);
  const x = b.input('input', ['N', 1, 8, 8]);
  let t = b.node('Conv', [x, b.random([4, 1, 3, 3], 0.5), b.random([4], 0.1)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: '/features/conv1/Conv' });
  t = b.node('Relu', [t], {}, { name: '/features/relu1/Relu' });
  t = b.node('MaxPool', [t], { kernel_shape: [2, 2], strides: [2, 2] }, { name: '/features/pool1/MaxPool' });
  t = b.node('Dropout', [t], {}, { name: '/features/drop1/Dropout' });
  t = b.node('Flatten', [t], { axis: 1 }, { name: '/features/flatten/Flatten' });
  t = b.node('Gemm', [t, b.random([16, 64], 0.2), b.random([16], 0.1)], { alpha: { f: 1 }, beta: { f: 1 }, transB: 1 }, { name: '/classifier/fc1/Gemm' });
  if (options.batchNorm) {
    const [scale, shift, mean] = [b.random([16], 1), b.random([16], 0.5), b.random([16], 0.5)];
    const variance = b.init([16], Array.from({ length: 16 }, () => 0.5 + Math.abs(b.rand())));
    t = b.node('BatchNormalization', [t, scale, shift, mean, variance], { epsilon: { f: 1e-3 } }, { name: '/classifier/bn1/BatchNormalization' });
  }
  const shifted = b.node('Add', [t, b.constant([], [2])], {}, { name: '/classifier/act/Add' });
  t = b.node('Mul', [shifted, t], {}, { name: '/classifier/act/Mul' });
  t = b.node('Identity', [t], {}, { name: '/classifier/drop3/Identity' });
  t = b.node('Gemm', [t, b.random([10, 16], 0.3), b.random([10], 0.1)], { transB: 1 }, { name: '/classifier/fc2/Gemm', output: 'logits' });
  return b.build(t);
}

describe('importOnnx: PyTorch style (Conv, Relu, MaxPool, Flatten, Gemm transB=1)', () => {
  it('splits at the Flatten: extractor + float head equal the original model within 1e-4', async () => {
    const imported = await checkSplit(pytorchModel(), [BATCH, 1, 8, 8]);
    expect(summary(imported.head)).toEqual(['dense 64→16', 'poly [0, 2, 1]', 'dense 16→10']);
    expect(imported.input).toEqual({ name: 'input', shape: ['N', 1, 8, 8] });
    expect(imported.features).toEqual({ name: FEATURES, shape: ['N', 64] });
    expect(imported.splitTensor).toMatch(/^flatten/);
  });

  it('writes the extractor as the original graph cut at the features, unused initializers dropped', () => {
    const model = pytorchModel();
    const extractor = onnx.ModelProto.decode(importOnnx(model).extractor);
    const graph = onnx.GraphProto.fromObject(extractor.graph!);
    expect(graph.node.map((n) => n.opType)).toEqual(['Conv', 'Relu', 'MaxPool', 'Flatten']);
    expect(graph.node.at(-1)!.output).toEqual([FEATURES]);
    expect(graph.initializer.map((t) => tensorDims(t))).toEqual([[4, 1, 3, 3], [4]]);
    expect(graph.input.map((i) => i.name)).toEqual(['input']);
    expect(graph.output.map((o) => [o.name, o.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue))])).toEqual([[FEATURES, ['N', 64]]]);
    expect(extractor.opsetImport.map((o) => Number(o.version))).toEqual([13]);
  });

  it('reads weights in every storage: raw bytes, float_data, double, float16, Constant attributes', () => {
    const raw = new Uint8Array(new Float32Array([1.5, -2]).buffer);
    expect(tensorValues({ dims: [2], dataType: 1, rawData: raw }, 'test')).toEqual(Float64Array.from([1.5, -2]));
    expect(tensorValues({ dims: [2], dataType: 1, floatData: [1.5, -2] }, 'test')).toEqual(Float64Array.from([1.5, -2]));
    expect(tensorValues({ dims: [1], dataType: 11, doubleData: [0.1] }, 'test')).toEqual(Float64Array.from([0.1]));
    // float16 1.5 = 0x3e00, −2 = 0xc000, as raw bytes and as int32_data bit patterns.
    expect(tensorValues({ dims: [2], dataType: 10, rawData: Uint8Array.from([0x00, 0x3e, 0x00, 0xc0]) }, 'test')).toEqual(Float64Array.from([1.5, -2]));
    expect(tensorValues({ dims: [2], dataType: 10, int32Data: [0x3e00, 0xc000] }, 'test')).toEqual(Float64Array.from([1.5, -2]));
    expect(() => tensorValues({ name: 'w', dims: [3], dataType: 1, rawData: raw }, 'node fc')).toThrow(/node fc: tensor 'w' has 8 bytes of data, its shape \[3\] needs 12/);
    expect(() => tensorValues({ name: 'w', dims: [2], dataType: 1, dataLocation: 1 }, 'node fc')).toThrow(/external file/);

  });

  it('folds layout ops on constant weights (MatMul(x, Transpose(W)) without constant folding at export)', async () => {
    const b = new ModelBuilder(9);
    const x = b.input('x', ['N', 3]);
    const w = b.node('Constant', [], { value_floats: { floats: [1, 2, 3, 4, 5, 6] } });
    const shape = b.node('Constant', [], { value_ints: [2, 3] });
    const y = b.node('MatMul', [x, b.node('Transpose', [b.node('Reshape', [w, shape])], { perm: [1, 0] })]);
    const imported = await checkSplit(b.build(y), [BATCH, 3]);
    expect(imported.head).toEqual([{ kind: 'dense', inputs: 3, outputs: 2, weights: Float64Array.from([1, 2, 3, 4, 5, 6]), bias: new Float64Array(2) }]);
  });

  it('keeps PyTorch weights (outputs × inputs) as they are', () => {
    const b = new ModelBuilder(3);
    const x = b.input('x', [1, 3]);
    const w = b.init([2, 3], [1, 2, 3, 4, 5, 6]);
    const y = b.node('Gemm', [x, w, b.init([2], [0.5, -0.5])], { transB: 1 });
    expect(importOnnx(b.build(y)).head).toEqual([
      { kind: 'dense', inputs: 3, outputs: 2, weights: Float64Array.from([1, 2, 3, 4, 5, 6]), bias: Float64Array.from([0.5, -0.5]) },
    ]);
  });

  it('folds BatchNormalization after a Gemm into the Gemm', async () => {
    const imported = await checkSplit(pytorchModel({ batchNorm: true }), [BATCH, 1, 8, 8]);
    expect(summary(imported.head)).toEqual(['dense 64→16', 'poly [0, 2, 1]', 'dense 16→10']);
  });

  it('applies Gemm alpha, beta and transB=0 (weights inputs × outputs, bias [1, out])', async () => {
    const b = new ModelBuilder(4);
    const x = b.input('x', ['N', 12]);
    let t = b.node('Gemm', [x, b.random([12, 6], 0.5), b.random([1, 6], 0.5)], { alpha: { f: 0.5 }, beta: { f: 2 } });
    t = b.node('Mul', [t, t]);
    t = b.node('Gemm', [t, b.random([6, 3], 0.5)], {});
    const imported = await checkSplit(b.build(t), [BATCH, 12]);
    expect(summary(imported.head)).toEqual(['dense 12→6', 'poly [0, 0, 1]', 'dense 6→3']);
    expect(imported.features.shape).toEqual(['N', 12]);
  });

  it('splits where the user names: after the activation, the head is the last layer only', async () => {
    const imported = await checkSplit(pytorchModel(), [BATCH, 1, 8, 8], { split: '/classifier/act/Mul' });
    expect(summary(imported.head)).toEqual(['dense 16→10']);
    expect(imported.features.shape).toEqual(['N', 16]);
  });

  it('moves reshapes after a named split into the extractor', async () => {
    for (const split of ['/features/pool1/MaxPool', '/features/drop1/Dropout', '/features/flatten/Flatten']) {
      const imported = await checkSplit(pytorchModel(), [BATCH, 1, 8, 8], { split });
      expect(summary(imported.head)).toEqual(['dense 64→16', 'poly [0, 2, 1]', 'dense 16→10']);
      expect(imported.features.shape).toEqual(['N', 64]);
    }
  });

  it('extracts a model whose extractor is empty (an MLP split at its input)', async () => {
    const b = new ModelBuilder(5);
    const x = b.input('pixels', ['N', 20]);
    const t = b.node('Gemm', [x, b.random([5, 20], 0.5), b.random([5], 0.5)], { transB: 1 });
    const imported = await checkSplit(b.build(t), [BATCH, 20]);
    expect(imported.splitTensor).toBe('pixels');
    expect(summary(imported.head)).toEqual(['dense 20→5']);
    // splitOnnx says what it is: no extractor, the head reads the input itself.
    expect(splitOnnx(b.build(t))).toMatchObject({ extractor: null, features: { name: 'pixels', shape: ['N', 20] }, layout: 'nchw' });
  });
});

/**
 * tf2onnx writing a Keras model: NHWC input, Transpose to NCHW around the convolutions,
 * Transpose back to NHWC before a Reshape whose shape is computed at run time
 * (Shape → Gather → Unsqueeze → Concat), Dense as MatMul (weights inputs × outputs) + Add.
 * Keras flattens NHWC, so the features come out in NHWC order.
 */
function tf2onnxModel(activation: 'pow' | 'cube') {
  const b = new ModelBuilder(2);
  const x = b.input('input_1', ['unk__6', 8, 8, 1]);
  let t = b.node('Transpose', [x], { perm: [0, 3, 1, 2] }, { name: 'sequential/conv2d/BiasAdd__6' });
  t = b.node('Conv', [t, b.random([3, 1, 3, 3], 0.5), b.random([3], 0.1)], { kernel_shape: [3, 3], strides: [1, 1], dilations: [1, 1], auto_pad: { s: 'VALID' } }, { name: 'sequential/conv2d/BiasAdd' });
  t = b.node('Relu', [t], {}, { name: 'sequential/conv2d/Relu' });
  t = b.node('MaxPool', [t], { kernel_shape: [2, 2], strides: [2, 2] }, { name: 'sequential/max_pooling2d/MaxPool' });
  t = b.node('Transpose', [t], { perm: [0, 2, 3, 1] }, { name: 'sequential/max_pooling2d/MaxPool__12' });
  const shape = b.node('Shape', [t], {}, { name: 'sequential/flatten/Shape' });
  const batch = b.node('Gather', [shape, b.ints([0])], { axis: 0 }, { name: 'sequential/flatten/strided_slice' });
  const target = b.node('Concat', [batch, b.ints([-1])], { axis: 0 }, { name: 'sequential/flatten/Reshape/shape_Concat' });
  t = b.node('Reshape', [t, target], {}, { name: 'sequential/flatten/Reshape' });
  t = b.node('MatMul', [t, b.random([27, 8], 0.3)], {}, { name: 'sequential/dense/MatMul' });
  t = b.node('Add', [t, b.random([8], 0.2)], {}, { name: 'sequential/dense/BiasAdd' });
  if (activation === 'pow') {
    // 0.1·x³ − 0.5·x² + x + 0.25 with Pow and Constant-node coefficients.
    const cube = b.node('Mul', [b.node('Pow', [t, b.constant([], [3])], {}, { name: 'sequential/act/Pow3' }), b.constant([], [0.1])]);
    const square = b.node('Mul', [b.constant([1], [0.5]), b.node('Pow', [t, b.init([], [2])], {}, { name: 'sequential/act/Pow2' })]);
    t = b.node('Add', [b.node('Add', [b.node('Sub', [cube, square]), t]), b.constant([], [0.25])], {}, { name: 'sequential/act/add' });
  } else {
    t = b.node('Mul', [b.node('Mul', [t, t]), t], {}, { name: 'sequential/act/cube' });
  }
  t = b.node('MatMul', [t, b.random([8, 4], 0.5)], {}, { name: 'sequential/dense_1/MatMul' });
  t = b.node('Add', [b.random([4], 0.2), t], {}, { name: 'sequential/dense_1/BiasAdd' });
  t = b.node('Softmax', [t], { axis: -1 }, { name: 'sequential/dense_1/Softmax', output: 'dense_1' });
  return b.build(t);
}

describe('importOnnx: tf2onnx/Keras style (Transpose to NHWC, dynamic Reshape, MatMul + Add, Softmax)', () => {
  it('recognizes a Pow-based polynomial and drops the trailing Softmax; NHWC features agree with the head', async () => {
    const imported = await checkSplit(tf2onnxModel('pow'), [BATCH, 8, 8, 1], { softmax: true });
    expect(summary(imported.head)).toEqual(['dense 27→8', 'poly [0.25, 1, -0.5, 0.1]', 'dense 8→4']);
    expect(imported.features.shape).toEqual(['unk__6', 27]);
    expect(imported.dropped).toEqual(["node 'sequential/dense_1/Softmax' (Softmax)"]);
  });

  it('expands x·x·x into x³', async () => {
    const imported = await checkSplit(tf2onnxModel('cube'), [BATCH, 8, 8, 1], { softmax: true });
    expect(summary(imported.head)).toEqual(['dense 27→8', 'poly [0, 0, 0, 1]', 'dense 8→4']);
  });

  it('takes a named split before the NHWC Transpose and moves the Transpose and Reshape into the extractor', async () => {
    const imported = await checkSplit(tf2onnxModel('pow'), [BATCH, 8, 8, 1], { softmax: true, split: 'sequential/max_pooling2d/MaxPool' });
    expect(summary(imported.head)[0]).toBe('dense 27→8');
  });
});

/**
 * CNTK: a fixed batch of one, Conv without bias followed by a separate bias Add, Reshape
 * to a flat vector, Times as MatMul with the input on the right (W · x, W outputs ×
 * inputs) or on the left, bias Adds in the matching layout.
 */
function cntkModel() {
  const b = new ModelBuilder(3);
  const x = b.input('Input3', [1, 1, 8, 8]);
  let t = b.node('Conv', [x, b.random([2, 1, 3, 3], 0.5)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: 1 }, { name: 'Convolution28' });
  t = b.node('Add', [t, b.random([2, 1, 1], 0.2)], {}, { name: 'Plus30' });
  t = b.node('Relu', [t], {}, { name: 'ReLU32' });
  t = b.node('MaxPool', [t], { kernel_shape: [2, 2], strides: [2, 2] }, { name: 'Pooling66' });
  return b.build(cntkClassifier(b, t, 32));
}

describe('importOnnx: CNTK style (bias Add after Conv, Reshape, MatMul with the input on the right)', () => {
  it('imports W·x layers, vector and column layouts', async () => {
    const imported = await checkSplit(cntkModel(), [1, 1, 8, 8]);
    expect(summary(imported.head)).toEqual(['dense 32→12', 'poly [0, 2, 1]', 'dense 12→5']);
    expect(imported.features.shape).toEqual([32]);
  });
});

describe('importOnnx: activations', () => {
  function reluHead() {
    const b = new ModelBuilder(6);
    const x = b.input('x', ['N', 10]);
    let t = b.node('Gemm', [x, b.random([6, 10], 0.5), b.random([6], 0.5)], { transB: 1 }, { name: 'fc1' });
    t = b.node('Relu', [t], {}, { name: 'act1' });
    t = b.node('Gemm', [t, b.random([3, 6], 0.5)], { transB: 1 }, { name: 'fc2' });
    return b.build(t);
  }

  it('replaces ReLU by the given polynomial approximation', () => {
    const coeffs = [0.5, 0.25, 0.1];
    const { head } = importOnnx(reluHead(), { approximations: { relu: coeffs } });
    expect(summary(head)).toEqual(['dense 10→6', 'poly [0.5, 0.25, 0.1]', 'dense 6→3']);
  });

  it('a transposed output reorders the last layer\'s rows', async () => {
    const b = new ModelBuilder(10);
    const x = b.input('x', ['N', 5]);
    let t = b.node('Gemm', [x, b.random([6, 5], 0.5), b.random([6], 0.5)], { transB: 1 });
    t = b.node('Reshape', [b.node('Mul', [t, t]), b.ints([-1, 2, 3])]);
    t = b.node('Reshape', [b.node('Transpose', [t], { perm: [0, 2, 1] }), b.ints([-1, 6])]);
    const imported = await checkSplit(b.build(t), [BATCH, 5]);
    expect(summary(imported.head)).toEqual(['dense 5→6', 'poly [0, 0, 1]']);
  });

  it('folds a per-feature scale after the activation into the next dense layer', async () => {
    const b = new ModelBuilder(8);
    const x = b.input('x', ['N', 10]);
    let t = b.node('Gemm', [x, b.random([6, 10], 0.5), b.random([6], 0.5)], { transB: 1 });
    t = b.node('Mul', [t, t]);
    t = b.node('Mul', [t, b.random([6], 1)]);
    t = b.node('Add', [t, b.random([1, 6], 1)]);
    t = b.node('Gemm', [t, b.random([3, 6], 0.5)], { transB: 1 });
    const imported = await checkSplit(b.build(t), [BATCH, 10]);
    expect(summary(imported.head)).toEqual(['dense 10→6', 'poly [0, 0, 1]', 'dense 6→3']);
  });
});
