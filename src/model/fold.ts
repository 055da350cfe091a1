/**
 * Constant folding of the layout ops exporters sometimes leave on weights when they do
 * not fold constants themselves (PyTorch with do_constant_folding=False writes a linear
 * layer on a 3-D input as MatMul(x, Transpose(W))): the head then sees plain constants.
 */
import type { GraphNode } from './graph';
import { DataType, intAttribute, intsAttribute, type ITensorProto, tensorDims, tensorValues } from './proto';

const NUMERIC: ReadonlySet<number> = new Set([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.INT64, DataType.INT32, DataType.INT8, DataType.UINT8]);
const FOLDABLE = new Set(['Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Cast']);

function transpose(values: Float64Array, dims: readonly number[], perm: readonly number[]): Float64Array {
  const outDims = perm.map((p) => dims[p]!);
  const strides = dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
  const out = new Float64Array(values.length);
  const index = new Array<number>(outDims.length).fill(0);
  for (let k = 0; k < out.length; k++) {
    out[k] = values[index.reduce((at, v, axis) => at + v * strides[perm[axis]!]!, 0)]!;
    for (let axis = outDims.length - 1; axis >= 0; axis--) {
      if (++index[axis]! < outDims[axis]!) break;
      index[axis] = 0;
    }
  }
  return out;
}

/** The shape a constant takes through `node`, or undefined when it cannot be worked out. */
function foldedDims(node: GraphNode, dims: readonly number[], input: (i: number) => number[] | undefined): number[] | undefined {
  const rank = dims.length;
  const count = dims.reduce((a, b) => a * b, 1);
  const axis = (a: number, r: number) => (a < 0 ? a + r : a);
  switch (node.op) {
    case 'Reshape': {
      const target = input(1);
      if (!target) return undefined;
      const out = target.map((d, i) => (d === 0 && intAttribute(node.proto, 'allowzero', 0) === 0 ? dims[i]! : d));
      const free = out.indexOf(-1);
      if (free >= 0) out[free] = count / out.reduce((a, b, i) => (i === free ? a : a * b), 1);
      return out;
    }
    case 'Flatten': {
      const at = axis(intAttribute(node.proto, 'axis', 1), rank);
      return [dims.slice(0, at).reduce((a, b) => a * b, 1), dims.slice(at).reduce((a, b) => a * b, 1)];
    }
    case 'Squeeze': {
      const axes = (intsAttribute(node.proto, 'axes') ?? input(1))?.map((a) => axis(a, rank));
      return dims.filter((d, i) => (axes ? !axes.includes(i) : d !== 1));
    }
    case 'Unsqueeze': {
      const axes = intsAttribute(node.proto, 'axes') ?? input(1);
      if (!axes) return undefined;
      const out = [...dims];
      for (const a of axes.map((a) => axis(a, rank + axes.length)).sort((x, y) => x - y)) out.splice(a, 0, 1);
      return out;
    }
    default:
      return [...dims];
  }
}

/** The constant `node` computes when all its inputs are constants and it only moves values around. */
export function foldConstant(node: GraphNode, constants: ReadonlyMap<string, ITensorProto>): ITensorProto | undefined {
  const inputs = node.inputs.filter((i) => i !== '');
  if (node.proto.domain || !FOLDABLE.has(node.op) || inputs.length === 0) return undefined;
  const tensors = node.inputs.map((i) => (i === '' ? undefined : constants.get(i)));
  if (inputs.some((i) => !constants.has(i)) || tensors.some((t) => t && !NUMERIC.has(t.dataType ?? 0))) return undefined;
  const where = `node ${node.label} (${node.op})`;
  const x = tensors[0]!;
  const dims = tensorDims(x);
  const input = (i: number) => (tensors[i] ? Array.from(tensorValues(tensors[i]!, where)) : undefined);
  const outDims = foldedDims(node, dims, input);
  if (outDims === undefined || outDims.reduce((a, b) => a * b, 1) !== dims.reduce((a, b) => a * b, 1)) return undefined;
  let values = tensorValues(x, where);
  if (node.op === 'Transpose') {
    const perm = intsAttribute(node.proto, 'perm') ?? dims.map((_, i) => dims.length - 1 - i);
    values = transpose(values, dims, perm);
    outDims.splice(0, outDims.length, ...perm.map((p) => dims[p]!));
  }
  const type = node.op === 'Cast' ? intAttribute(node.proto, 'to', DataType.FLOAT) : (x.dataType ?? DataType.FLOAT);
  if (!NUMERIC.has(type)) return undefined;
  const integer = type === DataType.INT64 || type === DataType.INT32;
  const name = node.outputs[0] ?? '';
  if (integer) return { name, dims: outDims, dataType: DataType.INT64, int64Data: Array.from(values, Math.trunc) };
  return { name, dims: outDims, dataType: DataType.DOUBLE, doubleData: Array.from(values) };
}
