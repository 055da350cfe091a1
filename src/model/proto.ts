/**
 * The ONNX protobuf messages (onnx-proto's generated code) and what reading them takes:
 * decoding a model with clear errors, 64-bit integers, tensor values, node attributes.
 */
// onnx-proto is CommonJS whose exports Node cannot name statically: import the default.
import onnxProto from 'onnx-proto';
import type { onnx as Onnx } from 'onnx-proto';
import { fail } from './errors';

export const { onnx } = onnxProto;
export type ModelProto = Onnx.ModelProto;
export type IModelProto = Onnx.IModelProto;
export type IGraphProto = Onnx.IGraphProto;
export type INodeProto = Onnx.INodeProto;
export type ITensorProto = Onnx.ITensorProto;
export type IAttributeProto = Onnx.IAttributeProto;
export type IValueInfoProto = Onnx.IValueInfoProto;

/**
 * protobufjs returns int64 fields as Long objects when the `long` package can be
 * required (Node) and as numbers otherwise (browser bundles).
 */
type Int64 = number | { toNumber(): number } | null | undefined;

export function int(value: Int64): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

/** ModelProto's field numbers and their wire types (0 varint, 2 length-delimited). */
const MODEL_FIELDS: Record<number, number> = { 1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2 };

/** Whether the bytes open with a ModelProto field: tells "not a model" from "a model cut short". */
function startsLikeModel(bytes: Uint8Array): boolean {
  let tag = 0;
  for (let i = 0; i < Math.min(bytes.length, 5); i++) {
    tag += (bytes[i]! & 0x7f) * 2 ** (7 * i);
    if (bytes[i]! < 0x80) return MODEL_FIELDS[Math.floor(tag / 8)] === tag % 8;
  }
  return false;
}

/** Decodes a model; protobuf decoding errors become E_TRUNCATED / E_FORMAT. */
export function decodeModel(bytes: Uint8Array, source: string): ModelProto {
  if (bytes.length === 0) fail('E_FORMAT', `${source}: the file is empty, not an ONNX model`);
  if (!startsLikeModel(bytes)) fail('E_FORMAT', `${source}: not an ONNX model (it does not start with a ModelProto field)`);
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    // protobufjs throws a RangeError when a length or value runs past the end of the data.
    if (error instanceof RangeError) fail('E_TRUNCATED', `${source}: the data ends early (${error.message}): the file is truncated`);
    fail('E_FORMAT', `${source}: not an ONNX model (${(error as Error).message})`);
  }
  // Protobuf accepts many byte strings as a message with unknown fields: an ONNX model
  // must at least carry a graph with nodes and an operator set.
  if ((model.graph?.node ?? []).length === 0 || model.opsetImport.length === 0) {
    fail('E_FORMAT', `${source}: not an ONNX model (no graph with nodes and operator set found)`);
  }
  return model;
}

/** ONNX TensorProto.DataType values this module reads. */
export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, FLOAT16: 10, DOUBLE: 11 } as const;

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction === 0 ? sign * Infinity : NaN;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

export function tensorDims(tensor: ITensorProto): number[] {
  return (tensor.dims ?? []).map((d) => int(d));
}

/** A constant tensor's values as doubles, whatever its storage (typed fields or raw little-endian bytes). */
export function tensorValues(tensor: ITensorProto, where: string): Float64Array {
  const name = tensor.name ? `tensor '${tensor.name}'` : 'a constant tensor';
  if (tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    fail('E_UNSUPPORTED', `${where}: ${name} keeps its data in an external file; save the model with all tensors inside it (onnx.save(model, path, save_as_external_data=False))`);
  }
  const count = tensorDims(tensor).reduce((a, b) => a * b, 1);
  const type = tensor.dataType ?? 0;
  const raw = tensor.rawData;
  let values: Float64Array;
  if (raw && raw.length > 0) {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const read: Record<number, [number, (at: number) => number]> = {
      [DataType.FLOAT]: [4, (at) => view.getFloat32(at, true)],
      [DataType.DOUBLE]: [8, (at) => view.getFloat64(at, true)],
      [DataType.FLOAT16]: [2, (at) => halfToFloat(view.getUint16(at, true))],
      [DataType.INT64]: [8, (at) => Number(view.getBigInt64(at, true))],
      [DataType.INT32]: [4, (at) => view.getInt32(at, true)],
      [DataType.INT8]: [1, (at) => view.getInt8(at)],
      [DataType.UINT8]: [1, (at) => view.getUint8(at)],
    };
    const reader = read[type];
    if (reader === undefined) fail('E_UNSUPPORTED', `${where}: ${name} has data type ${type}, which this importer does not read`);
    const [size, get] = reader;
    if (raw.length !== count * size) {
      fail('E_FORMAT', `${where}: ${name} has ${raw.length} bytes of data, its shape [${tensorDims(tensor).join(', ')}] needs ${count * size}`);
    }
    values = Float64Array.from({ length: count }, (_, i) => get(i * size));
  } else if (type === DataType.FLOAT) {
    values = Float64Array.from(tensor.floatData ?? []);
  } else if (type === DataType.DOUBLE) {
    values = Float64Array.from(tensor.doubleData ?? []);
  } else if (type === DataType.INT64) {
    values = Float64Array.from(tensor.int64Data ?? [], (v) => int(v));
  } else if (type === DataType.FLOAT16) {
    // int32_data holds float16 values as their bit patterns.
    values = Float64Array.from(tensor.int32Data ?? [], halfToFloat);
  } else if (type === DataType.INT32 || type === DataType.INT8 || type === DataType.UINT8) {
    values = Float64Array.from(tensor.int32Data ?? []);
  } else {
    fail('E_UNSUPPORTED', `${where}: ${name} has data type ${type}, which this importer does not read`);
  }
  if (values.length !== count) {
    fail('E_FORMAT', `${where}: ${name} holds ${values.length} values, its shape [${tensorDims(tensor).join(', ')}] needs ${count}`);
  }
  return values;
}

/** Attribute `name` of a node, or undefined. */
export function attribute(node: INodeProto, name: string): IAttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}

export function intAttribute(node: INodeProto, name: string, fallback: number): number {
  const a = attribute(node, name);
  return a ? int(a.i) : fallback;
}

export function floatAttribute(node: INodeProto, name: string, fallback: number): number {
  const a = attribute(node, name);
  return a ? (a.f ?? 0) : fallback;
}

export function intsAttribute(node: INodeProto, name: string): number[] | undefined {
  const a = attribute(node, name);
  return a ? (a.ints ?? []).map((v) => int(v)) : undefined;
}

export function stringAttribute(node: INodeProto, name: string, fallback: string): string {
  const a = attribute(node, name);
  return a?.s ? new TextDecoder().decode(a.s) : fallback;
}
