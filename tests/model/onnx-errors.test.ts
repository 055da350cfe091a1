import { describe, expect, it } from 'vitest';
import { ModelError, type ModelErrorCode } from '../../src/model/errors';
import { type ImportOptions, importOnnx, splitOnnx } from '../../src/model/onnx';
import { onnx } from '../../src/model/proto';
import { ModelBuilder, random } from './onnx-builder';

function refused(bytes: Uint8Array, code: ModelErrorCode, message: RegExp, options: ImportOptions = {}) {
  let error: unknown;
  try {
    importOnnx(bytes, options);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ModelError);
  expect(error).toMatchObject({ code, message: expect.stringMatching(message) });
}

/** Flatten → fc1 → `activation` → fc2, with the activation built by `act`. */
function head(act: (b: ModelBuilder, t: string) => string) {
  const b = new ModelBuilder(11);
  const x = b.input('input', ['N', 2, 3, 3]);
  let t = b.node('Flatten', [b.node('Relu', [x], {}, { name: 'relu0' })], {}, { name: 'flatten' });
  t = b.node('Gemm', [t, b.random([8, 18], 0.5), b.random([8], 0.5)], { transB: 1 }, { name: 'fc1' });
  t = act(b, t);
  t = b.node('Gemm', [t, b.random([4, 8], 0.5), b.random([4], 0.5)], { transB: 1 }, { name: 'fc2' });
  return b.build(t);
}

const relu = head((b, t) => b.node('Relu', [t], {}, { name: 'classifier.act' }));

describe('importOnnx refuses bad input with a clear error', () => {
  it('corrupt bytes, text, an empty file', () => {
    const rand = random(3);
    const noise = Uint8Array.from({ length: 4096 }, () => Math.floor((rand() + 1) * 128));
    let error: unknown;
    try {
      importOnnx(noise, { source: 'noise.onnx' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ModelError);
    expect((error as ModelError).code).toMatch(/^E_(FORMAT|TRUNCATED)$/);
    expect((error as ModelError).message).toMatch(/^noise\.onnx: /);
    refused(new TextEncoder().encode('{"not": "an onnx model"}'), 'E_FORMAT', /not an ONNX model/);
    refused(new Uint8Array(0), 'E_FORMAT', /empty/);
  });

  it('a truncated file', () => {
    const bytes = head((b, t) => b.node('Mul', [t, t]));
    for (const keep of [0.3, 0.6, 0.95]) refused(bytes.subarray(0, Math.floor(bytes.length * keep)), 'E_TRUNCATED', /truncated/);
  });

  it('a valid protobuf message that is not a model', () => {
    const tensor = onnx.TensorProto.encode({ name: 'w', dims: [2], dataType: 1, floatData: [1, 2] }).finish();
    refused(tensor, 'E_FORMAT', /not an ONNX model/);
  });

  it('a graph that reads a tensor nothing provides', () => {
    const b = new ModelBuilder(1);
    b.input('x', [1, 4]);
    const t = b.node('Gemm', ['x_typo', b.random([2, 4], 1)], { transB: 1 }, { name: 'fc' });
    refused(b.build(t), 'E_GRAPH', /node 'fc' \(Gemm\) reads tensor 'x_typo'/);
  });

  it('a ReLU in the head: names the node and says to approximate it', () => {
    refused(relu, 'E_ACTIVATION', /node 'classifier\.act' \(Relu\) is a Relu in the classifier head.*--activation cryptodl-relu-3.*or split after it \(--split classifier\.act\)/);
  });

  it('other non-polynomial activations', () => {
    refused(head((b, t) => b.node('Tanh', [t], {}, { name: 'tanh1' })), 'E_ACTIVATION', /node 'tanh1' \(Tanh\).*--activation cryptodl-tanh-3/);
    refused(head((b, t) => b.node('LeakyRelu', [t], {}, { name: 'lrelu' })), 'E_ACTIVATION', /node 'lrelu' \(LeakyRelu\).*retrain with a polynomial activation/);
  });

  it('an unsupported op in the head: names the node and the op', () => {
    refused(head((b, t) => b.node('Erf', [t], {}, { name: 'gelu/Erf' })), 'E_UNSUPPORTED', /node 'gelu\/Erf' \(Erf\): Erf is not supported in the classifier head/);
    refused(head((b, t) => b.node('Div', [b.init([], [1]), t], {}, { name: 'inv' })), 'E_UNSUPPORTED', /node 'inv' \(Div\) divides by a computed tensor/);
    refused(head((b, t) => b.node('Pow', [t, b.init([], [0.5])], {}, { name: 'sqrt' })), 'E_UNSUPPORTED', /node 'sqrt' \(Pow\) raises to the power \[0\.5\]/);
    refused(head((b, t) => b.node('Add', [t, b.init([2, 8], Array(16).fill(1))], {}, { name: 'bad_bias' })), 'E_UNSUPPORTED', /node 'bad_bias' \(Add\) combines .* constant '.*' of shape \[2, 8\]/);
  });

  it('a Softmax that is not at the end of the head', () => {
    refused(head((b, t) => b.node('Softmax', [t], {}, { name: 'mid_softmax' })), 'E_UNSUPPORTED', /node 'mid_softmax' \(Softmax\) is inside the classifier head/);
  });

  it('a skip connection around a dense layer', () => {
    const bytes = head((b, t) => {
      const squared = b.node('Mul', [t, t], {}, { name: 'sq' });
      const next = b.node('Gemm', [squared, b.random([8, 8], 0.5)], { transB: 1 }, { name: 'fc_mid' });
      return b.node('Add', [next, t], {}, { name: 'residual' });
    });
    refused(bytes, 'E_UNSUPPORTED', /node 'residual' \(Add\) adds its skip '.*' to '.*', the output of a dense layer: the engine joins a skip to a convolution's output only; split after the block \(--split residual\)/);
  });

  it('an unknown split node, and splits that leave no dense head', () => {
    refused(relu, 'E_SPLIT', /no node or tensor named 'fc9'; nodes near the output: .*'fc1' \(Gemm\)/, { split: 'fc9' });
    refused(head((b, t) => b.node('Mul', [t, t], {}, { name: 'square' })), 'E_SPLIT', /node 'square' \(Mul\) comes before the first layer of the head: split at the input of a dense layer \(Gemm or MatMul\) or of a convolution/, { split: 'fc1' });
    refused(relu, 'E_SPLIT', /has no dense layer/, { split: 'fc2' });
  });
});

/** input [N, 2, 6, 6] → conv (2→3, 3×3, pads 1) → `after` → Flatten → fc, split at the input. */
function convHead(after: (b: ModelBuilder, t: string, x: string) => string, channels = 3) {
  const b = new ModelBuilder(12);
  const x = b.input('image', ['N', 2, 6, 6]);
  let t = b.node('Conv', [x, b.random([channels, 2, 3, 3], 0.5), b.random([channels], 0.1)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv1' });
  t = after(b, t, x);
  const shape = b.node('Flatten', [t], {}, { name: 'flatten' });
  return b.build(b.node('Gemm', [shape, b.random([4, channels * 36], 0.2)], { transB: 1 }, { name: 'fc' }));
}

const input = { split: 'input' };

describe('--split input refuses what the encrypted part cannot evaluate, naming the node and the remedy', () => {
  it('MaxPool: retrain with average pooling, or split after it', () => {
    const bytes = convHead((b, t) => b.node('MaxPool', [b.node('Mul', [t, t])], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'pool' }));
    refused(bytes, 'E_UNSUPPORTED', /node 'pool' \(MaxPool\) is a MaxPool in the classifier head, which homomorphic encryption cannot evaluate exactly: retrain with average pooling \(AveragePool\), or split after it \(--split pool\)/, input);
  });

  it('ReLU: an approximation (--activation), a polynomial activation, or a later split; the approximation path still works', () => {
    const bytes = convHead((b, t) => b.node('Relu', [t], {}, { name: 'relu1' }));
    refused(bytes, 'E_ACTIVATION', /node 'relu1' \(Relu\) is a Relu in the classifier head.*--activation cryptodl-relu-3, say, fitted on \[-6, 6\]: check that range against its inputs on calibration data.*retrain with a polynomial activation.*split after it \(--split relu1\)/, input);
    const { head } = splitOnnx(bytes, { split: 'input', approximations: { relu: [0.5, 0.5, 0.1] } });
    expect(head.map((l) => (l.kind === 'poly' ? [...l.coeffs] : l.kind))).toEqual(['conv', [0.5, 0.5, 0.1], 'dense']);
  });

  it('a second convolution is no longer refused: after an activation a layer of its own, right after the first composed with it', () => {
    const bytes = convHead((b, t) => b.node('Conv', [b.node('Mul', [t, t], {}, { name: 'act1' }), b.random([3, 3, 3, 3], 0.5)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv2' }));
    expect(splitOnnx(bytes, input).head.map((l) => l.kind)).toEqual(['conv', 'poly', 'conv', 'dense']);
    expect(splitOnnx(bytes, { split: 'act1' }).head.map((l) => l.kind)).toEqual(['conv', 'dense']);
    const linear = convHead((b, t) => b.node('Conv', [t, b.random([3, 3, 1, 1], 0.5)], { kernel_shape: [1, 1] }, { name: 'conv2' }));
    expect(splitOnnx(linear, input).head.map((l) => l.kind)).toEqual(['conv', 'dense']);
  });

  it('grouped and dilated convolutions', () => {
    const grouped = new ModelBuilder(13);
    let t = grouped.node('Conv', [grouped.input('image', ['N', 2, 6, 6]), grouped.random([2, 1, 3, 3], 0.5)], { kernel_shape: [3, 3], group: 2 }, { name: 'depthwise' });
    t = grouped.node('Gemm', [grouped.node('Flatten', [t]), grouped.random([4, 32], 0.2)], { transB: 1 });
    refused(grouped.build(t), 'E_UNSUPPORTED', /node 'depthwise' \(Conv\) is a grouped convolution \(group=2\): only group 1 is supported .*split after it \(--split depthwise\)/, input);
    const dilated = new ModelBuilder(14);
    t = dilated.node('Conv', [dilated.input('image', ['N', 2, 6, 6]), dilated.random([3, 2, 3, 3], 0.5)], { kernel_shape: [3, 3], dilations: [2, 2] }, { name: 'atrous' });
    t = dilated.node('Gemm', [dilated.node('Flatten', [t]), dilated.random([4, 12], 0.2)], { transB: 1 });
    refused(dilated.build(t), 'E_UNSUPPORTED', /node 'atrous' \(Conv\) is dilated \(dilations \[2, 2\]\): only dilation 1 .*split after it \(--split atrous\)/, input);
  });

  it('a residual Add across the convolution, unless both branches are the same layer\'s output', () => {
    const residual = convHead((b, t, x) => b.node('Add', [b.node('Mul', [t, t], {}, { name: 'act1' }), x], {}, { name: 'res' }), 2);
    refused(residual, 'E_UNSUPPORTED', /node 'res' \(Add\) takes its skip from the head's input 'image', which the device packs for the first encrypted layer alone: .*split after the block \(--split res\)/, input);
    const sameLayer = convHead((b, t) => b.node('Add', [b.node('Mul', [t, t], {}, { name: 'act1' }), t], {}, { name: 'res' }));
    expect(splitOnnx(sameLayer, input).head.map((l) => (l.kind === 'poly' ? [...l.coeffs] : l.kind))).toEqual(['conv', [0, 1, 1], 'dense']);
  });

  it('elementwise ops before the convolution (normalization in the graph), per-position constants after it', () => {
    const b = new ModelBuilder(15);
    const x = b.node('Sub', [b.input('image', ['N', 2, 6, 6]), b.init([], [0.5])], {}, { name: 'normalize' });
    const t = b.node('Conv', [x, b.random([3, 2, 3, 3], 0.5)], { kernel_shape: [3, 3] }, { name: 'conv1' });
    refused(b.build(b.node('Gemm', [b.node('Flatten', [t]), b.random([4, 48], 0.2)], { transB: 1 })), 'E_SPLIT', /node 'normalize' \(Sub\) comes before the first layer of the head/, input);
    const perPosition = convHead((b, t) => b.node('Add', [t, b.random([1, 1, 6, 6], 0.5)], {}, { name: 'pos' }));
    refused(perPosition, 'E_UNSUPPORTED', /node 'pos' \(Add\) scales or shifts the convolution's outputs differently across the positions of a channel/, input);
  });

  it('an AveragePool whose ceil_mode adds partial windows; a Transpose that moves the batch axis', () => {
    const pooled = convHead((b, t) => b.node('AveragePool', [b.node('Mul', [t, t])], { kernel_shape: [4, 4], strides: [4, 4], ceil_mode: 1 }, { name: 'pool' }));
    refused(pooled, 'E_UNSUPPORTED', /node 'pool' \(AveragePool\) has ceil_mode=1 with windows that run past the input: export it with ceil_mode=0/, input);
    const b = new ModelBuilder(16);
    let t = b.node('Gemm', [b.input('x', ['N', 6]), b.random([4, 6], 0.5)], { transB: 1 }, { name: 'fc1' });
    t = b.node('Transpose', [b.node('Mul', [t, t])], { perm: [1, 0] }, { name: 'mix' });
    refused(b.build(b.node('MatMul', [b.random([3, 4], 0.5), t])), 'E_UNSUPPORTED', /node 'mix' \(Transpose\) transposes '.*' of shape \[N, 4\]: .*a symbolic batch staying first/);
  });

  it('a pool between activations that would be too big a dense layer of its own', () => {
    const b = new ModelBuilder(18);
    let t = b.node('Conv', [b.input('image', ['N', 1, 64, 64]), b.random([16, 1, 3, 3], 0.5)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv1' });
    t = b.node('AveragePool', [b.node('Mul', [t, t])], { kernel_shape: [2, 2], strides: [2, 2] }, { name: 'pool' });
    t = b.node('Flatten', [b.node('Mul', [t, t])]);
    refused(b.build(b.node('Gemm', [t, b.random([2, 16384], 0.1)], { transB: 1 })), 'E_UNSUPPORTED', /node 'pool' \(AveragePool\): an activation follows this average pool.*16384×65536 weights: pool before the activation, or split after it \(--split pool\)/, input);
  });

  it('--split input where a node is named input', () => {
    const b = new ModelBuilder(17);
    const t = b.node('Flatten', [b.input('image', ['N', 1, 4, 4])], {}, { name: 'input' });
    refused(b.build(b.node('Gemm', [t, b.random([2, 16], 0.5)], { transB: 1 })), 'E_SPLIT', /'input' names both the model's input and node 'input': split at that node by its output tensor 'flatten_0'/, input);
  });
});
