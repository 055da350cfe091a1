import { fail } from './errors';

/**
 * A 2-D convolution of the float model (ONNX Conv with group 1 and dilation 1): input
 * C×H×W, weights O×C×kh×kw (ONNX's OIHW order), output O×oh×ow flattened channel-major
 * (o, y, x) — what ONNX's Flatten of an NCHW tensor yields.
 */
export interface ConvLayer {
  readonly kind: 'conv';
  readonly inChannels: number;
  readonly inHeight: number;
  readonly inWidth: number;
  readonly outChannels: number;
  /** [kh, kw] */
  readonly kernel: readonly [number, number];
  /** [sh, sw] */
  readonly stride: readonly [number, number];
  /** [top, left, bottom, right] zero padding (ONNX `pads` order). */
  readonly pads: readonly [number, number, number, number];
  readonly weights: ArrayLike<number>;
  readonly bias?: ArrayLike<number>;
}

/** What planning needs of a convolution: its geometry, not its weights. */
export type ConvShape = Omit<ConvLayer, 'weights' | 'bias'>;

export interface ConvGeometry {
  readonly outHeight: number;
  readonly outWidth: number;
  /** C·H·W: the values the layer reads. */
  readonly inputs: number;
  /** O·oh·ow: the values it produces. */
  readonly outputs: number;
  /** C·kh·kw: one im2col plane per kernel offset (channel, dy, dx). */
  readonly planes: number;
}

const positive = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 1;

/** Checks a convolution's geometry (sizes, kernel, stride, padding) and derives its output size. */
export function convGeometry(layer: ConvShape, where = 'conv layer'): ConvGeometry {
  const { inChannels: c, inHeight: h, inWidth: w, outChannels: o, kernel, stride, pads } = layer;
  if (![c, h, w, o].every(positive)) {
    fail('E_SHAPE', `${where}: channels and sizes must be positive integers, got input ${c}×${h}×${w}, ${o} output channels`);
  }
  const pair = (v: unknown, min: number) => Array.isArray(v) && v.length === 2 && v.every((x) => Number.isInteger(x) && x >= min);
  if (!pair(kernel, 1)) fail('E_SHAPE', `${where}: kernel must be two positive integers, got ${JSON.stringify(kernel)}`);
  if (!pair(stride, 1)) fail('E_SHAPE', `${where}: stride must be two positive integers, got ${JSON.stringify(stride)}`);
  if (!Array.isArray(pads) || pads.length !== 4 || !pads.every((x) => Number.isInteger(x) && x >= 0)) {
    fail('E_SHAPE', `${where}: pads must be four non-negative integers [top, left, bottom, right], got ${JSON.stringify(pads)}`);
  }
  const [kh, kw] = kernel;
  const [sh, sw] = stride;
  const [pt, pl, pb, pr] = pads;
  if (kh > h + pt + pb || kw > w + pl + pr) {
    fail('E_SHAPE', `${where}: a ${kh}×${kw} kernel does not fit the padded ${h + pt + pb}×${w + pl + pr} input`);
  }
  if (pt >= kh || pb >= kh || pl >= kw || pr >= kw) {
    fail('E_SHAPE', `${where}: padding ${JSON.stringify(pads)} reaches a whole kernel (${kh}×${kw}) beyond the input`);
  }
  const outHeight = Math.floor((h + pt + pb - kh) / sh) + 1;
  const outWidth = Math.floor((w + pl + pr - kw) / sw) + 1;
  return { outHeight, outWidth, inputs: c * h * w, outputs: o * outHeight * outWidth, planes: c * kh * kw };
}
