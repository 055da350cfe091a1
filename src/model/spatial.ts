/**
 * The spatial ops the encrypted part may start with, as the head builder needs them: the
 * padding ONNX's auto_pad stands for, an average pool as a sparse linear map, an average
 * pool merged into the convolution before it, and transposes as permutations of the
 * flattened per-sample tensor. Channel-major (C, H, W) order throughout, as ONNX's Flatten
 * of an NCHW tensor and the engine's ConvLayer use.
 */
import { fail } from './errors';
import type { Dim, Shape } from './shapes';

/** [top, left, bottom, right], ONNX's `pads` order for two spatial axes. */
export type Pads = [number, number, number, number];

/** A linear map kept sparse: row r is Σ_k values[r][k]·x[cols[r][k]] + bias[r]. */
export interface SparseLinear {
  readonly kind: 'sparse';
  readonly inputs: number;
  readonly outputs: number;
  readonly cols: Int32Array[];
  readonly values: Float64Array[];
  readonly bias: Float64Array;
}

/** The convolution the builder assembles: the engine's ConvLayer with writable weights and a bias always present. */
export interface MutableConv {
  readonly kind: 'conv';
  readonly inChannels: number;
  readonly inHeight: number;
  readonly inWidth: number;
  readonly outChannels: number;
  readonly kernel: [number, number];
  readonly stride: [number, number];
  readonly pads: Pads;
  readonly weights: Float64Array;
  readonly bias: Float64Array;
}

/** C, H, W of a tensor [batch, C, H, W] whose batch is symbolic or 1 and whose other dims are known. */
export function imageDims(shape: Shape | undefined): [number, number, number] | undefined {
  if (shape === undefined || shape.length !== 4) return undefined;
  const [batch, ...chw] = shape;
  if (typeof batch === 'number' && batch !== 1) return undefined;
  return chw.every((d): d is number => typeof d === 'number') ? (chw as [number, number, number]) : undefined;
}

/**
 * The values one sample holds: the product of the numeric dims, a symbolic dim standing
 * for the batch. Undefined when a dim is unknown or more than one is symbolic.
 */
export function sampleSize(shape: Shape | undefined): number | undefined {
  if (shape === undefined) return undefined;
  const symbols = shape.filter((d) => typeof d === 'string');
  if (symbols.length > 1 || symbols.includes('?')) return undefined;
  return shape.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
}

/**
 * The padding of a convolution or pooling window along H and W: explicit `pads`, or what
 * auto_pad VALID / SAME_UPPER / SAME_LOWER stands for (SAME: output ceil(size / stride),
 * the odd pixel at the bottom and right for UPPER, at the top and left for LOWER).
 */
export function windowPads(
  where: string,
  autoPad: string,
  explicit: readonly number[] | undefined,
  size: readonly [number, number],
  kernel: readonly [number, number],
  stride: readonly [number, number],
): Pads {
  switch (autoPad) {
    case 'NOTSET': {
      const pads = explicit ?? [0, 0, 0, 0];
      if (pads.length !== 4 || pads.some((p) => !Number.isInteger(p) || p < 0)) fail('E_UNSUPPORTED', `${where} has pads [${pads.join(', ')}]: two spatial axes need four non-negative pads`);
      return [pads[0]!, pads[1]!, pads[2]!, pads[3]!];
    }
    case 'VALID':
      return [0, 0, 0, 0];
    case 'SAME_UPPER':
    case 'SAME_LOWER': {
      const total = [0, 1].map((a) => Math.max(0, (Math.ceil(size[a]! / stride[a]!) - 1) * stride[a]! + kernel[a]! - size[a]!));
      const before = total.map((t) => (autoPad === 'SAME_UPPER' ? Math.floor(t / 2) : Math.ceil(t / 2)));
      return [before[0]!, before[1]!, total[0]! - before[0]!, total[1]! - before[1]!];
    }
    default:
      return fail('E_UNSUPPORTED', `${where} has auto_pad '${autoPad}': only NOTSET (explicit pads), VALID, SAME_UPPER and SAME_LOWER are supported`);
  }
}

/** Output size of a window along one axis (floor mode). */
const windowOutput = (size: number, kernel: number, stride: number, before: number, after: number) => Math.floor((size + before + after - kernel) / stride) + 1;

/**
 * An average pool over C×H×W as a sparse linear map to C×oh×ow: each output averages the
 * window's values inside the input, divided by the whole window (count_include_pad=1) or by
 * the values inside the input only (count_include_pad=0, ONNX's default).
 */
export function poolMatrix(
  [channels, height, width]: readonly [number, number, number],
  kernel: readonly [number, number],
  stride: readonly [number, number],
  pads: Pads,
  countIncludePad: boolean,
): { map: SparseLinear; outHeight: number; outWidth: number } {
  const [kh, kw] = kernel;
  const [sh, sw] = stride;
  const [pt, pl, pb, pr] = pads;
  const outHeight = windowOutput(height, kh, sh, pt, pb);
  const outWidth = windowOutput(width, kw, sw, pl, pr);
  const cols: Int32Array[] = [];
  const values: Float64Array[] = [];
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < outHeight; y++) {
      for (let x = 0; x < outWidth; x++) {
        const inside: number[] = [];
        for (let dy = 0; dy < kh; dy++) {
          const iy = y * sh - pt + dy;
          if (iy < 0 || iy >= height) continue;
          for (let dx = 0; dx < kw; dx++) {
            const ix = x * sw - pl + dx;
            if (ix >= 0 && ix < width) inside.push((c * height + iy) * width + ix);
          }
        }
        const weight = 1 / (countIncludePad ? kh * kw : inside.length);
        cols.push(Int32Array.from(inside));
        values.push(new Float64Array(inside.length).fill(weight));
      }
    }
  }
  const outputs = channels * outHeight * outWidth;
  return { map: { kind: 'sparse', inputs: channels * height * width, outputs, cols, values, bias: new Float64Array(outputs) }, outHeight, outWidth };
}

/**
 * A convolution followed by an unpadded average pool (kernel K, stride S) is one
 * convolution: kernel k + (K − 1)·s, stride s·S, the same top and left padding, bottom and
 * right padding cut to what the pooled outputs read, each tap the average of the original
 * taps it covers. Exact, bias included (an average of equal biases).
 */
export function mergePool(conv: MutableConv, kernel: readonly [number, number], stride: readonly [number, number], pooled: readonly [number, number]): MutableConv {
  const { inChannels: c, outChannels: o, kernel: [kh, kw], stride: [sh, sw], pads: [pt, pl] } = conv;
  const [ph, pw] = kernel;
  const mh = kh + (ph - 1) * sh;
  const mw = kw + (pw - 1) * sw;
  const lastRead = (outputs: number, poolStride: number, pool: number, s: number, before: number, k: number) => ((outputs - 1) * poolStride + pool - 1) * s - before + k - 1;
  // Never more than the original padding: the pooled outputs read no further than the convolution did.
  const bottom = Math.max(0, lastRead(pooled[0], stride[0], ph, sh, pt, kh) - (conv.inHeight - 1));
  const right = Math.max(0, lastRead(pooled[1], stride[1], pw, sw, pl, kw) - (conv.inWidth - 1));
  const weights = new Float64Array(o * c * mh * mw);
  const scale = 1 / (ph * pw);
  for (let oc = 0; oc < o * c; oc++) {
    for (let i = 0; i < ph; i++) {
      for (let j = 0; j < pw; j++) {
        for (let dy = 0; dy < kh; dy++) {
          for (let dx = 0; dx < kw; dx++) {
            weights[(oc * mh + i * sh + dy) * mw + j * sw + dx]! += scale * conv.weights[(oc * kh + dy) * kw + dx]!;
          }
        }
      }
    }
  }
  return { ...conv, kernel: [mh, mw], stride: [sh * stride[0], sw * stride[1]], pads: [pt, pl, bottom, right], weights, bias: conv.bias };
}

/** Index k of the flattened input for each index of the flattened transposed tensor. */
export function transposeGather(dims: readonly number[], perm: readonly number[]): Int32Array {
  const strides = dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
  const outDims = perm.map((p) => dims[p]!);
  const total = dims.reduce((a, b) => a * b, 1);
  const gather = new Int32Array(total);
  const index = new Array<number>(outDims.length).fill(0);
  for (let k = 0; k < total; k++) {
    gather[k] = index.reduce((at, v, axis) => at + v * strides[perm[axis]!]!, 0);
    for (let axis = outDims.length - 1; axis >= 0; axis--) {
      if (++index[axis]! < outDims[axis]!) break;
      index[axis] = 0;
    }
  }
  return gather;
}

export const isIdentity = (gather: Int32Array) => gather.every((g, i) => g === i);

/**
 * A constant broadcast against one sample of a data tensor of shape `shape` (axis 0 the
 * batch when symbolic, or rank ≥ 2 with size 1), laid out in the data's flattened order;
 * undefined when it would enlarge the data or vary along the batch.
 */
export function broadcastConstant(values: Float64Array, dims: readonly number[], shape: Shape): Float64Array | undefined {
  if (dims.length > shape.length && dims.slice(0, dims.length - shape.length).some((d) => d !== 1)) return undefined;
  const aligned: number[] = dims.slice(-shape.length);
  while (aligned.length < shape.length) aligned.unshift(1);
  const batchAxis = typeof shape[0] === 'string' || (shape.length >= 2 && shape[0] === 1);
  const sample: Dim[] = batchAxis ? shape.slice(1) : [...shape];
  const constant = batchAxis ? aligned.slice(1) : aligned;
  if (batchAxis && aligned[0] !== 1) return undefined;
  if (!sample.every((d): d is number => typeof d === 'number')) return undefined;
  if (constant.some((d, i) => d !== 1 && d !== sample[i])) return undefined;
  const size = sample.reduce((a, b) => a * b, 1);
  const strides = constant.map((d, i) => (d === 1 ? 0 : constant.slice(i + 1).reduce((a, b) => a * b, 1)));
  const out = new Float64Array(size);
  const index = new Array<number>(sample.length).fill(0);
  for (let k = 0; k < size; k++) {
    out[k] = values[index.reduce((at, v, axis) => at + v * strides[axis]!, 0)]!;
    for (let axis = sample.length - 1; axis >= 0; axis--) {
      if (++index[axis]! < sample[axis]!) break;
      index[axis] = 0;
    }
  }
  return out;
}
