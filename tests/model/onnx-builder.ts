/**
 * Builds small ONNX models in the style of each exporter, with seeded random weights, and
 * runs models with onnxruntime-node: what the import tests compare against.
 */
import * as ort from 'onnxruntime-node';
import { floatEvaluate, type Layer } from '../../src/he';
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

/** The head in float on each of `samples` feature vectors laid end to end. */
export function evaluateHead(head: readonly Layer[], features: Float32Array, samples: number): Float64Array {
  const width = features.length / samples;
  const outputs = [...Array(samples).keys()].map((s) => floatEvaluate(head, features.subarray(s * width, (s + 1) * width)));
  return Float64Array.from(outputs.flatMap((o) => Array.from(o)));
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
