/**
 * Builds small ONNX models in the style of each exporter, with seeded random weights, and
 * runs models with onnxruntime-node: what the import tests compare against.
 */
import * as ort from 'onnxruntime-node';
import type { ConvLayer, Layer } from '../../src/he';
import { type IAttributeProto, type INodeProto, type ITensorProto, type IValueInfoProto, onnx } from '../../src/model/proto';

ort.env.logLevel = 'error';

const FLOAT = 1;
const INT64 = 7;

type Attr = number | number[] | { f: number } | { floats: number[] } | { s: string } | { t: ITensorProto };

function attribute(name: string, value: Attr): IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'number') return { name, type: T.INT, i: value };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if ('f' in value) return { name, type: T.FLOAT, f: value.f };
  if ('floats' in value) return { name, type: T.FLOATS, floats: value.floats };
  if ('s' in value) return { name, type: T.STRING, s: new TextEncoder().encode(value.s) };
  return { name, type: T.TENSOR, t: value.t };
}

/** xorshift32 in [-1, 1): the same weights on every run. */
export function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s / 4294967296) * 2 - 1;
  };
}

export type Dim = number | string;

export class ModelBuilder {
  private readonly nodes: INodeProto[] = [];
  private readonly initializers: ITensorProto[] = [];
  private readonly inputs: IValueInfoProto[] = [];
  private count = 0;
  readonly rand: () => number;

  constructor(seed: number) {
    this.rand = random(seed);
  }

  private fresh(prefix: string): string {
    return `${prefix}_${this.count++}`;
  }

  input(name: string, shape: Dim[]): string {
    this.inputs.push({ name, type: { tensorType: { elemType: FLOAT, shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } });
    return name;
  }

  tensor(dims: number[], values: ArrayLike<number>, type = FLOAT, name = this.fresh('const')): ITensorProto {
    const t: ITensorProto = { name, dims, dataType: type };
    if (type === INT64) t.int64Data = Array.from(values);
    else t.rawData = new Uint8Array(Float32Array.from(values).buffer);
    return t;
  }

  /** A float initializer with the given values. */
  init(dims: number[], values: ArrayLike<number>, name?: string): string {
    const t = this.tensor(dims, values, FLOAT, name);
    this.initializers.push(t);
    return t.name!;
  }

  ints(values: number[]): string {
    const t = this.tensor([values.length], values, INT64);
    this.initializers.push(t);
    return t.name!;
  }

  /** A float initializer of uniform random values in [-scale, scale). */
  random(dims: number[], scale: number, name?: string): string {
    const n = dims.reduce((a, b) => a * b, 1);
    return this.init(dims, Array.from({ length: n }, () => scale * this.rand()), name);
  }

  /** A Constant node holding `values` (a scalar when dims is []). */
  constant(dims: number[], values: number[], type = FLOAT): string {
    return this.node('Constant', [], { value: { t: this.tensor(dims, values, type, '') } });
  }

  /** Adds a node; returns its first output, named `options.output` or generated. */
  node(op: string, inputs: string[], attrs: Record<string, Attr> = {}, options: { name?: string; output?: string } = {}): string {
    const outputs = [options.output ?? this.fresh(op.toLowerCase())];
    this.nodes.push({
      opType: op,
      name: options.name ?? this.fresh(op),
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outputs[0]!;
  }

  build(output: string, opset = 13): Uint8Array {
    return onnx.ModelProto.encode({
      irVersion: 8,
      producerName: 'sealed-edge tests',
      opsetImport: [{ domain: '', version: opset }],
      graph: {
        name: 'test',
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: [{ name: output, type: { tensorType: { elemType: FLOAT } } }],
      },
    }).finish();
  }
}

/** One line per layer, for asserting an imported head's shape. */
export const summary = (head: readonly Layer[]) =>
  head.map((l) => {
    if (l.kind === 'conv') return `conv ${l.inChannels}×${l.inHeight}×${l.inWidth} → ${l.outChannels}, kernel ${l.kernel.join('×')}, stride ${l.stride.join('×')}, pads [${l.pads.join(', ')}]`;
    if (l.kind === 'add') return `add layer ${l.from}`;
    return l.kind === 'dense' ? `dense ${l.inputs}→${l.outputs}` : `poly [${l.coeffs.map((c) => Number(c.toFixed(6))).join(', ')}]`;
  });

/** BatchNormalization with random statistics (positive variances). */
export function batchNorm(b: ModelBuilder, t: string, channels: number, name: string): string {
  const [scale, shift, mean] = [b.random([channels], 1), b.random([channels], 0.5), b.random([channels], 0.5)];
  const variance = b.init([channels], Array.from({ length: channels }, () => 0.5 + Math.abs(b.rand())));
  return b.node('BatchNormalization', [t, scale, shift, mean, variance], { epsilon: { f: 1e-3 } }, { name });
}

/** PyTorch's Linear: Gemm with transB=1, weights outputs × inputs. */
export const linear = (b: ModelBuilder, t: string, inputs: number, outputs: number, name: string) =>
  b.node('Gemm', [t, b.random([outputs, inputs], 0.3), b.random([outputs], 0.1)], { alpha: { f: 1 }, beta: { f: 1 }, transB: 1 }, { name });

export const square = (b: ModelBuilder, t: string, name: string) => b.node('Mul', [t, t], {}, { name });

/**
 * CNTK's classifier as it exports it: Reshape to a vector, W·x (MatMul with the input on
 * the right) + Plus, x²+2x, Reshape to a column, W·x + Plus: `features` → 12 → 5.
 */
export function cntkClassifier(b: ModelBuilder, features: string, width: number): string {
  let t = b.node('Reshape', [features, b.ints([width])], {}, { name: 'Times212_reshape0' });
  t = b.node('MatMul', [b.random([12, width], 0.3), t], {}, { name: 'Times212' });
  t = b.node('Add', [t, b.random([12], 0.2)], {}, { name: 'Plus214' });
  const twice = b.node('Mul', [t, b.constant([], [2])]);
  t = b.node('Add', [b.node('Mul', [t, t]), twice], {}, { name: 'Activation216' });
  t = b.node('Reshape', [t, b.ints([12, 1])], {}, { name: 'Times230_reshape1' });
  t = b.node('MatMul', [b.random([5, 12], 0.3), t], {}, { name: 'Times230' });
  return b.node('Add', [t, b.random([5, 1], 0.2)], {}, { name: 'Plus232', output: 'Plus232_Output_0' });
}

/** Runs a single-input, single-output model; returns the output's values and dims. */
export async function run(model: Uint8Array, input: Float32Array, dims: number[]): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const session = await ort.InferenceSession.create(model);
  try {
    const result = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', input, dims) });
    const out = result[session.outputNames[0]!]!;
    return { data: out.data as Float32Array, dims: out.dims };
  } finally {
    await session.release();
  }
}

export function randomInput(seed: number, dims: number[]): Float32Array {
  const rand = random(seed);
  return Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => rand());
}

/** A convolution in float64 by its definition: out[o][y][x] = b[o] + Σ w[o][c][dy][dx]·in[c][y·sh + dy − top][x·sw + dx − left]. */
export function convolve(layer: ConvLayer, input: ArrayLike<number>): Float64Array {
  const { inChannels: channels, inHeight: h, inWidth: w, outChannels, kernel: [kh, kw], stride: [sh, sw], pads: [top, left, bottom, right] } = layer;
  const oh = Math.floor((h + top + bottom - kh) / sh) + 1;
  const ow = Math.floor((w + left + right - kw) / sw) + 1;
  const out = new Float64Array(outChannels * oh * ow);
  for (let o = 0; o < outChannels; o++) {
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) {
        let sum = layer.bias?.[o] ?? 0;
        for (let c = 0; c < channels; c++) {
          for (let dy = 0; dy < kh; dy++) {
            for (let dx = 0; dx < kw; dx++) {
              const [iy, ix] = [y * sh + dy - top, x * sw + dx - left];
              if (iy >= 0 && iy < h && ix >= 0 && ix < w) sum += layer.weights[((o * channels + c) * kh + dy) * kw + dx]! * input[(c * h + iy) * w + ix]!;
            }
          }
        }
        out[(o * oh + y) * ow + x] = sum;
      }
    }
  }
  return out;
}

/** The head's layers in float64, each by its definition (not the engine's packed plan). */
export function evaluateLayers(layers: readonly Layer[], input: ArrayLike<number>): Float64Array {
  let v: Float64Array = Float64Array.from(input);
  for (const layer of layers) {
    if (layer.kind === 'conv') {
      v = convolve(layer, v);
    } else if (layer.kind === 'dense') {
      if (v.length !== layer.inputs) throw new Error(`a dense layer of ${layer.inputs} inputs reads ${v.length} values`);
      const x = v;
      v = Float64Array.from({ length: layer.outputs }, (_, r) => {
        let sum = layer.bias?.[r] ?? 0;
        for (let c = 0; c < layer.inputs; c++) sum += layer.weights[r * layer.inputs + c]! * x[c]!;
        return sum;
      });
    } else if (layer.kind === 'poly') {
      v = v.map((t) => layer.coeffs.reduceRight((acc, a) => acc * t + a, 0));
    } else {
      throw new Error('a residual add needs the float model of src/he (floatEvaluate)');
    }
  }
  return v;
}

/** The head in float on each of `samples` feature vectors laid end to end. */
export function evaluateHead(head: readonly Layer[], features: Float32Array, samples: number): Float64Array {
  const width = features.length / samples;
  const outputs = [...Array(samples).keys()].map((s) => evaluateLayers(head, features.subarray(s * width, (s + 1) * width)));
  return Float64Array.from(outputs.flatMap((o) => Array.from(o)));
}

/** One image [H, W, C] (flattened) in channel-major order C×H×W: what the device does for an 'nhwc' head. */
export function channelsFirst(image: ArrayLike<number>, [height, width, channels]: readonly [number, number, number]): Float64Array {
  const out = new Float64Array(image.length);
  for (let c = 0; c < channels; c++) for (let i = 0; i < height * width; i++) out[c * height * width + i] = image[i * channels + c]!;
  return out;
}

/** The largest |a − b| relative to max(1, |a|). */
export function maxRelativeDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(a[i]!)));
  return max;
}

export function softmaxRows(values: ArrayLike<number>, rows: number): Float64Array {
  const width = values.length / rows;
  const out = new Float64Array(values.length);
  for (let r = 0; r < rows; r++) {
    const row = Array.from({ length: width }, (_, c) => values[r * width + c]!);
    const max = Math.max(...row);
    const exps = row.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    exps.forEach((e, c) => (out[r * width + c] = e / sum));
  }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}
