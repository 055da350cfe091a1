import { fail } from './errors';
import { rotateLeft } from './packing';

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
  /**
   * Set by folding only: the activation before adds this constant to every input value
   * (not to the padding), and the layer's packing accounts for it.
   */
  readonly inputOffset?: number;
}

/** What planning needs of a convolution: its geometry, not its weights. */
export type ConvShape = Omit<ConvLayer, 'weights' | 'bias' | 'inputOffset'>;

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
 *
 * With `complex` packing (DESIGN.md 2b) planes go two per ciphertext: the device encrypts
 * X_2k + i·X_2k+1, the owner (W_2k − i·W_2k+1)/2, and the real part of their product is
 * half of both planes' terms; one conjugation at the end (z + z̄ = 2·Re z) recovers the
 * sum. Half the encryptions and half the products, for one key switch.
 */
export interface ConvPlan {
  readonly kind: 'conv';
  readonly shape: ConvShape;
  readonly geometry: ConvGeometry;
  readonly slots: number;
  /**
   * Ciphertexts the output spans: every plane is packed once per part, part t carrying the
   * features of columns[t·slots, (t+1)·slots).
   */
  readonly parts: number;
  /** Output feature (o·oh·ow + y·ow + x) carried by each slot of each part, −1 for a slot left empty. */
  readonly columns: Int32Array;
  /** Two planes per ciphertext (see above). */
  readonly complex: boolean;
}

export function planConv(shape: ConvShape, slots: number, columns: Int32Array, where = 'conv layer', complex = false): ConvPlan {
  const geometry = convGeometry(shape, where);
  if (columns.length === 0 || columns.length % slots !== 0) fail('E_SHAPE', `${where}: an output layout of ${columns.length} slots is not a whole number of ${slots}-slot ciphertexts`);
  const seen = new Uint8Array(geometry.outputs);
  for (const f of columns) {
    if (f >= geometry.outputs) fail('E_SHAPE', `${where}: the output layout names feature ${f}, the layer has ${geometry.outputs}`);
    if (f >= 0) seen[f] = 1;
  }
  if (!seen.every((v) => v === 1)) fail('E_SHAPE', `${where}: the output layout leaves some of the ${geometry.outputs} outputs out`);
  return { kind: 'conv', shape, geometry, slots, parts: columns.length / slots, columns, complex };
}

/** Packed inputs (and weight planes) per part: the planes, or their pairs. */
export function convPartInputs(plan: ConvPlan): number {
  return plan.complex ? Math.ceil(plan.geometry.planes / 2) : plan.geometry.planes;
}

/** How many packed inputs (and weight planes) the convolution multiplies, part after part. */
export function convInputs(plan: ConvPlan): number {
  return plan.parts * convPartInputs(plan);
}

/**
 * Planes two by two as complex slot vectors (real parts, then imaginary parts; a last odd
 * plane of a part pairs with zeros): X_2k + i·X_2k+1 for the input, (W_2k − i·W_2k+1)/2
 * for the weights, whose product's real part is (W_2k·X_2k + W_2k+1·X_2k+1)/2. Pairs
 * never cross from one part's planes (`perPart` of them) to the next.
 */
export function pairPlanes(planes: readonly Float64Array[], side: 'input' | 'weights', perPart = planes.length): Float64Array[] {
  const [re, im] = side === 'input' ? [1, 1] : [0.5, -0.5];
  const pairs: Float64Array[] = [];
  for (let start = 0; start < planes.length; start += perPart) {
    for (let k = start; k < start + perPart; k += 2) {
      const first = planes[k]!;
      const z = new Float64Array(2 * first.length);
      z.set(first.map((v) => re * v));
      const second = k + 1 < start + perPart ? planes[k + 1] : undefined;
      if (second !== undefined) z.set(second.map((v) => im * v), first.length);
      pairs.push(z);
    }
  }
  return pairs;
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
 * vector per kernel offset and part, each laid out in the plan's output layout (part after
 * part: plane p of part t is vector t·planes + p).
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
  for (let t = 0; t < plan.parts; t++) {
    for (let p = 0; p < geometry.planes; p++) {
      const [c, dy, dx] = planeOffset(shape, p);
      const plane = new Float64Array(slots);
      for (let s = 0; s < slots; s++) {
        const f = columns[t * slots + s]!;
        if (f < 0) continue;
        const pos = f % (oh * ow);
        const iy = Math.floor(pos / ow) * stride[0] + dy - pads[0];
        const ix = (pos % ow) * stride[1] + dx - pads[1];
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) plane[s] = image[(c * h + iy) * w + ix]!;
      }
      planes.push(plane);
    }
  }
  return planes;
}

export interface PackedConv {
  /** One weight plane per kernel offset and part, in packConvInput's order. */
  readonly planes: Float64Array[];
  /** Per part, b[o] in every slot of map o. */
  readonly biases: Float64Array[];
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
  const planes = Array.from({ length: plan.parts * geometry.planes }, (_, n) => {
    const [t, p] = [Math.floor(n / geometry.planes), n % geometry.planes];
    const plane = new Float64Array(slots);
    for (let s = 0; s < slots; s++) {
      const f = columns[t * slots + s]!;
      if (f >= 0) plane[s] = weights[Math.floor(f / positions) * geometry.planes + p]!;
    }
    return plane;
  });
  const biases = Array.from({ length: plan.parts }, (_, t) => {
    const b = new Float64Array(slots);
    for (let s = 0; s < slots; s++) {
      const f = columns[t * slots + s]!;
      if (bias !== undefined && f >= 0) b[s] = bias[Math.floor(f / positions)]!;
    }
    return b;
  });
  return { planes, biases };
}

/** One product of a convolution: output (o, y, x) reads input (c, iy, ix) with weight `weight` (its OIHW index). */
export interface ConvTap {
  o: number;
  y: number;
  x: number;
  c: number;
  iy: number;
  ix: number;
  weight: number;
}

/**
 * Visits every product of a convolution by its definition, output by output; taps on the
 * zero padding are skipped. The visited object is reused: read it, do not keep it.
 */
export function forEachConvTap(shape: ConvShape, visit: (tap: Readonly<ConvTap>) => void): void {
  const g = convGeometry(shape);
  const { inChannels: cs, inHeight: h, inWidth: w, outChannels: os, kernel, stride, pads } = shape;
  const tap: ConvTap = { o: 0, y: 0, x: 0, c: 0, iy: 0, ix: 0, weight: 0 };
  for (tap.o = 0; tap.o < os; tap.o++) {
    for (tap.y = 0; tap.y < g.outHeight; tap.y++) {
      for (tap.x = 0; tap.x < g.outWidth; tap.x++) {
        for (tap.c = 0; tap.c < cs; tap.c++) {
          for (let dy = 0; dy < kernel[0]; dy++) {
            tap.iy = tap.y * stride[0] + dy - pads[0];
            if (tap.iy < 0 || tap.iy >= h) continue;
            for (let dx = 0; dx < kernel[1]; dx++) {
              tap.ix = tap.x * stride[1] + dx - pads[1];
              if (tap.ix < 0 || tap.ix >= w) continue;
              tap.weight = ((tap.o * cs + tap.c) * kernel[0] + dy) * kernel[1] + dx;
              visit(tap);
            }
          }
        }
      }
    }
  }
}

/** The convolution by its definition, in float64: the float model's conv layer. */
export function floatConv(layer: ConvLayer, image: ArrayLike<number>): Float64Array {
  const g = convGeometry(layer);
  const { inHeight: h, inWidth: w } = layer;
  const positions = g.outHeight * g.outWidth;
  const out = Float64Array.from({ length: g.outputs }, (_, f) => layer.bias?.[Math.floor(f / positions)] ?? 0);
  const offset = layer.inputOffset ?? 0;
  forEachConvTap(layer, ({ o, y, x, c, iy, ix, weight }) => {
    out[(o * g.outHeight + y) * g.outWidth + x]! += layer.weights[weight]! * (image[(c * h + iy) * w + ix]! + offset);
  });
  return out;
}

/** "conv 1×28×28 → 5×13×13 (5×5, stride 2)". */
export function describeConv(shape: ConvShape): string {
  const g = convGeometry(shape);
  const stride = shape.stride[0] === shape.stride[1] ? `${shape.stride[0]}` : shape.stride.join('×');
  return `conv ${shape.inChannels}×${shape.inHeight}×${shape.inWidth} → ${shape.outChannels}×${g.outHeight}×${g.outWidth} (${shape.kernel.join('×')}, stride ${stride})`;
}

/**
 * Where a C×H×W tensor sits in the slots of its ciphertexts: channels go `perPart` to a
 * ciphertext (part ⌊c/perPart⌋); within its part value (c, y, x) sits in slot
 * (c mod perPart)·block + y·rowStep + x·colStep, repeated every `period` slots (period
 * divides the slot count; period = slots: not repeated). Slots that hold no value may
 * hold anything.
 */
export interface GridLayout {
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly block: number;
  readonly rowStep: number;
  readonly colStep: number;
  readonly period: number;
  readonly perPart: number;
}

/** The ciphertexts a grid spans. */
export function gridParts(g: GridLayout): number {
  return Math.ceil(g.channels / g.perPart);
}

/** The slot of value (c, y, x) within its part (see gridPart). */
export function gridSlot(g: GridLayout, c: number, y: number, x: number): number {
  return (c % g.perPart) * g.block + y * g.rowStep + x * g.colStep;
}

export function gridPart(g: GridLayout, c: number): number {
  return Math.floor(c / g.perPart);
}

/** The feature (c·H + y)·W + x each slot of each part carries (−1: none), over every repetition. */
export function gridColumns(g: GridLayout, slots: number): Int32Array {
  const cols = new Int32Array(gridParts(g) * slots).fill(-1);
  for (let c = 0; c < g.channels; c++) {
    const base = gridPart(g, c) * slots;
    for (let y = 0; y < g.height; y++) {
      for (let x = 0; x < g.width; x++) {
        const f = (c * g.height + y) * g.width + x;
        for (let s = gridSlot(g, c, y, x); s < slots; s += g.period) cols[base + s] = f;
      }
    }
  }
  return cols;
}

/**
 * The layout a convolution on encrypted activations wants when the layer before it may
 * lay its output out freely (an im2col convolution packed by the device): one block of
 * ≥ H·W slots per channel, rows contiguous, the channels of a part repeated every
 * nextPowerOfTwo(channels)·block slots so that every channel difference is one rotation.
 * Channels that do not fit one ciphertext span several when `spanning` (as many per
 * ciphertext as fit); otherwise, or when one map is larger than a ciphertext, undefined.
 */
export function freeGrid(shape: ConvShape, slots: number, spanning = false): GridLayout | undefined {
  let block = 1;
  while (block < shape.inHeight * shape.inWidth) block *= 2;
  if (block > slots) return undefined;
  const fit = slots / block;
  if (!spanning && (shape.inChannels > fit || shape.outChannels > fit)) return undefined;
  const perPart = Math.min(shape.inChannels, fit);
  let period = block;
  while (period < perPart * block) period *= 2;
  return { channels: shape.inChannels, height: shape.inHeight, width: shape.inWidth, block, rowStep: shape.inWidth, colStep: 1, period, perPart };
}

/**
 * A convolution on encrypted activations (any layer after the first). The input sits in a
 * grid layout; output (o, y, x) goes to the slot of input position (y·sh, x·sw) in block
 * o mod perPart of its part, so reading input (c, y·sh + dy − top, x·sw + dx − left) from
 * input part t is a rotation of that part by
 * k = (c mod perPart − o mod perPart)·block + (dy − top)·rowStep + (dx − left)·colStep
 * (mod the input period): one diagonal per distinct (output part, k, input part), as a
 * dense layer's diagonal method, with weights w[o][c][dy][dx] where map o's outputs sit
 * and zero elsewhere (padding reads nothing). Baby-step/giant-step with giant step
 * `block`: baby rotations of every input part by the kernel offsets (`babies`, each reached
 * from the one before, shared by all output parts), giant rotations by whole blocks
 * (channel differences), Horner-style, each group summing its products over the input
 * parts. The output is a grid with the strides folded into its steps, not repeated.
 */
export interface RotatedConvPlan {
  readonly kind: 'conv-rot';
  readonly shape: ConvShape;
  readonly geometry: ConvGeometry;
  readonly slots: number;
  readonly input: GridLayout;
  readonly output: GridLayout;
  /** Baby rotation steps in [0, block), ascending. */
  readonly babies: readonly number[];
  /** Giant-step groups; group i is rotated by i·block. */
  readonly giant: number;
  /**
   * Diagonal ((u·giant + i)·inParts + t)·babies.length + b is used (some weight lands on
   * it): output part u, giant group i, input part t, baby b.
   */
  readonly used: readonly boolean[];
  /** Output feature carried by each slot of each output part (−1: none): what the next layer reads. */
  readonly columns: Int32Array;
}

/** Visits every product of a rotated convolution: output part and slot, input part, rotation k, weight index. */
function forEachTap(shape: ConvShape, input: GridLayout, output: GridLayout, visit: (u: number, j: number, t: number, k: number, weight: number) => void): void {
  forEachConvTap(shape, ({ o, y, x, c, iy, ix, weight }) => {
    const j = gridSlot(output, o, y, x);
    visit(gridPart(output, o), j, gridPart(input, c), (((gridSlot(input, c, iy, ix) - j) % input.period) + input.period) % input.period, weight);
  });
}

/** The diagonal index of rotation k = i·block + babies[b] from input part t into output part u (see RotatedConvPlan.used). */
function diagonalOf(plan: Pick<RotatedConvPlan, 'input' | 'babies' | 'giant'>): (u: number, t: number, k: number) => number {
  const { block } = plan.input;
  const inParts = gridParts(plan.input);
  const index = new Map(plan.babies.map((b, n) => [b, n]));
  return (u, t, k) => ((u * plan.giant + Math.floor(k / block)) * inParts + t) * plan.babies.length + index.get(k % block)!;
}

export function planRotatedConv(shape: ConvShape, input: GridLayout, slots: number, where = 'conv layer', spanning = false): RotatedConvPlan {
  const geometry = convGeometry(shape, where);
  if (input.channels !== shape.inChannels || input.height !== shape.inHeight || input.width !== shape.inWidth) {
    fail('E_SHAPE', `${where}: reads ${shape.inChannels}×${shape.inHeight}×${shape.inWidth}, the layer before produces ${input.channels}×${input.height}×${input.width}`);
  }
  if (slots % input.period !== 0) fail('E_SHAPE', `${where}: an input repeated every ${input.period} slots does not tile ${slots} slots`);
  const fit = Math.floor(slots / input.block);
  if (shape.outChannels > fit && !spanning) {
    fail('E_UNSUPPORTED', `${where}: ${shape.outChannels} output maps of ${input.block} slots each do not fit one ciphertext of ${slots} slots (spanning several is CKKS only): choose a larger ring degree or split after this layer`);
  }
  const output: GridLayout = {
    channels: shape.outChannels,
    height: geometry.outHeight,
    width: geometry.outWidth,
    block: input.block,
    rowStep: shape.stride[0] * input.rowStep,
    colStep: shape.stride[1] * input.colStep,
    period: slots,
    perPart: Math.min(shape.outChannels, fit),
  };
  const ks = new Set<number>();
  forEachTap(shape, input, output, (_u, _j, _t, k) => ks.add(k));
  const babies = [...new Set([...ks].map((k) => k % input.block))].sort((a, b) => a - b);
  const giant = Math.max(...[...ks].map((k) => Math.floor(k / input.block))) + 1;
  const used = Array<boolean>(gridParts(output) * giant * gridParts(input) * babies.length).fill(false);
  const diagonal = diagonalOf({ input, babies, giant });
  forEachTap(shape, input, output, (u, _j, t, k) => {
    used[diagonal(u, t, k)] = true;
  });
  return { kind: 'conv-rot', shape, geometry, slots, input, output, babies, giant, used, columns: gridColumns(output, slots) };
}

/** Lower bound on ct×ct products of a rotated convolution: ⌈taps·outputs/S⌉, taps = C·kh·kw. */
export function rotatedConvLowerBound(plan: RotatedConvPlan): number {
  return Math.ceil((plan.geometry.planes * plan.geometry.outputs) / plan.slots);
}

/**
 * The owner's side of a rotated convolution: its diagonals (group i pre-rotated right by
 * i·block, null where unused) and, per output part, its bias where the outputs sit.
 * `inputOffset` is a constant the activation before adds to every input value (folded in:
 * each output gets offset·Σ of the weights it reads, borders included).
 */
export function packRotatedConv(plan: RotatedConvPlan, weights: ArrayLike<number>, bias: ArrayLike<number> | undefined, inputOffset = 0): { diagonals: (Float64Array | null)[]; biases: Float64Array[] } {
  const { shape, geometry, slots, input, output, babies, giant } = plan;
  if (weights.length !== shape.outChannels * geometry.planes) {
    fail('E_SHAPE', `conv weights have ${weights.length} values, ${shape.outChannels}×${shape.inChannels}×${shape.kernel[0]}×${shape.kernel[1]} needs ${shape.outChannels * geometry.planes}`);
  }
  if (bias !== undefined && bias.length !== shape.outChannels) fail('E_SHAPE', `conv bias has ${bias.length} values, the layer has ${shape.outChannels} output channels`);
  const diagonals = plan.used.map((u) => (u ? new Float64Array(slots) : null));
  const biases = Array.from({ length: gridParts(output) }, () => new Float64Array(slots));
  for (let o = 0; o < shape.outChannels; o++) {
    const b = biases[gridPart(output, o)]!;
    for (let y = 0; y < geometry.outHeight; y++) for (let x = 0; x < geometry.outWidth; x++) b[gridSlot(output, o, y, x)] = bias?.[o] ?? 0;
  }
  const diagonal = diagonalOf(plan);
  forEachTap(shape, input, output, (u, j, t, k, at) => {
    diagonals[diagonal(u, t, k)]![j] = weights[at]!;
    biases[u]![j]! += inputOffset * weights[at]!;
  });
  const perGroup = gridParts(input) * babies.length;
  return {
    diagonals: diagonals.map((d, n) => (d === null ? null : rotateLeft(d, -input.block * (Math.floor(n / perGroup) % giant)))),
    biases,
  };
}
