import { describe, expect, it } from 'vitest';
import { ModelError, type ModelErrorCode } from '../../src/model/errors';
import { type ImportOptions, importOnnx } from '../../src/model/onnx';
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
    refused(relu, 'E_ACTIVATION', /node 'classifier\.act' \(Relu\) is a Relu in the classifier head.*--activation cryptodl-relu-3/);
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

  it('a skip connection in the head', () => {
    const bytes = head((b, t) => {
      const squared = b.node('Mul', [t, t], {}, { name: 'sq' });
      const next = b.node('Gemm', [squared, b.random([8, 8], 0.5)], { transB: 1 }, { name: 'fc_mid' });
      return b.node('Add', [next, t], {}, { name: 'residual' });
    });
    refused(bytes, 'E_UNSUPPORTED', /node 'residual' \(Add\) reads '.*' from before the last dense layer: skip connections/);
  });

  it('an unknown split node, and splits that leave no dense head', () => {
    refused(relu, 'E_SPLIT', /no node or tensor named 'fc9'; nodes near the output: .*'fc1' \(Gemm\)/, { split: 'fc9' });
    refused(head((b, t) => b.node('Mul', [t, t], {}, { name: 'square' })), 'E_SPLIT', /node 'square' \(Mul\) comes before the first dense layer/, { split: 'fc1' });
    refused(relu, 'E_SPLIT', /has no dense layer/, { split: 'fc2' });
  });
});
