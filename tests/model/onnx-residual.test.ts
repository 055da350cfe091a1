import { describe, expect, it } from 'vitest';
import { referenceModel } from '../../src/he';
import { floatEvaluate } from '../../src/he/reference';
import { ModelError, type ModelErrorCode } from '../../src/model/errors';
import { type OnnxSplit, splitOnnx, splitPoints } from '../../src/model/onnx';
import { batchNorm, channelsFirst, cntkClassifier, linear, maxAbsDiff, maxRelativeDiff, ModelBuilder, randomInput, run, softmaxRows, square, summary } from './onnx-builder';

const TOLERANCE = 1e-4;
/** Slots of the engine's plaintext reference: N=8192. */
const SLOTS = 4096;
/** Three images of 1×15×15. */
const DIMS = [3, 1, 15, 15];

/**
 * The head at `split` in float (floatEvaluate, the float model by definition) against
 * onnxruntime on the whole model, for inputs drawn from each seed; and the engine's
 * plaintext reference of the packed plan (referenceModel) against floatEvaluate, which
 * shows the engine takes the layers.
 */
async function check(model: Uint8Array, dims: number[], split: string, options: { softmax?: boolean } = {}): Promise<OnnxSplit> {
  const result = splitOnnx(model, { split });
  const reference = referenceModel(result.head, SLOTS);
  const samples = dims[0]!;
  for (const seed of [1, 2, 3]) {
    const x = randomInput(seed, dims);
    const original = await run(model, x, dims);
    const features = result.extractor === null ? x : (await run(result.extractor, x, dims)).data;
    const size = features.length / samples;
    const scores = [...Array(samples).keys()].map((s) => {
      const sample = features.subarray(s * size, (s + 1) * size);
      const input = result.layout === 'nhwc' ? channelsFirst(sample, dims.slice(1) as [number, number, number]) : sample;
      const float = floatEvaluate(result.head, input);
      expect(maxAbsDiff(reference(input), float)).toBeLessThan(1e-9 * Math.max(1, ...float.map(Math.abs)));
      return Array.from(float);
    });
    const flat = Float64Array.from(scores.flat());
    expect(maxRelativeDiff(original.data, options.softmax ? softmaxRows(flat, samples) : flat)).toBeLessThan(TOLERANCE);
  }
  return result;
}

function refused(bytes: Uint8Array, split: string, message: RegExp, code: ModelErrorCode = 'E_UNSUPPORTED') {
  let error: unknown;
  try {
    splitOnnx(bytes, { split });
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ModelError);
  expect(error).toMatchObject({ code, message: expect.stringMatching(message) });
}

const same = { kernel_shape: [3, 3], pads: [1, 1, 1, 1] };

/** PyTorch's residual branch on `t` (4 channels): conv 3×3 pad 1 → x² → conv 3×3 pad 1 → BatchNormalization. */
function branch(b: ModelBuilder, t: string, prefix: string): string {
  let u = b.node('Conv', [t, b.random([4, 4, 3, 3], 0.3), b.random([4], 0.1)], same, { name: `${prefix}/conv1/Conv` });
  u = square(b, u, `${prefix}/act/Mul`);
  u = b.node('Conv', [u, b.random([4, 4, 3, 3], 0.3), b.random([4], 0.1)], same, { name: `${prefix}/conv2/Conv` });
  return batchNorm(b, u, 4, `${prefix}/bn2/BatchNormalization`);
}

/** input [N, 1, 15, 15] → conv 1→4 5×5 stride 2 → x²: what the tests' blocks read. */
function firstBlock(b: ModelBuilder, conv = 'conv1', act = 'act1'): string {
  const t = b.node('Conv', [b.input('input', ['N', 1, 15, 15]), b.random([4, 1, 5, 5], 0.5), b.random([4], 0.2)], { kernel_shape: [5, 5], strides: [2, 2] }, { name: conv });
  return square(b, t, act);
}

/** x² → AveragePool 2×2 → Flatten → Gemm 36→3: the classifier after the block. */
function classifier(b: ModelBuilder, t: string, act: string): Uint8Array {
  t = b.node('AveragePool', [square(b, t, act)], { kernel_shape: [2, 2], strides: [2, 2] }, { name: '/pool/AveragePool' });
  return b.build(linear(b, b.node('Flatten', [t], { axis: 1 }, { name: '/flatten/Flatten' }), 36, 3, '/fc/Gemm'));
}

/**
 * PyTorch (NCHW): input 1×15×15 → conv 1→4 5×5 stride 2 → x² (T) → [branch] + T → x² →
 * AveragePool → Flatten → Gemm. With `convBlock`, a second block conv 4→4 3×3 pad 1 → batch
 * norm → x² comes before the residual block, and T is its output.
 */
function pytorchResidual(options: { convBlock?: boolean } = {}): Uint8Array {
  const b = new ModelBuilder(71);
  let t = firstBlock(b, '/conv1/Conv', '/act1/Mul');
  if (options.convBlock) {
    t = b.node('Conv', [t, b.random([4, 4, 3, 3], 0.3), b.random([4], 0.1)], same, { name: '/conv2/Conv' });
    t = square(b, batchNorm(b, t, 4, '/bn2/BatchNormalization'), '/act2/Mul');
  }
  const sum = b.node('Add', [branch(b, t, '/layer1'), t], {}, { name: '/layer1/Add' });
  return classifier(b, sum, '/act3/Mul');
}

const BLOCK = [
  'conv 4×6×6 → 4, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]',
  'poly [0, 0, 1]',
  'conv 4×6×6 → 4, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]',
];
const FIRST = ['conv 1×15×15 → 4, kernel 5×5, stride 2×2, pads [0, 0, 0, 0]', 'poly [0, 0, 1]'];
const END = ['poly [0, 0, 1]', 'dense 144→3'];

/**
 * tf2onnx writing Keras before its transpose optimizer: NHWC input, every Conv between
 * Transposes to NCHW and back, the last conv's bias an NHWC Add and its batch norm between
 * Transposes, the residual Add on NHWC tensors, x² as Pow.
 */
function tf2onnxResidual(): Uint8Array {
  const b = new ModelBuilder(72);
  const nchw = (t: string, name: string) => b.node('Transpose', [t], { perm: [0, 3, 1, 2] }, { name });
  const nhwc = (t: string, name: string) => b.node('Transpose', [t], { perm: [0, 2, 3, 1] }, { name });
  const pow = (t: string, name: string) => b.node('Pow', [t, b.init([], [2])], {}, { name });
  const x = b.input('input_1', ['unk__7', 15, 15, 1]);
  let t = b.node('Conv', [nchw(x, 'model/conv2d/Conv2D__6'), b.random([4, 1, 5, 5], 0.5), b.random([4], 0.2)], { kernel_shape: [5, 5], strides: [2, 2], auto_pad: { s: 'VALID' } }, { name: 'model/conv2d/BiasAdd' });
  const skip = pow(nhwc(t, 'model/conv2d/BiasAdd__10'), 'model/conv2d/square');
  t = b.node('Conv', [nchw(skip, 'model/conv2d_1/Conv2D__14'), b.random([4, 4, 3, 3], 0.3), b.random([4], 0.1)], { kernel_shape: [3, 3], auto_pad: { s: 'SAME_UPPER' } }, { name: 'model/conv2d_1/BiasAdd' });
  t = pow(nhwc(t, 'model/conv2d_1/BiasAdd__18'), 'model/conv2d_1/square');
  t = b.node('Conv', [nchw(t, 'model/conv2d_2/Conv2D__22'), b.random([4, 4, 3, 3], 0.3)], { kernel_shape: [3, 3], auto_pad: { s: 'SAME_UPPER' } }, { name: 'model/conv2d_2/Conv2D' });
  t = b.node('Add', [nhwc(t, 'model/conv2d_2/Conv2D__26'), b.random([4], 0.1)], {}, { name: 'model/conv2d_2/BiasAdd' });
  t = nhwc(batchNorm(b, nchw(t, 'model/batch_normalization/FusedBatchNormV3__30'), 4, 'model/batch_normalization/FusedBatchNormV3'), 'model/batch_normalization/FusedBatchNormV3__34');
  t = b.node('Add', [skip, t], {}, { name: 'model/add/add' });
  t = pow(t, 'model/activation/square');
  t = b.node('AveragePool', [nchw(t, 'model/average_pooling2d/AvgPool__38')], { kernel_shape: [2, 2], strides: [2, 2], auto_pad: { s: 'VALID' } }, { name: 'model/average_pooling2d/AvgPool' });
  t = nhwc(t, 'model/average_pooling2d/AvgPool__42');
  t = b.node('Reshape', [t, b.ints([-1, 36])], {}, { name: 'model/flatten/Reshape' });
  t = b.node('MatMul', [t, b.random([36, 3], 0.3)], {}, { name: 'model/dense/MatMul' });
  t = b.node('Add', [t, b.random([3], 0.2)], {}, { name: 'model/dense/BiasAdd' });
  return b.build(b.node('Softmax', [t], { axis: -1 }, { name: 'model/dense/Softmax', output: 'dense' }));
}

/** CNTK: a batch of one, Convs without bias and a Plus for each bias, Square as Mul, the residual add a Plus too, CNTK's W·x classifier. */
function cntkResidual(): Uint8Array {
  const b = new ModelBuilder(73);
  const conv = (t: string, w: string, attrs: Record<string, number[]>, name: string, plus: string) =>
    b.node('Add', [b.node('Conv', [t, w], { ...attrs, group: 1, dilations: [1, 1] }, { name }), b.random([4, 1, 1], 0.1)], {}, { name: plus });
  let t = conv(b.input('Input3', [1, 1, 15, 15]), b.random([4, 1, 5, 5], 0.5), { kernel_shape: [5, 5], strides: [2, 2], pads: [0, 0, 0, 0] }, 'Convolution28', 'Plus30');
  const skip = b.node('Mul', [t, t], {}, { name: 'Square32' });
  t = conv(skip, b.random([4, 4, 3, 3], 0.3), { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] }, 'Convolution40', 'Plus42');
  t = b.node('Mul', [t, t], {}, { name: 'Square44' });
  t = conv(t, b.random([4, 4, 3, 3], 0.3), { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] }, 'Convolution52', 'Plus54');
  t = b.node('Add', [batchNorm(b, t, 4, 'BatchNormalization56'), skip], {}, { name: 'Plus58' });
  t = b.node('Mul', [t, t], {}, { name: 'Square60' });
  t = b.node('AveragePool', [t], { kernel_shape: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0], count_include_pad: 1 }, { name: 'Pooling66' });
  return b.build(cntkClassifier(b, t, 36));
}

describe('a residual block (conv → x² → conv → batch norm, plus its input) imports as an add layer; float head = onnxruntime, engine reference = float head', () => {
  it('PyTorch style (NCHW) at --split input: the skip reads the first activation (layer 1)', async () => {
    const split = await check(pytorchResidual(), DIMS, 'input');
    expect(summary(split.head)).toEqual([...FIRST, ...BLOCK, 'add layer 1', ...END]);
  });

  it('PyTorch style with a conv block before the residual one, at --split input and after the first conv block', async () => {
    const model = pytorchResidual({ convBlock: true });
    const whole = await check(model, DIMS, 'input');
    expect(summary(whole.head)).toEqual([...FIRST, BLOCK[0], 'poly [0, 0, 1]', ...BLOCK, 'add layer 3', ...END]);
    const later = await check(model, DIMS, '/act1/Mul');
    expect(later).toMatchObject({ layout: 'nchw', features: { name: 'features', shape: ['N', 4, 6, 6] } });
    expect(summary(later.head)).toEqual([BLOCK[0], 'poly [0, 0, 1]', ...BLOCK, 'add layer 1', ...END]);
    const after = await check(model, DIMS, '/act3/Mul');
    expect(summary(after.head)).toEqual(['dense 144→3']);
  });

  it('tf2onnx style (NHWC, Transposes around every conv, the add on NHWC tensors) at --split input', async () => {
    const split = await check(tf2onnxResidual(), [3, 15, 15, 1], 'input', { softmax: true });
    expect(split.layout).toBe('nhwc');
    expect(summary(split.head)).toEqual([...FIRST, ...BLOCK, 'add layer 1', ...END]);
  });

  it('a Transpose on the skip side that runs after the branch has begun (the add on NHWC tensors, the branch in NCHW)', async () => {
    const b = new ModelBuilder(81);
    const nhwc = (t: string, name: string) => b.node('Transpose', [t], { perm: [0, 2, 3, 1] }, { name });
    const t = firstBlock(b);
    const sum = b.node('Add', [nhwc(branch(b, t, 'block'), 'block/nhwc'), nhwc(t, 'skip/nhwc')], {}, { name: 'add' });
    const back = b.node('Transpose', [sum], { perm: [0, 3, 1, 2] }, { name: 'nchw' });
    const split = await check(classifier(b, back, 'act3'), DIMS, 'input');
    expect(summary(split.head)).toEqual([...FIRST, ...BLOCK, 'add layer 1', ...END]);
  });

  it('CNTK style (a batch of one, Plus for the biases and the add) at --split input', async () => {
    const split = await check(cntkResidual(), [1, 1, 15, 15], 'input');
    expect(summary(split.head)).toEqual([...FIRST, ...BLOCK, 'add layer 1', 'poly [0, 0, 1]', 'dense 144→12', 'poly [0, 2, 1]', 'dense 12→5']);
  });

  it('two blocks in a row, the second reading the first add (pre-activation style: no activation after the add)', async () => {
    const b = new ModelBuilder(74);
    const t = firstBlock(b);
    const first = b.node('Add', [branch(b, t, 'block1'), t], {}, { name: 'add1' });
    const second = b.node('Add', [first, branch(b, square(b, first, 'pre2'), 'block2')], {}, { name: 'add2' });
    const split = await check(classifier(b, second, 'act3'), DIMS, 'input');
    expect(summary(split.head)).toEqual([...FIRST, ...BLOCK, 'add layer 1', 'poly [0, 0, 1]', ...BLOCK, 'add layer 5', ...END]);
  });

  it('a skip from a convolution (batch norm folded) whose branch starts with x²', async () => {
    const b = new ModelBuilder(75);
    let t = firstBlock(b);
    t = batchNorm(b, b.node('Conv', [t, b.random([4, 4, 3, 3], 0.3)], same, { name: 'conv2' }), 4, 'bn2');
    const sum = b.node('Add', [branch(b, square(b, t, 'pre'), 'block'), t], {}, { name: 'add' });
    const split = await check(classifier(b, sum, 'act3'), DIMS, 'input');
    expect(summary(split.head)).toEqual([...FIRST, BLOCK[0], 'poly [0, 0, 1]', ...BLOCK, 'add layer 2', ...END]);
  });

  it('an Add of a constant (a bias) and an Add of two expressions of one layer still fold as before', async () => {
    const b = new ModelBuilder(76);
    let t = b.node('Conv', [b.input('input', ['N', 1, 15, 15]), b.random([4, 1, 5, 5], 0.5)], { kernel_shape: [5, 5], strides: [2, 2] }, { name: 'conv1' });
    t = b.node('Add', [t, b.random([1, 4, 1, 1], 0.2)], {}, { name: 'bias' });
    t = b.node('Add', [square(b, t, 'act1'), t], {}, { name: 'x2_plus_x' });
    const split = await check(classifier(b, t, 'act2'), DIMS, 'input');
    expect(summary(split.head)).toEqual([FIRST[0], 'poly [0, 0, 1, 2, 1]', 'dense 144→3']);
  });
});

describe('splitPoints and residual blocks', () => {
  it('offers no split inside a block, nor at its input; before its first layer and after the add are offered', () => {
    expect(splitPoints(pytorchResidual())).toEqual(['input', '/act3/Mul', '/pool/AveragePool', '/flatten/Flatten']);
    expect(splitPoints(pytorchResidual({ convBlock: true }))).toEqual(['input', '/act1/Mul', '/act3/Mul', '/pool/AveragePool', '/flatten/Flatten']);
  });
});

/**
 * input 1×15×15 → conv 1→4 5×5 stride 2 → x² → conv 4→4 3×3 pad 1 → x² ('act2', or
 * `afterConv2`) → `block` → x² ('act3') → pool → Flatten → Gemm (`width` inputs, 36 by default).
 */
function withBlock(block: (b: ModelBuilder, t: string) => string, options: { afterConv2?: (b: ModelBuilder, t: string) => string; width?: number } = {}): Uint8Array {
  const b = new ModelBuilder(77);
  let t = firstBlock(b);
  t = b.node('Conv', [t, b.random([4, 4, 3, 3], 0.3), b.random([4], 0.1)], same, { name: 'conv2' });
  t = block(b, options.afterConv2 ? options.afterConv2(b, t) : square(b, t, 'act2'));
  const pooled = b.node('AveragePool', [square(b, t, 'act3')], { kernel_shape: [2, 2], strides: [2, 2] }, { name: 'pool' });
  const flat = b.node('Flatten', [pooled], { axis: 1 }, { name: 'flatten' });
  return b.build(linear(b, flat, options.width ?? 36, 3, 'fc'));
}

const REMEDY = String.raw`split after the block \(--split act3\) to keep it in the plaintext extractor$`;

describe('residual adds the engine cannot evaluate are refused, naming the node and the remedy', () => {
  it('a branch that ends in an activation; the remedy imports', async () => {
    const model = withBlock((b, t) => b.node('Add', [square(b, branch(b, t, 'block'), 'block/act2'), t], {}, { name: 'add' }));
    refused(
      model,
      'input',
      new RegExp(
        String.raw`^node 'add' \(Add\) adds its skip 'mul_\d+' to 'mul_\d+', the output of an activation: the engine joins a skip to a convolution's output only; ` +
          String.raw`add before the activation, so that the block ends with its convolution \(or a batch norm after it\), or ${REMEDY}`,
      ),
    );
    expect(summary((await check(model, DIMS, 'act3')).head)).toEqual(['dense 144→3']);
  });

  it('a branch that ends in an average pool', () => {
    const model = withBlock((b, t) => {
      const pooled = b.node('AveragePool', [branch(b, t, 'block')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'block/pool' });
      return b.node('Add', [pooled, t], {}, { name: 'add' });
    });
    refused(model, 'input', new RegExp(String.raw`^node 'add' \(Add\) adds its skip .*, the output of node 'block/pool' \(AveragePool\): the engine joins a skip to a convolution's output only; pool after the add, or ${REMEDY}`));
  });

  it('a branch that ends in a dense layer', () => {
    const b = new ModelBuilder(78);
    const t = square(b, linear(b, b.input('x', ['N', 6]), 6, 8, 'fc1'), 'act1');
    const sum = b.node('Add', [linear(b, square(b, linear(b, t, 8, 8, 'fc2'), 'act2'), 8, 8, 'fc3'), t], {}, { name: 'add' });
    const model = b.build(linear(b, square(b, sum, 'act3'), 8, 3, 'fc4'));
    refused(model, 'input', /^node 'add' \(Add\) adds its skip 'mul_\d+' to 'gemm_\d+', the output of a dense layer: the engine joins a skip to a convolution's output only; split after the block \(--split act3\)/);
  });

  it('a skip from the first encrypted layer\'s input: the split right at the block (after the first conv block of the model without a second one)', () => {
    refused(
      pytorchResidual(),
      '/act1/Mul',
      /^node '\/layer1\/Add' \(Add\) takes its skip from the head's input 'mul_\d+', which the device packs for the first encrypted layer alone: a residual add reads the output of an encrypted layer; split earlier, where an encrypted layer computes 'mul_\d+' \(sealed-edge inspect lists the split points\), or split after the block \(--split \/act3\/Mul\)/,
    );
  });

  it('a skip from the model input: at --split input, and from before a later split', () => {
    const b = new ModelBuilder(79);
    const x = b.input('image', ['N', 4, 6, 6]);
    const sum = b.node('Add', [branch(b, x, 'block'), x], {}, { name: 'add' });
    const model = classifier(b, sum, 'act3');
    refused(
      model,
      'input',
      /^node 'add' \(Add\) takes its skip from the head's input 'image', which the device packs for the first encrypted layer alone: a residual add reads the output of an encrypted layer; split after the block \(--split act3\) to keep it in the plaintext extractor$/,
    );
    refused(
      model,
      'block/act/Mul',
      /^node 'add' \(Add\) in the head adds 'image', which is computed before the split at 'mul_\d+', to a tensor of the head: the skip of a residual add must be an encrypted layer's output; split after the block \(--split act3\) to keep it in the plaintext extractor$/,
      'E_SPLIT',
    );
  });

  it('a split inside the block: the skip is computed before it', () => {
    refused(
      pytorchResidual({ convBlock: true }),
      '/layer1/act/Mul',
      /^node '\/layer1\/Add' \(Add\) in the head adds 'mul_\d+' from node '\/act2\/Mul' \(Mul\), which is computed before the split at 'mul_\d+', to a tensor of the head: the skip of a residual add must be an encrypted layer's output; split earlier, where an encrypted layer computes 'mul_\d+' \(sealed-edge inspect lists the split points\), or split after the block \(--split \/act3\/Mul\)/,
      'E_SPLIT',
    );
  });

  it('two tensors of different shapes (a broadcast add)', async () => {
    const b = new ModelBuilder(80);
    let t = b.node('Conv', [b.input('input', ['N', 1, 15, 15]), b.random([1, 1, 5, 5], 0.5)], { kernel_shape: [5, 5], strides: [2, 2] }, { name: 'conv1' });
    t = square(b, t, 'act1');
    let u = square(b, b.node('Conv', [t, b.random([4, 1, 3, 3], 0.3)], same, { name: 'block/conv1' }), 'block/act');
    u = b.node('Conv', [u, b.random([4, 4, 3, 3], 0.3)], same, { name: 'block/conv2' });
    const model = classifier(b, b.node('Add', [u, t], {}, { name: 'add' }), 'act3');
    expect((await run(model, randomInput(1, DIMS), DIMS)).dims).toEqual([3, 3]);
    refused(model, 'input', new RegExp(String.raw`^node 'add' \(Add\) adds 'mul_\d+' of shape \[N, 1, 6, 6\] and 'conv_\d+' of shape \[N, 4, 6, 6\]: a residual add needs two tensors of one shape, with no broadcast; ${REMEDY}`));
  });

  it('a projection shortcut (a strided 1×1 conv and a batch norm on the skip)', async () => {
    const model = withBlock(
      (b, t) => {
        let u = square(b, b.node('Conv', [t, b.random([8, 4, 3, 3], 0.3)], { ...same, strides: [2, 2] }, { name: 'block/conv1' }), 'block/act');
        u = batchNorm(b, b.node('Conv', [u, b.random([8, 8, 3, 3], 0.3)], same, { name: 'block/conv2' }), 8, 'block/bn2');
        const shortcut = batchNorm(b, b.node('Conv', [t, b.random([8, 4, 1, 1], 0.5)], { kernel_shape: [1, 1], strides: [2, 2] }, { name: 'block/downsample/0' }), 8, 'block/downsample/1');
        return b.node('Add', [u, shortcut], {}, { name: 'add' });
      },
      { width: 8 },
    );
    expect((await run(model, randomInput(1, DIMS), DIMS)).dims).toEqual([3, 3]);
    refused(
      model,
      'input',
      new RegExp(
        String.raw`^node 'add' \(Add\) adds two branches that both compute layers: node 'block/downsample/0' \(Conv\) is on the skip side \(a projection shortcut\), ` +
          String.raw`but the engine's residual add takes the block's input itself as its skip; ${REMEDY}`,
      ),
    );
  });

  it('a strided branch', () => {
    const model = withBlock((b, t) => {
      let u = square(b, b.node('Conv', [t, b.random([4, 4, 3, 3], 0.3)], { ...same, strides: [2, 2] }, { name: 'block/conv1' }), 'block/act');
      u = b.node('Conv', [u, b.random([4, 4, 3, 3], 0.3)], same, { name: 'block/conv2' });
      return b.node('Add', [u, t], {}, { name: 'add' });
    });
    refused(
      model,
      'input',
      new RegExp(
        String.raw`^node 'block/conv1' \(Conv\) in the branch of the residual add node 'add' \(Add\) has strides \[2, 2\]: the engine adds the two branches slot by slot, ` +
          String.raw`so the branch's convolutions and pools must keep the skip's size \(stride 1, 'same' padding\); ${REMEDY}`,
      ),
    );
  });

  it('a skip that is no layer output as such (scaled), or transposed against the branch', () => {
    const scaled = withBlock((b, t) => b.node('Add', [branch(b, t, 'block'), b.node('Mul', [t, b.init([], [0.5])], {}, { name: 'half' })], {}, { name: 'add' }));
    refused(
      scaled,
      'input',
      new RegExp(
        String.raw`^node 'add' \(Add\) takes its skip 'mul_\d+', which no encrypted layer outputs as such \(an average pool's output, or an activation scaled or shifted before a layer reads it\): ` +
          String.raw`the engine's residual add reads an earlier layer's output unchanged; take the skip from an activation or a convolution, or ${REMEDY}`,
      ),
    );
    const transposed = withBlock((b, t) => b.node('Add', [branch(b, t, 'block'), b.node('Transpose', [t], { perm: [0, 1, 3, 2] }, { name: 'swap' })], {}, { name: 'add' }));
    refused(transposed, 'input', new RegExp(String.raw`^node 'add' \(Add\) combines the same values in two different orders \(one transposed\): ${REMEDY}`));
  });

  it('an add right after another (two skips into one convolution)', () => {
    const model = withBlock((b, t) => {
      const first = b.node('Add', [branch(b, t, 'block'), t], {}, { name: 'add1' });
      return b.node('Add', [first, t], {}, { name: 'add2' });
    });
    refused(model, 'input', new RegExp(String.raw`^node 'add2' \(Add\) adds its skip 'mul_\d+' to 'add_\d+', the output of another residual add: the engine joins a skip to a convolution's output only; ${REMEDY}`));
  });

  it('a skip from a convolution read by an activation whose leading coefficient is not ±1 imports and matches, as with x²', async () => {
    const block = (lead: number) => (b: ModelBuilder, t: string) => {
      const act = b.node('Add', [b.node('Mul', [square(b, t, 'pre/square'), b.init([], [lead])], {}, { name: 'pre/scale' }), t], {}, { name: 'pre' });
      return b.node('Add', [branch(b, act, 'block'), t], {}, { name: 'add' });
    };
    const afterConv2 = (b: ModelBuilder, t: string) => batchNorm(b, t, 4, 'bn2');
    const scaled = await check(withBlock(block(0.25), { afterConv2 }), DIMS, 'input');
    expect(summary(scaled.head)).toEqual([...FIRST, BLOCK[0], 'poly [0, 1, 0.25]', ...BLOCK, 'add layer 2', ...END]);
    const split = await check(withBlock(block(1), { afterConv2 }), DIMS, 'input');
    expect(summary(split.head)).toEqual([...FIRST, BLOCK[0], 'poly [0, 1, 1]', ...BLOCK, 'add layer 2', ...END]);
  });
});
