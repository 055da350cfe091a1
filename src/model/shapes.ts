/**
 * Static shape inference for the ops CNN exporters emit, enough to know the shape of the
 * features tensor and the layout of the head's tensors. Dimensions are numbers, symbolic
 * names (an input's dim_param, such as a batch 'N'), or '?' when unknown. Small integer
 * tensors computed from shapes (Shape → Gather → Concat → Reshape, as tf2onnx writes a
 * Keras Flatten with a dynamic batch) are followed by value so that such a Reshape's
 * result is known too. Tensors it cannot infer are simply absent; the model's own
 * value_info fills in where present.
 */
import type { Graph, GraphNode } from './graph';
import {
  DataType,
  intAttribute,
  intsAttribute,
  type ITensorProto,
  type IValueInfoProto,
  onnx,
  stringAttribute,
  tensorDims,
  tensorValues,
} from './proto';

export type Dim = number | string;
export type Shape = readonly Dim[];

export const UNKNOWN = '?';

/** Integer tensors up to this length are followed by value: shapes, axes, pads. */
const MAX_SHAPE_VALUES = 16;

const UNARY = new Set([
  'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'Elu', 'Selu', 'Softplus', 'Softsign', 'HardSigmoid', 'HardSwish', 'Clip',
  'Abs', 'Neg', 'Exp', 'Log', 'Sqrt', 'Reciprocal', 'Erf', 'Cast', 'Softmax', 'LogSoftmax', 'BatchNormalization',
  'LRN', 'InstanceNormalization', 'LayerNormalization', 'PRelu', 'Floor', 'Ceil', 'Round', 'Sign', 'Not', 'Gelu',
  'Mish', 'Identity', 'Dropout',
]);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'Equal', 'Greater', 'Less', 'Where', 'And', 'Or']);

/** The shape a value_info declares, or undefined without one. */
export function declaredShape(info: IValueInfoProto | undefined): Shape | undefined {
  const shape = info?.type?.tensorType?.shape;
  if (!shape) return undefined;
  return (shape.dim ?? []).map((d) => {
    const value = typeof d.dimValue === 'number' ? d.dimValue : (d.dimValue?.toNumber() ?? 0);
    if (value > 0) return value;
    return d.dimParam || UNKNOWN;
  });
}

/** The product of dims: a number, the one symbol times 1, or '?'. */
function product(dims: Shape): Dim {
  let numeric = 1;
  const symbols = dims.filter((d) => typeof d === 'string');
  for (const d of dims) if (typeof d === 'number') numeric *= d;
  if (symbols.length === 0) return numeric;
  if (symbols.length === 1 && numeric === 1 && symbols[0] !== UNKNOWN) return symbols[0]!;
  return UNKNOWN;
}

/** The dim d such that product(known) · d = product(total), or '?'. */
function quotient(total: Shape, known: Shape): Dim {
  if ([...total, ...known].includes(UNKNOWN)) return UNKNOWN;
  const symbols = total.filter((d): d is string => typeof d === 'string');
  for (const s of known) {
    if (typeof s !== 'string') continue;
    const at = symbols.indexOf(s);
    if (at < 0) return UNKNOWN;
    symbols.splice(at, 1);
  }
  const numeric = (dims: Shape) => dims.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
  const ratio = numeric(total) / numeric(known);
  if (symbols.length === 0) return Number.isInteger(ratio) ? ratio : UNKNOWN;
  return symbols.length === 1 && ratio === 1 ? symbols[0]! : UNKNOWN;
}

function broadcast(shapes: Shape[]): Shape | undefined {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let k = 0; k < rank; k++) {
    const dims = shapes.map((s) => s[s.length - rank + k] ?? 1).filter((d) => d !== 1);
    const distinct = [...new Set(dims)];
    if (distinct.length === 0) out.push(1);
    else if (distinct.length === 1) out.push(distinct[0]!);
    else out.push(distinct.find((d) => typeof d === 'number') ?? UNKNOWN);
  }
  return out;
}

const normalizeAxis = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);

/** Output spatial size of a convolution or pooling window along one axis. */
function windowed(size: Dim, kernel: number, stride: number, dilation: number, pads: number, ceil: boolean, autoPad: string): Dim {
  if (typeof size !== 'number') return UNKNOWN;
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') return Math.ceil(size / stride);
  const span = size + (autoPad === 'VALID' ? 0 : pads) - dilation * (kernel - 1) - 1;
  return (ceil ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
}

function windowShape(node: GraphNode, x: Shape, kernel: number[]): Shape {
  const spatial = x.length - 2;
  const strides = intsAttribute(node.proto, 'strides') ?? Array<number>(spatial).fill(1);
  const dilations = intsAttribute(node.proto, 'dilations') ?? Array<number>(spatial).fill(1);
  const pads = intsAttribute(node.proto, 'pads') ?? Array<number>(2 * spatial).fill(0);
  const ceil = intAttribute(node.proto, 'ceil_mode', 0) === 1;
  const autoPad = stringAttribute(node.proto, 'auto_pad', 'NOTSET');
  return x.slice(2).map((size, i) =>
    windowed(size, kernel[i] ?? 1, strides[i] ?? 1, dilations[i] ?? 1, (pads[i] ?? 0) + (pads[i + spatial] ?? 0), ceil, autoPad),
  );
}

function matmulShape(a: Shape, b: Shape): Shape {
  const a2 = a.length === 1 ? [1, a[0]!] : a;
  const b2 = b.length === 1 ? [b[0]!, 1] : b;
  const batch = broadcast([a2.slice(0, -2), b2.slice(0, -2)]) ?? [];
  return [...batch, ...(a.length === 1 ? [] : [a2[a2.length - 2]!]), ...(b.length === 1 ? [] : [b2[b2.length - 1]!])];
}

export class ShapeInference {
  readonly shapes = new Map<string, Shape>();
  /** Values of small integer tensors that hold shapes, dims possibly symbolic. */
  readonly values = new Map<string, Dim[]>();

  constructor(private readonly graph: Graph) {
    for (const [name, tensor] of graph.constants) this.setConstant(name, tensor);
    for (const input of graph.inputs) {
      const shape = declaredShape(input);
      if (shape) this.shapes.set(input.name ?? '', shape);
    }
    for (const node of graph.nodes) this.infer(node);
  }

  /** The inferred shape, or the one the model declares, or undefined. */
  shapeOf(name: string): Shape | undefined {
    return this.shapes.get(name) ?? declaredShape(this.graph.valueInfo.get(name));
  }

  private setConstant(name: string, tensor: ITensorProto): void {
    const dims = tensorDims(tensor);
    this.shapes.set(name, dims);
    const integer = tensor.dataType === DataType.INT64 || tensor.dataType === DataType.INT32;
    const small = dims.length <= 1 && (dims[0] ?? 1) <= MAX_SHAPE_VALUES;
    if (integer && small && tensor.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) {
      this.values.set(name, Array.from(tensorValues(tensor, `tensor '${name}'`)));
    }
  }

  private infer(node: GraphNode): void {
    if (node.proto.domain) return;
    const shapeOf = (i: number) => (node.inputs[i] ? this.shapeOf(node.inputs[i]!) : undefined);
    const valueOf = (i: number) => (node.inputs[i] ? this.values.get(node.inputs[i]!) : undefined);
    const out = node.outputs[0] ?? '';
    const set = (shape: Shape | undefined, value?: Dim[]) => {
      if (shape) this.shapes.set(out, shape);
      if (value) this.values.set(out, value);
    };
    const x = shapeOf(0);
    const op = node.op;
    if (op === 'Constant') return;
    if (UNARY.has(op)) {
      set(x, op === 'Cast' ? valueOf(0) : undefined);
      if (op === 'Dropout' && node.outputs[1] && x) this.shapes.set(node.outputs[1], x);
      return;
    }
    if (BROADCAST.has(op)) {
      const shapes = node.inputs.map((_, i) => shapeOf(i));
      if (shapes.every((s): s is Shape => s !== undefined)) set(broadcast(shapes));
      return;
    }
    if (!x) return;
    const rank = x.length;
    switch (op) {
      case 'Conv': {
        const w = shapeOf(1);
        if (!w) return;
        const kernel = intsAttribute(node.proto, 'kernel_shape') ?? w.slice(2).map((d) => (typeof d === 'number' ? d : 1));
        set([x[0]!, w[0]!, ...windowShape(node, x, kernel)]);
        return;
      }
      case 'MaxPool':
      case 'AveragePool':
      case 'LpPool': {
        const shape = [x[0]!, x[1]!, ...windowShape(node, x, intsAttribute(node.proto, 'kernel_shape') ?? [])];
        set(shape);
        if (node.outputs[1]) this.shapes.set(node.outputs[1], shape);
        return;
      }
      case 'GlobalAveragePool':
      case 'GlobalMaxPool':
        set([x[0]!, x[1]!, ...x.slice(2).map(() => 1)]);
        return;
      case 'Flatten': {
        const axis = normalizeAxis(intAttribute(node.proto, 'axis', 1), rank);
        set([product(x.slice(0, axis)), product(x.slice(axis))]);
        return;
      }
      case 'Reshape': {
        const target = valueOf(1);
        if (!target) return;
        const allowZero = intAttribute(node.proto, 'allowzero', 0) === 1;
        const dims = target.map((d, i) => (d === 0 && !allowZero ? (x[i] ?? UNKNOWN) : d));
        const free = dims.indexOf(-1);
        if (free >= 0) dims[free] = quotient(x, dims.filter((_, i) => i !== free));
        set(dims);
        return;
      }
      case 'Transpose': {
        const perm = intsAttribute(node.proto, 'perm') ?? x.map((_, i) => rank - 1 - i);
        set(perm.map((p) => x[p] ?? UNKNOWN));
        return;
      }
      case 'Gemm': {
        const b = shapeOf(1);
        if (!b || rank !== 2 || b.length !== 2) return;
        const m = intAttribute(node.proto, 'transA', 0) ? x[1]! : x[0]!;
        const n = intAttribute(node.proto, 'transB', 0) ? b[0]! : b[1]!;
        set([m, n]);
        return;
      }
      case 'MatMul': {
        const b = shapeOf(1);
        if (b) set(matmulShape(x, b));
        return;
      }
      case 'Squeeze':
      case 'Unsqueeze': {
        const axes = intsAttribute(node.proto, 'axes') ?? valueOf(1)?.map(Number);
        if (op === 'Squeeze') {
          const drop = axes ? new Set(axes.map((a) => normalizeAxis(a, rank))) : new Set(x.flatMap((d, i) => (d === 1 ? [i] : [])));
          set(x.filter((_, i) => !drop.has(i)), drop.size === rank ? valueOf(0) : undefined);
        } else if (axes) {
          const outRank = rank + axes.length;
          const insert = new Set(axes.map((a) => normalizeAxis(a, outRank)));
          const shape: Dim[] = [];
          let next = 0;
          for (let i = 0; i < outRank; i++) shape.push(insert.has(i) ? 1 : (x[next++] ?? UNKNOWN));
          const v = valueOf(0);
          set(shape, rank === 0 && v ? v : undefined);
        }
        return;
      }
      case 'Concat': {
        const shapes = node.inputs.map((_, i) => shapeOf(i));
        if (!shapes.every((s): s is Shape => s !== undefined)) return;
        const axis = normalizeAxis(intAttribute(node.proto, 'axis', 0), rank);
        const sizes = shapes.map((s) => s[axis] ?? UNKNOWN);
        const total = sizes.every((d) => typeof d === 'number') ? sizes.reduce<number>((a, b) => a + (b as number), 0) : UNKNOWN;
        const values = node.inputs.map((_, i) => valueOf(i));
        set(
          x.map((d, i) => (i === axis ? total : d)),
          rank === 1 && values.every((v) => v !== undefined) ? values.flat() : undefined,
        );
        return;
      }
      case 'Shape': {
        const start = normalizeAxis(intAttribute(node.proto, 'start', 0), rank);
        const end = normalizeAxis(intAttribute(node.proto, 'end', rank), rank);
        const dims = x.slice(start, end);
        set([dims.length], [...dims]);
        return;
      }
      case 'Gather': {
        const indices = shapeOf(1);
        const idx = valueOf(1);
        if (!indices) return;
        const axis = normalizeAxis(intAttribute(node.proto, 'axis', 0), rank);
        const data = valueOf(0);
        const picked = data && idx ? idx.map((i) => data[normalizeAxis(Number(i), data.length)] ?? UNKNOWN) : undefined;
        set([...x.slice(0, axis), ...indices, ...x.slice(axis + 1)], picked);
        return;
      }
      case 'Slice': {
        const starts = valueOf(1)?.map(Number) ?? intsAttribute(node.proto, 'starts');
        const ends = valueOf(2)?.map(Number) ?? intsAttribute(node.proto, 'ends');
        if (!starts || !ends) return;
        const axes = valueOf(3)?.map(Number) ?? intsAttribute(node.proto, 'axes') ?? starts.map((_, i) => i);
        const steps = valueOf(4)?.map(Number) ?? starts.map(() => 1);
        const shape: Dim[] = [...x];
        const data = valueOf(0);
        let value: Dim[] | undefined;
        axes.forEach((a, k) => {
          const axis = normalizeAxis(a, rank);
          const size = x[axis];
          if (typeof size !== 'number' || steps[k] !== 1) {
            shape[axis] = UNKNOWN;
            return;
          }
          const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + size : v, 0), size);
          const [s, e] = [clamp(starts[k]!), clamp(ends[k]!)];
          shape[axis] = Math.max(0, e - s);
          if (rank === 1 && data) value = data.slice(s, e);
        });
        set(shape, value);
        return;
      }
      case 'Pad': {
        const pads = valueOf(1)?.map(Number) ?? intsAttribute(node.proto, 'pads');
        if (!pads || pads.length !== 2 * rank) return;
        set(x.map((d, i) => (typeof d === 'number' ? d + pads[i]! + pads[i + rank]! : d)));
        return;
      }
    }
  }
}
