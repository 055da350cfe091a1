import { type Backend, type DenseModelLayer, denseOnly, evaluatePoly, type Layer, foldModel, planActivations, type PolyPlan } from '../circuit';
import { BGV_NO_CONV } from './params';
import { fail } from '../errors';

/**
 * How real numbers become the integers BGV computes on. The device clamps each feature to
 * the calibrated range [lo, hi] and encodes X = round(x·inputScale); dense layer k (in
 * order) holds W = round(w·weightScales[k]) of its folded weights, and its bias is rounded
 * at the scale of the products it is added to. A value's scale is the product of the
 * scales that made it, so the decrypted integer divided by the output scale is the score.
 */
export interface FixedPoint {
  readonly inputRange: readonly [number, number];
  readonly inputScale: number;
  readonly weightScales: readonly number[];
}

export function checkFixedPoint(value: unknown, denseLayers: number): FixedPoint {
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
    f.weightScales.length === denseLayers &&
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

/**
 * Scales that give the largest feature `inputBits` bits and each dense layer's largest
 * folded weight (`folded`: foldModel's output) `weightBits` bits, both signed magnitudes.
 */
export function chooseFixedPoint(folded: readonly DenseModelLayer[], range: readonly [number, number], inputBits: number, weightBits: number): FixedPoint {
  for (const [name, bits] of [['inputBits', inputBits], ['weightBits', weightBits]] as const) {
    if (!Number.isInteger(bits) || bits < 1 || bits > 40) fail('E_PARAMS', `${name} must be an integer from 1 to 40, got ${bits}`);
  }
  const weightScales = folded.flatMap((layer, i) => {
    if (layer.kind !== 'dense') return [];
    const m = maxAbs(layer.weights);
    if (m === 0) fail('E_PARAMS', `layer ${i}: all weights are zero`);
    return [(2 ** weightBits - 1) / m];
  });
  return { inputRange: [range[0], range[1]], inputScale: (2 ** inputBits - 1) / Math.max(-range[0], range[1]), weightScales };
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

/** A folded model with each dense layer's weights rounded to integers at its scale (biases stay real). */
export function quantizeFolded(folded: readonly DenseModelLayer[], fp: FixedPoint): DenseModelLayer[] {
  let dense = 0;
  return folded.map((layer) => {
    if (layer.kind !== 'dense') return layer;
    const scale = fp.weightScales[dense++]!;
    const weights = new Float64Array(layer.weights.length);
    for (let i = 0; i < weights.length; i++) weights[i] = Math.round(layer.weights[i]! * scale);
    return { ...layer, weights };
  });
}

/** The model folded, with each dense layer's weights rounded to integers at its scale (biases stay real). */
export function quantizeWeights(layers: readonly DenseModelLayer[], fp: FixedPoint): DenseModelLayer[] {
  return quantizeFolded(foldModel(layers), fp);
}

/** Integers (held in doubles) of the neurons of one layer, at one scale. */
interface Point {
  readonly v: Float64Array;
  scale: number;
}

/** The device's polynomial evaluation on the integers of one input (unpacked). */
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
 * Largest error of the quantized model's scores (the model `folded`, its activations
 * planned as `polys`) against the float model's (`floats`, on the same clamped inputs) over
 * the calibration vectors, relative to the largest |float score|: what a fixed-point
 * encoding costs in precision, computed as the device would.
 */
export function quantizationError(
  folded: readonly DenseModelLayer[],
  polys: readonly PolyPlan[],
  fp: FixedPoint,
  calibration: readonly ArrayLike<number>[],
  floats: readonly Float64Array[],
): number {
  const quantized = quantizeFolded(folded, fp);
  let error = 0;
  let largest = 0;
  calibration.forEach((x, k) => {
    let point: Point = { v: quantizeInput(fp, x), scale: fp.inputScale };
    let dense = 0;
    let poly = 0;
    for (const layer of quantized) {
      if (layer.kind === 'poly') {
        point = evaluatePoly(new PointBackend(), polys[poly++]!, point);
        continue;
      }
      const scale = point.scale * fp.weightScales[dense++]!;
      const weights = layer.weights as Float64Array;
      const v = new Float64Array(layer.outputs);
      for (let r = 0; r < layer.outputs; r++) {
        let sum = Math.round((layer.bias?.[r] ?? 0) * scale);
        const row = r * layer.inputs;
        for (let c = 0; c < layer.inputs; c++) sum += weights[row + c]! * point.v[c]!;
        v[r] = sum;
      }
      point = { v, scale };
    }
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
  readonly kind: 'dense' | 'poly';
  /** Largest |integer| any value of the layer can reach, partial sums included. */
  readonly bound: number;
  /** Scale of the layer's output. */
  readonly scale: number;
}

/**
 * Worst-case bounds of every layer for inputs in the calibrated range, from the quantized
 * weights: a dense layer's partial sums stay within Σ|W|·max|x| + |b| per row, and its
 * output within the interval its signed weights give; an activation is bounded by interval
 * arithmetic through the device's own evaluation order.
 */
export function layerBounds(model: readonly Layer[], fp: FixedPoint): LayerBound[] {
  const layers = denseOnly(model, BGV_NO_CONV);
  const quantized = quantizeWeights(layers, fp);
  const polys = planActivations(layers);
  const [lo, hi] = fp.inputRange;
  const first = quantized[0]!;
  if (first.kind !== 'dense') fail('E_SHAPE', 'the first layer of a classifier must be dense');
  let x: Interval = {
    lo: new Float64Array(first.inputs).fill(Math.round(lo * fp.inputScale)),
    hi: new Float64Array(first.inputs).fill(Math.round(hi * fp.inputScale)),
    scale: fp.inputScale,
  };
  let dense = 0;
  let poly = 0;
  return quantized.map((layer): LayerBound => {
    if (layer.kind === 'poly') {
      const be = new IntervalBackend();
      const out = evaluatePoly(be, polys[poly++]!, x);
      x = out;
      return { kind: 'poly', bound: be.largest, scale: out.scale };
    }
    const scale = x.scale * fp.weightScales[dense++]!;
    const outLo = new Float64Array(layer.outputs);
    const outHi = new Float64Array(layer.outputs);
    let bound = 0;
    for (let r = 0; r < layer.outputs; r++) {
      const b = Math.round((layer.bias?.[r] ?? 0) * scale);
      let [l, h, abs] = [b, b, Math.abs(b)];
      for (let c = 0; c < layer.inputs; c++) {
        const w = layer.weights[r * layer.inputs + c]!;
        const [p, q] = [w * x.lo[c]!, w * x.hi[c]!];
        l += Math.min(p, q);
        h += Math.max(p, q);
        abs += Math.max(Math.abs(p), Math.abs(q));
      }
      outLo[r] = l;
      outHi[r] = h;
      bound = Math.max(bound, abs);
    }
    x = { lo: outLo, hi: outHi, scale };
    return { kind: 'dense', bound, scale };
  });
}
