/**
 * The spatial ops of the encrypted part, as the head builder needs them: the padding
 * ONNX's auto_pad stands for, an average pool as a sparse linear map, convolutions and
 * average pools composed into one convolution where that is exact, and transposes as
 * permutations of the flattened per-sample tensor. Channel-major (C, H, W) order
 * throughout, as ONNX's Flatten of an NCHW tensor and the engine's ConvLayer use.
 */
import type { ConvShape } from '../he';
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
 * A linear window operator on a C×H×W tensor: a convolution, or an average pool seen as a
 * depthwise convolution. Output channel o reads the input channels `sources(o)`, tap
 * (dy, dx) of channel c weighing `weight(o, c, dy, dx)`.
 */
export interface WindowOp extends Omit<ConvShape, 'kind' | 'pads'> {
  readonly pads: Pads;
  readonly sources: (o: number) => Iterable<number>;
  readonly weight: (o: number, c: number, dy: number, dx: number) => number;
  readonly bias: Float64Array;
}

export function convWindow(conv: MutableConv): WindowOp {
  const { inChannels: c, kernel: [kh, kw] } = conv;
  const channels = [...Array(c).keys()];
  return { ...conv, sources: () => channels, weight: (o, i, dy, dx) => conv.weights[((o * c + i) * kh + dy) * kw + dx]! };
}

/**
 * An average pool over C×H×W whose every output of channel c is scale[c]·(the window's
 * sum)/(kh·kw) + shift[c], zero padding counted in the window (count_include_pad=1, or no
 * padding at all).
 */
export function poolWindow(
  [channels, height, width]: readonly [number, number, number],
  kernel: readonly [number, number],
  stride: readonly [number, number],
  pads: Pads,
  scale: Float64Array,
  shift: Float64Array,
): WindowOp {
  const area = kernel[0] * kernel[1];
  return {
    inChannels: channels,
    inHeight: height,
    inWidth: width,
    outChannels: channels,
    kernel,
    stride,
    pads,
    sources: (o) => [o],
    weight: (o) => scale[o]! / area,
    bias: shift,
  };
}

/**
 * The composition outer ∘ inner of two window operators as one convolution on inner's
 * input, or undefined when it is not exact. Along each axis the composed kernel is
 * (k − 1)·S + K (K, S inner's kernel and stride, k outer's kernel), the stride s·S, the
 * padding before pb·S + qb (pb, qb the outer's and inner's), the padding after cut to what
 * the last output reads; tap (dy·S + u) sums outer tap dy times inner tap u. Where outer
 * reads its zero padding, the composition reads inner's input through inner's window
 * instead: exact only when inner has no bias and every such window lies wholly in inner's
 * zero padding (K ≤ S + qb before the input; after it, when the pooled or convolved rows
 * reach the end of the input — not when inner's floor drops a last row or column).
 */
export function composeWindows(inner: WindowOp, outer: WindowOp): MutableConv | undefined {
  const axes = [0, 1].map((a) => {
    const [n, kIn, sIn, qb, qa] = [[inner.inHeight, inner.inWidth][a]!, inner.kernel[a]!, inner.stride[a]!, inner.pads[a]!, inner.pads[a + 2]!];
    const [kOut, sOut, pb, pa] = [outer.kernel[a]!, outer.stride[a]!, outer.pads[a]!, outer.pads[a + 2]!];
    const m = windowOutput(n, kIn, sIn, qb, qa);
    const lastRead = (windowOutput(m, kOut, sOut, pb, pa) - 1) * sOut + kOut - 1 - pb;
    const readsBefore = pb > 0;
    const readsAfter = lastRead >= m;
    return {
      kernel: (kOut - 1) * sIn + kIn,
      stride: sOut * sIn,
      before: pb * sIn + qb,
      after: Math.max(0, lastRead * sIn + kIn - 1 - qb - (n - 1)),
      readsPadding: readsBefore || readsAfter,
      exact: (!readsBefore || kIn <= sIn + qb) && (!readsAfter || m * sIn - qb >= n),
    };
  });
  const [rows, cols] = [axes[0]!, axes[1]!];
  if (axes.some((a) => a.readsPadding && (!a.exact || inner.bias.some((b) => b !== 0)))) return undefined;
  const [c, o, kh, kw] = [inner.inChannels, outer.outChannels, rows.kernel, cols.kernel];
  const weights = new Float64Array(o * c * kh * kw);
  const bias = Float64Array.from(outer.bias);
  for (let out = 0; out < o; out++) {
    for (const mid of outer.sources(out)) {
      for (let dy = 0; dy < outer.kernel[0]; dy++) {
        for (let dx = 0; dx < outer.kernel[1]; dx++) {
          const w = outer.weight(out, mid, dy, dx);
          if (w === 0) continue;
          bias[out]! += w * inner.bias[mid]!;
          for (const from of inner.sources(mid)) {
            for (let u = 0; u < inner.kernel[0]; u++) {
              const row = ((out * c + from) * kh + dy * inner.stride[0] + u) * kw + dx * inner.stride[1];
              for (let v = 0; v < inner.kernel[1]; v++) weights[row + v]! += w * inner.weight(mid, from, u, v);
            }
          }
        }
      }
    }
  }
  return {
    kind: 'conv',
    inChannels: c,
    inHeight: inner.inHeight,
    inWidth: inner.inWidth,
    outChannels: o,
    kernel: [kh, kw],
    stride: [rows.stride, cols.stride],
    pads: [rows.before, cols.before, rows.after, cols.after],
    weights,
    bias,
  };
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
