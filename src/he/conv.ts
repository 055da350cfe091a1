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

/**
 * A convolution as the first encrypted layer. The device knows its input before it
 * encrypts it, so it lays it out as im2col planes: plane p = (c, dy, dx) holds, in every
 * slot s that carries output feature f = columns[s] = (o, y, x), the input value under that
 * kernel offset, x_c[y·sh + dy − top][x·sw + dx − left] (zero in the padding). The owner
 * lays weight plane p out alike, w[o][c][dy][dx] in every slot of map o. Then
 * Σ_p ct(W_p) ⊙ ct(X_p) is the convolution, already in whatever layout `columns` asks for
 * (the next dense layer's input layout): no rotation at all.
 */
export interface ConvPlan {
  readonly kind: 'conv';
  readonly shape: ConvShape;
  readonly geometry: ConvGeometry;
  readonly slots: number;
  /** Output feature (o·oh·ow + y·ow + x) carried by each slot, −1 for a slot left empty. */
  readonly columns: Int32Array;
}

export function planConv(shape: ConvShape, slots: number, columns: Int32Array, where = 'conv layer'): ConvPlan {
  const geometry = convGeometry(shape, where);
  if (columns.length !== slots) fail('E_SHAPE', `${where}: an output layout of ${columns.length} slots for ${slots} slots`);
  const seen = new Uint8Array(geometry.outputs);
  for (const f of columns) {
    if (f >= geometry.outputs) fail('E_SHAPE', `${where}: the output layout names feature ${f}, the layer has ${geometry.outputs}`);
    if (f >= 0) seen[f] = 1;
  }
  if (!seen.every((v) => v === 1)) fail('E_SHAPE', `${where}: the output layout leaves some of the ${geometry.outputs} outputs out`);
  return { kind: 'conv', shape, geometry, slots, columns };
}

/** Lower bound on ct×ct products for a convolution over S slots: ⌈planes·outputs/S⌉. */
export function convLowerBound(plan: ConvPlan): number {
  return Math.ceil((plan.geometry.planes * plan.geometry.outputs) / plan.slots);
}

/** The (channel, dy, dx) of plane p. */
function planeOffset(shape: ConvShape, p: number): [number, number, number] {
  const [kh, kw] = shape.kernel;
  return [Math.floor(p / (kh * kw)), Math.floor(p / kw) % kh, p % kw];
}

/**
 * The device's side: the input image (C×H×W, channel-major) as im2col planes, one slot
 * vector per kernel offset, each laid out in the plan's output layout.
 */
export function packConvInput(plan: ConvPlan, image: ArrayLike<number>): Float64Array[] {
  const { shape, geometry, slots, columns } = plan;
  if (image.length !== geometry.inputs) {
    fail('E_SHAPE', `input has ${image.length} values, the convolution reads ${shape.inChannels}×${shape.inHeight}×${shape.inWidth} = ${geometry.inputs}`);
  }
  for (let i = 0; i < image.length; i++) if (!Number.isFinite(image[i]!)) fail('E_SHAPE', `input value ${i} is not a finite number`);
  const { inHeight: h, inWidth: w, stride, pads } = shape;
  const { outHeight: oh, outWidth: ow } = geometry;
  const planes: Float64Array[] = [];
  for (let p = 0; p < geometry.planes; p++) {
    const [c, dy, dx] = planeOffset(shape, p);
    const plane = new Float64Array(slots);
    for (let s = 0; s < slots; s++) {
      const f = columns[s]!;
      if (f < 0) continue;
      const pos = f % (oh * ow);
      const iy = Math.floor(pos / ow) * stride[0] + dy - pads[0];
      const ix = (pos % ow) * stride[1] + dx - pads[1];
      if (iy >= 0 && iy < h && ix >= 0 && ix < w) plane[s] = image[(c * h + iy) * w + ix]!;
    }
    planes.push(plane);
  }
  return planes;
}

export interface PackedConv {
  /** One weight plane per kernel offset. */
  readonly planes: Float64Array[];
  /** b[o] in every slot of map o. */
  readonly bias: Float64Array;
}

/** The owner's side: the kernel (O×C×kh×kw) and bias as planes matching packConvInput. */
export function packConvWeights(plan: ConvPlan, weights: ArrayLike<number>, bias: ArrayLike<number> | undefined): PackedConv {
  const { shape, geometry, slots, columns } = plan;
  const { outChannels: o, kernel } = shape;
  if (weights.length !== o * geometry.planes) {
    fail('E_SHAPE', `conv weights have ${weights.length} values, ${o}×${shape.inChannels}×${kernel[0]}×${kernel[1]} needs ${o * geometry.planes}`);
  }
  if (bias !== undefined && bias.length !== o) fail('E_SHAPE', `conv bias has ${bias.length} values, the layer has ${o} output channels`);
  const positions = geometry.outHeight * geometry.outWidth;
  const planes = Array.from({ length: geometry.planes }, (_, p) => {
    const plane = new Float64Array(slots);
    for (let s = 0; s < slots; s++) {
      const f = columns[s]!;
      if (f >= 0) plane[s] = weights[Math.floor(f / positions) * geometry.planes + p]!;
    }
    return plane;
  });
  const b = new Float64Array(slots);
  if (bias !== undefined) for (let s = 0; s < slots; s++) if (columns[s]! >= 0) b[s] = bias[Math.floor(columns[s]! / positions)]!;
  return { planes, bias: b };
}

/** The convolution by its definition, in float64: the float model's conv layer. */
export function floatConv(layer: ConvLayer, image: ArrayLike<number>): Float64Array {
  const g = convGeometry(layer);
  const { inChannels: cs, inHeight: h, inWidth: w, outChannels: os, kernel, stride, pads } = layer;
  const out = new Float64Array(g.outputs);
  for (let o = 0; o < os; o++) {
    for (let y = 0; y < g.outHeight; y++) {
      for (let x = 0; x < g.outWidth; x++) {
        let sum = layer.bias?.[o] ?? 0;
        for (let c = 0; c < cs; c++) {
          for (let dy = 0; dy < kernel[0]; dy++) {
            const iy = y * stride[0] + dy - pads[0];
            if (iy < 0 || iy >= h) continue;
            for (let dx = 0; dx < kernel[1]; dx++) {
              const ix = x * stride[1] + dx - pads[1];
              if (ix < 0 || ix >= w) continue;
              sum += layer.weights[((o * cs + c) * kernel[0] + dy) * kernel[1] + dx]! * image[(c * h + iy) * w + ix]!;
            }
          }
        }
        out[(o * g.outHeight + y) * g.outWidth + x] = sum;
      }
    }
  }
  return out;
}

/** "conv 1×28×28 → 5×13×13 (5×5, stride 2)". */
export function describeConv(shape: ConvShape): string {
  const g = convGeometry(shape);
  const stride = shape.stride[0] === shape.stride[1] ? `${shape.stride[0]}` : shape.stride.join('×');
  return `conv ${shape.inChannels}×${shape.inHeight}×${shape.inWidth} → ${shape.outChannels}×${g.outHeight}×${g.outWidth} (${shape.kernel.join('×')}, stride ${stride})`;
}
