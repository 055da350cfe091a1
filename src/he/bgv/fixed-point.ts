import { type Backend, evaluatePoly, type Layer, type LayerShape, foldModel, planActivations, type PolyPlan } from '../circuit';
import { type ConvLayer, convGeometry, floatConv, forEachConvTap } from '../conv';
import { fail } from '../errors';

/**
 * How real numbers become the integers BGV computes on. The device clamps each input value
 * (a feature, or a pixel of a convolution's image) to the calibrated range [lo, hi] and
 * encodes X = round(x·inputScale); linear layer k (convolutions and dense layers, in
 * order) holds W = round(w·weightScales[k]) of its folded weights, and its bias is rounded
 * at the scale of the products it is added to. A value's scale is the product of the
 * scales that made it, so the decrypted integer divided by the output scale is the score.
 * A residual add multiplies its skip value by the integer ratio of the two branches'
 * scales: the weight scale of the convolution before it is chosen to make that ratio an
 * integer (see chooseFixedPoint), so the branches align exactly.
 */
export interface FixedPoint {
  readonly inputRange: readonly [number, number];
  readonly inputScale: number;
  readonly weightScales: readonly number[];
}

/** Layers that hold weights: one weight scale each. */
export function linearCount(layers: readonly LayerShape[]): number {
  return layers.filter((l) => l?.kind === 'dense' || l?.kind === 'conv').length;
}

export function checkFixedPoint(value: unknown, linearLayers: number): FixedPoint {
  const f = value as Partial<FixedPoint> | null;
  const positive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0;
  const ok =
    f !== null &&
    typeof f === 'object' &&
    Array.isArray(f.inputRange) &&
    f.inputRange.length === 2 &&
    f.inputRange.every((v) => typeof v === 'number' && Number.isFinite(v)) &&
    f.inputRange[0]! < f.inputRange[1]! &&
    positive(f.inputScale) &&
    Array.isArray(f.weightScales) &&
    f.weightScales.length === linearLayers &&
    f.weightScales.every(positive);
  if (!ok) fail('E_CORRUPT', `invalid fixed-point encoding: ${JSON.stringify(value)}`);
  return Object.freeze({
    inputRange: Object.freeze([f.inputRange![0]!, f.inputRange![1]!]) as readonly [number, number],
    inputScale: f.inputScale!,
    weightScales: Object.freeze([...f.weightScales!]),
  });
}

/** The range [lo, hi] of every feature over the calibration vectors (0 is always inside). */
export function calibrateRange(calibration: readonly ArrayLike<number>[], inputs: number): [number, number] {
  if (!Array.isArray(calibration) || calibration.length === 0) {
    fail('E_PARAMS', 'BGV planning needs calibration data: a few hundred feature vectors of real inputs');
  }
  let lo = 0;
  let hi = 0;
  calibration.forEach((x, i) => {
    if (x?.length !== inputs) fail('E_SHAPE', `calibration vector ${i} has ${x?.length} values, the classifier expects ${inputs}`);
    for (let c = 0; c < inputs; c++) {
      const v = x[c]!;
      if (!Number.isFinite(v)) fail('E_SHAPE', `calibration vector ${i}: value ${c} is not a finite number`);
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  });
  if (lo === hi) fail('E_PARAMS', 'the calibration vectors are all zero: no range to quantize');
  return [lo, hi];
}

function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]!));
  return m;
}

/** A linear layer of the folded model. */
type Linear = Extract<Layer, { kind: 'dense' | 'conv' }>;

/** Scale of a polynomial activation's output for an input at `scale`: what evaluatePoly makes of it. */
function polyScale(plan: PolyPlan, scale: number): number {
  return evaluatePoly(new PointBackend(), plan, { v: Float64Array.of(1), scale }).scale;
}

/**
 * Scales that give the largest input value `inputBits` bits and each linear layer's
 * largest folded weight (`folded`: foldModel's output) `weightBits` bits, both signed
 * magnitudes. A convolution followed by a residual add gets the nearest weight scale that
 * makes its output scale an integer multiple k ≥ 1 of the skip value's (BGV aligns the
 * skip by multiplying it by k; it cannot divide): refused when the convolution's scale is
 * below half the skip's, where k would round to 0.
 */
export function chooseFixedPoint(folded: readonly Layer[], range: readonly [number, number], inputBits: number, weightBits: number): FixedPoint {
  for (const [name, bits] of [['inputBits', inputBits], ['weightBits', weightBits]] as const) {
    if (!Number.isInteger(bits) || bits < 1 || bits > 40) fail('E_PARAMS', `${name} must be an integer from 1 to 40, got ${bits}`);
  }
  const polys = planActivations(folded);
  const inputScale = (2 ** inputBits - 1) / Math.max(-range[0], range[1]);
  const weightScales: number[] = [];
  /** Output scale of each layer so far. */
  const scales: number[] = [];
  let scale = inputScale;
  let poly = 0;
  folded.forEach((layer, i) => {
    if (layer.kind === 'poly') scale = polyScale(polys[poly++]!, scale);
    if (layer.kind === 'dense' || layer.kind === 'conv') {
      const m = maxAbs(layer.weights);
      if (m === 0) fail('E_PARAMS', `layer ${i}: all weights are zero`);
      let w = (2 ** weightBits - 1) / m;
      const add = folded[i + 1];
      if (add?.kind === 'add') {
        const skip = scales[add.from]!;
        const k = Math.round((scale * w) / skip);
        if (k < 1) {
          fail(
            'E_PARAMS',
            `layer ${i + 1}: the residual add cannot align its branches in BGV: layer ${add.from}'s values have scale 2^${Math.log2(skip).toFixed(1)}, ` +
              `the convolution's sum only 2^${Math.log2(scale * w).toFixed(1)}, and BGV can multiply the skip by an integer but not divide it: quantize with more bits`,
          );
        }
        w = (k * skip) / scale;
      }
      weightScales.push(w);
      scale *= w;
    }
    scales.push(scale);
  });
  return { inputRange: [range[0], range[1]], inputScale, weightScales };
}

/** The device's encoding of its features: clamped to the calibrated range, scaled, rounded. */
export function quantizeInput(fp: FixedPoint, x: ArrayLike<number>): Float64Array {
  const [lo, hi] = fp.inputRange;
  return Float64Array.from({ length: x.length }, (_, c) => {
    const v = x[c]!;
    if (!Number.isFinite(v)) fail('E_SHAPE', `input value ${c} is not a finite number`);
    return Math.round(Math.min(hi, Math.max(lo, v)) * fp.inputScale);
  });
}

/** The integer mulConstLike multiplies by: c·scale(like)/scale(x), rounded. */
export function constMultiplier(c: number, xScale: number, likeScale: number): number {
  const k = Math.round((c * likeScale) / xScale);
  if (k === 0) fail('E_PARAMS', `the constant ${c} rounds to zero at scale ${likeScale / xScale}: quantize with more bits`);
  return k;
}

/** Bits of the integer that scaleBy multiplies by. */
const SCALE_BY_BITS = 16;

/** scaleBy(x, c) multiplies x by `factor` and its scale by `scale` (c ≈ factor/scale). */
export function scaleByMultiplier(c: number): { factor: number; scale: number } {
  const scale = 2 ** (SCALE_BY_BITS - Math.floor(Math.log2(Math.abs(c))));
  return { factor: Math.round(c * scale), scale };
}

/** The integer addConst adds: c at the value's scale. */
export function constAddend(c: number, scale: number): number {
  return Math.round(c * scale);
}

/** A folded model with each linear layer's weights rounded to integers at its scale (biases stay real). */
export function quantizeFolded(folded: readonly Layer[], fp: FixedPoint): Layer[] {
  let linear = 0;
  return folded.map((layer) => {
    if (layer.kind !== 'dense' && layer.kind !== 'conv') return layer;
    const scale = fp.weightScales[linear++]!;
    const weights = new Float64Array(layer.weights.length);
    for (let i = 0; i < weights.length; i++) weights[i] = Math.round(layer.weights[i]! * scale);
    return { ...layer, weights };
  });
}

/** The model folded, with each linear layer's weights rounded to integers at its scale (biases stay real). */
export function quantizeWeights(layers: readonly Layer[], fp: FixedPoint): Layer[] {
  return quantizeFolded(foldModel(layers), fp);
}

/**
 * A linear layer unpacked: its real bias per output (a dense layer's folded bias; a
 * convolution's b[o] plus its input offset times the weights each output reads, as
 * packRotatedConv folds it) and its products, output by output.
 */
interface Unpacked {
  readonly outputs: number;
  readonly bias: Float64Array;
  /** Visits every product: output index, input index, integer weight. */
  forEach(visit: (out: number, input: number, w: number) => void): void;
}

function unpack(real: Linear, quantized: Linear): Unpacked {
  if (real.kind === 'dense' && quantized.kind === 'dense') {
    const { inputs, outputs } = real;
    return {
      outputs,
      bias: Float64Array.from({ length: outputs }, (_, r) => real.bias?.[r] ?? 0),
      forEach(visit) {
        for (let r = 0; r < outputs; r++) for (let c = 0; c < inputs; c++) visit(r, c, quantized.weights[r * inputs + c]!);
      },
    };
  }
  const conv = real as ConvLayer;
  const g = convGeometry(conv);
  const { inHeight: h, inWidth: w } = conv;
  return {
    outputs: g.outputs,
    bias: floatConv(conv, new Float64Array(g.inputs)),
    forEach(visit) {
      forEachConvTap(conv, ({ o, y, x, c, iy, ix, weight }) => visit((o * g.outHeight + y) * g.outWidth + x, (c * h + iy) * w + ix, quantized.weights[weight]!));
    },
  };
}

/** Integers (held in doubles) of the neurons of one layer, at one scale. */
interface Point {
  readonly v: Float64Array;
  scale: number;
}

/**
 * What the backends below share: they evaluate activations only (evaluatePoly), so the
 * dense layer's operations refuse.
 */
abstract class ActivationBackend {
  private unused(): never {
    fail('E_SHAPE', 'an activation has no dense operations');
  }
  rotate(): never {
    this.unused();
  }
  mulAdd(): never {
    this.unused();
  }
  addWeight(): never {
    this.unused();
  }
  constant(): never {
    this.unused();
  }
}

class PointBackend extends ActivationBackend implements Backend<Point, never> {
  mul(a: Point, b: Point): Point {
    return { v: a.v.map((x, i) => x * b.v[i]!), scale: a.scale * b.scale };
  }
  mulConstLike(x: Point, c: number, like: Point): Point {
    const k = constMultiplier(c, x.scale, like.scale);
    return { v: x.v.map((t) => k * t), scale: like.scale };
  }
  scaleBy(x: Point, c: number): void {
    const { factor, scale } = scaleByMultiplier(c);
    for (let i = 0; i < x.v.length; i++) x.v[i]! *= factor;
    x.scale *= scale;
  }
  negate(x: Point): void {
    for (let i = 0; i < x.v.length; i++) x.v[i] = -x.v[i]!;
  }
  addConst(x: Point, c: number): void {
    const k = constAddend(c, x.scale);
    for (let i = 0; i < x.v.length; i++) x.v[i]! += k;
  }
  add(acc: Point, x: Point): void {
    for (let i = 0; i < acc.v.length; i++) acc.v[i]! += x.v[i]!;
  }
  relinearize(): void {}
  rescale(): void {}
  clone(x: Point): Point {
    return { v: x.v.slice(), scale: x.scale };
  }
  free(): void {}
}

/** Clamps a feature vector to the calibrated range, as the device does. */
export function clampInput(fp: FixedPoint, x: ArrayLike<number>): Float64Array {
  const [lo, hi] = fp.inputRange;
  return Float64Array.from(x, (v) => Math.min(hi, Math.max(lo, v)));
}

/**
 * A linear layer on the integers of one input (unpacked): the products, and the real bias
 * rounded at their scale.
 */
function linearPoint(layer: Linear, unpacked: Unpacked, x: Point, weightScale: number): Point {
  const scale = x.scale * weightScale;
  const v = unpacked.bias.map((b) => Math.round(b * scale));
  if (layer.kind === 'dense') {
    const weights = layer.weights;
    for (let r = 0; r < layer.outputs; r++) {
      let sum = v[r]!;
      const row = r * layer.inputs;
      for (let c = 0; c < layer.inputs; c++) sum += weights[row + c]! * x.v[c]!;
      v[r] = sum;
    }
  } else {
    unpacked.forEach((out, input, w) => {
      v[out]! += w * x.v[input]!;
    });
  }
  return { v, scale };
}

/**
 * Largest error of the quantized model's scores (the model `folded`, its activations
 * planned as `polys`) against the float model's (`floats`, on the same clamped inputs) over
 * the calibration vectors, relative to the largest |float score|: what a fixed-point
 * encoding costs in precision, computed as the device would.
 */
export function quantizationError(
  folded: readonly Layer[],
  polys: readonly PolyPlan[],
  fp: FixedPoint,
  calibration: readonly ArrayLike<number>[],
  floats: readonly Float64Array[],
): number {
  const quantized = quantizeFolded(folded, fp);
  const unpacked = folded.map((layer, i) => (layer.kind === 'dense' || layer.kind === 'conv' ? unpack(layer, quantized[i] as Linear) : null));
  let error = 0;
  let largest = 0;
  calibration.forEach((x, k) => {
    let point: Point = { v: quantizeInput(fp, x), scale: fp.inputScale };
    const outputs: Point[] = [];
    let linear = 0;
    let poly = 0;
    quantized.forEach((layer, i) => {
      if (layer.kind === 'poly') {
        point = evaluatePoly(new PointBackend(), polys[poly++]!, point);
      } else if (layer.kind === 'add') {
        const skip = outputs[layer.from]!;
        const k = constMultiplier(1, skip.scale, point.scale);
        point = { v: point.v.map((t, j) => t + k * skip.v[j]!), scale: point.scale };
      } else {
        point = linearPoint(layer, unpacked[i]!, point, fp.weightScales[linear++]!);
      }
      outputs.push(point);
    });
    floats[k]!.forEach((f, i) => {
      error = Math.max(error, Math.abs(point.v[i]! / point.scale - f));
      largest = Math.max(largest, Math.abs(f));
    });
  });
  return largest === 0 ? error : error / largest;
}

/** Integer intervals of the neurons of one layer, at one scale. */
interface Interval {
  readonly lo: Float64Array;
  readonly hi: Float64Array;
  scale: number;
}

/**
 * Interval arithmetic over the neurons of one activation, run through the same polynomial
 * evaluation the device performs (evaluatePoly), so every power and term is bounded.
 * Records the largest magnitude any value reaches.
 */
class IntervalBackend extends ActivationBackend implements Backend<Interval, never> {
  largest = 0;

  private record(v: Interval): Interval {
    for (let i = 0; i < v.lo.length; i++) this.largest = Math.max(this.largest, -v.lo[i]!, v.hi[i]!);
    return v;
  }

  mul(a: Interval, b: Interval): Interval {
    const n = a.lo.length;
    const lo = new Float64Array(n);
    const hi = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (a === b) {
        const [l, h] = [a.lo[i]!, a.hi[i]!];
        hi[i] = Math.max(l * l, h * h);
        lo[i] = l <= 0 && h >= 0 ? 0 : Math.min(l * l, h * h);
      } else {
        const p = [a.lo[i]! * b.lo[i]!, a.lo[i]! * b.hi[i]!, a.hi[i]! * b.lo[i]!, a.hi[i]! * b.hi[i]!];
        lo[i] = Math.min(...p);
        hi[i] = Math.max(...p);
      }
    }
    return this.record({ lo, hi, scale: a.scale * b.scale });
  }

  private times(x: Interval, k: number, scale: number): Interval {
    const lo = x.lo.map((l, i) => Math.min(k * l, k * x.hi[i]!));
    const hi = x.lo.map((l, i) => Math.max(k * l, k * x.hi[i]!));
    return this.record({ lo, hi, scale });
  }

  mulConstLike(x: Interval, c: number, like: Interval): Interval {
    return this.times(x, constMultiplier(c, x.scale, like.scale), like.scale);
  }

  scaleBy(x: Interval, c: number): void {
    const { factor, scale } = scaleByMultiplier(c);
    const out = this.times(x, factor, x.scale * scale);
    x.lo.set(out.lo);
    x.hi.set(out.hi);
    x.scale = out.scale;
  }

  negate(x: Interval): void {
    this.scaleByInteger(x, -1);
  }

  private scaleByInteger(x: Interval, k: number): void {
    const out = this.times(x, k, x.scale);
    x.lo.set(out.lo);
    x.hi.set(out.hi);
  }

  addConst(x: Interval, c: number): void {
    const k = constAddend(c, x.scale);
    for (let i = 0; i < x.lo.length; i++) {
      x.lo[i]! += k;
      x.hi[i]! += k;
    }
    this.record(x);
  }

  add(acc: Interval, x: Interval): void {
    for (let i = 0; i < acc.lo.length; i++) {
      acc.lo[i]! += x.lo[i]!;
      acc.hi[i]! += x.hi[i]!;
    }
    this.record(acc);
  }

  relinearize(): void {}
  rescale(): void {}
  clone(x: Interval): Interval {
    return { lo: x.lo.slice(), hi: x.hi.slice(), scale: x.scale };
  }
  free(): void {}
}

/** Worst-case magnitudes of one layer's integers and the scale of its output. */
export interface LayerBound {
  readonly kind: Layer['kind'];
  /** Largest |integer| any value of the layer can reach, partial sums included. */
  readonly bound: number;
  /** Scale of the layer's output. */
  readonly scale: number;
}

/**
 * Worst-case bounds of every layer for inputs in the calibrated range, from the quantized
 * weights: a linear layer's partial sums stay within Σ|W|·max|x| + |b| per output, and its
 * output within the interval its signed weights give; an activation is bounded by interval
 * arithmetic through the device's own evaluation order; a residual add by the
 * convolution's partial sums plus k·max|skip|.
 */
export function layerBounds(model: readonly Layer[], fp: FixedPoint): LayerBound[] {
  const folded = foldModel(model);
  const quantized = quantizeFolded(folded, fp);
  const polys = planActivations(model);
  const [lo, hi] = fp.inputRange;
  const first = quantized[0]!;
  const inputs = first.kind === 'conv' ? convGeometry(first).inputs : first.kind === 'dense' ? first.inputs : fail('E_SHAPE', 'the first layer of a classifier must be a convolution or a dense layer');
  let x: Interval = {
    lo: new Float64Array(inputs).fill(Math.round(lo * fp.inputScale)),
    hi: new Float64Array(inputs).fill(Math.round(hi * fp.inputScale)),
    scale: fp.inputScale,
  };
  const outputs: Interval[] = [];
  /** Per output of the last linear layer: the largest |partial sum|. */
  let partial = new Float64Array(0);
  let linear = 0;
  let poly = 0;
  return quantized.map((layer, i): LayerBound => {
    let bound: number;
    if (layer.kind === 'poly') {
      const be = new IntervalBackend();
      x = evaluatePoly(be, polys[poly++]!, x);
      bound = be.largest;
    } else if (layer.kind === 'add') {
      const skip = outputs[layer.from]!;
      const k = constMultiplier(1, skip.scale, x.scale);
      const [p, q] = [skip.lo.map((v) => k * v), skip.hi.map((v) => k * v)];
      x = { lo: x.lo.map((v, j) => v + Math.min(p[j]!, q[j]!)), hi: x.hi.map((v, j) => v + Math.max(p[j]!, q[j]!)), scale: x.scale };
      bound = partial.reduce((m, v, j) => Math.max(m, v + Math.max(Math.abs(p[j]!), Math.abs(q[j]!))), 0);
    } else {
      const unpacked = unpack(folded[i] as Linear, layer);
      const scale = x.scale * fp.weightScales[linear++]!;
      const b = unpacked.bias.map((v) => Math.round(v * scale));
      const outLo = b.slice();
      const outHi = b.slice();
      partial = b.map(Math.abs);
      const input = x;
      unpacked.forEach((out, c, w) => {
        const [p, q] = [w * input.lo[c]!, w * input.hi[c]!];
        outLo[out]! += Math.min(p, q);
        outHi[out]! += Math.max(p, q);
        partial[out]! += Math.max(Math.abs(p), Math.abs(q));
      });
      x = { lo: outLo, hi: outHi, scale };
      bound = partial.reduce((m, v) => Math.max(m, v), 0);
    }
    outputs.push(x);
    return { kind: layer.kind, bound, scale: x.scale };
  });
}
