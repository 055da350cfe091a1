import {
  type Backend,
  evaluateLayers,
  firstPlan,
  foldModel,
  type Layer,
  type LayerPlan,
  type LayerWeights,
  planActivations,
  CKKS_PLANNING,
  outputSlots,
  packInputs,
  planLayers,
  type PlanningOptions,
  readOutputs,
} from './circuit';
import { floatConv, packConvWeights, packRotatedConv, pairPlanes } from './conv';
import { packDense, rotateLeft } from './packing';

/**
 * The plaintext reference: the same packed plan (layouts, pre-rotated diagonals, baby and
 * giant rotations, rotate-and-sum) on plain slot vectors. The encrypted result must match
 * it to CKKS precision; it must match the float model exactly up to rounding. A vector of
 * 2·slots values is complex-packed (real parts, then imaginary parts: see complex.ts).
 */
export class PlainBackend implements Backend<Float64Array, Float64Array> {
  constructor(private readonly slots: number) {}
  rotate(x: Float64Array, step: number): Float64Array {
    return rotateLeft(x, step, this.slots);
  }
  mulAdd(acc: Float64Array | null, w: Float64Array, x: Float64Array): Float64Array {
    const out = acc ?? new Float64Array(x.length);
    if (x.length === 2 * this.slots && w.length === x.length && out.length === x.length) {
      const n = this.slots;
      for (let i = 0; i < n; i++) {
        out[i]! += w[i]! * x[i]! - w[n + i]! * x[n + i]!;
        out[n + i]! += w[i]! * x[n + i]! + w[n + i]! * x[i]!;
      }
      return out;
    }
    if (w.length !== x.length || out.length !== x.length) throw new Error('the reference multiplies a complex-packed vector with a real one');
    for (let i = 0; i < out.length; i++) out[i]! += w[i]! * x[i]!;
    return out;
  }
  mul(a: Float64Array, b: Float64Array): Float64Array {
    return a.map((v, i) => v * b[i]!);
  }
  mulConstLike(x: Float64Array, c: number): Float64Array {
    return x.map((v) => v * c);
  }
  scaleBy(x: Float64Array, c: number): void {
    for (let i = 0; i < x.length; i++) x[i]! *= c;
  }
  negate(x: Float64Array): void {
    this.scaleBy(x, -1);
  }
  addConst(x: Float64Array, c: number): void {
    for (let i = 0; i < x.length; i++) x[i]! += c;
  }
  add(acc: Float64Array, x: Float64Array): void {
    for (let i = 0; i < acc.length; i++) acc[i]! += x[i]!;
  }
  addWeight(acc: Float64Array, w: Float64Array): void {
    this.add(acc, w);
  }
  relinearize(): void {}
  rescale(_x: Float64Array): void {}
  realPart(x: Float64Array): Float64Array {
    if (x.length !== 2 * this.slots) throw new Error('the real part of a vector that is not complex-packed');
    return x.subarray(0, this.slots).map((v) => 2 * v);
  }
  constant(w: Float64Array | null): Float64Array {
    return w === null ? new Float64Array(this.slots) : w.slice();
  }
  clone(x: Float64Array): Float64Array {
    return x.slice();
  }
  free(_x: Float64Array): void {}
}

/** A linear layer's packed weights: every diagonal (or plane) and the bias of each output part, as slot vectors. */
export interface PackedLayer extends LayerWeights<Float64Array> {
  readonly biases: readonly Float64Array[];
}

/** Packs every convolution and dense layer of an already folded model for its plan. */
export function packModel(plans: readonly LayerPlan[], folded: readonly Layer[]): (PackedLayer | null)[] {
  return plans.map((plan, i) => {
    const layer = folded[i]!;
    if (plan.kind === 'conv' && layer.kind === 'conv') {
      const packed = packConvWeights(plan, layer.weights, layer.bias);
      return { diagonals: plan.complex ? pairPlanes(packed.planes, 'weights', plan.geometry.planes) : packed.planes, biases: packed.biases };
    }
    if (plan.kind === 'conv-rot' && layer.kind === 'conv') return packRotatedConv(plan, layer.weights, layer.bias, layer.inputOffset);
    if (plan.kind !== 'dense' || layer.kind !== 'dense') return null;
    const packed = packDense(plan, layer.weights, layer.bias);
    return { diagonals: packed.diagonals, biases: [packed.bias] };
  });
}

/**
 * The plaintext reference of a model: folds, plans and packs it once, then runs the packed
 * plan on plain vectors for each input.
 */
export function referenceModel(layers: readonly Layer[], slots: number, options: PlanningOptions = CKKS_PLANNING): (x: ArrayLike<number>) => Float64Array {
  const folded = foldModel(layers);
  const plans = planLayers(folded, planActivations(layers), slots, options);
  const first = firstPlan(plans);
  const weights = packModel(plans, folded);
  const output = outputSlots(plans);
  return (x) => readOutputs(evaluateLayers(new PlainBackend(slots), plans, weights, packInputs(first, x)), output);
}

/** Runs the packed plan of `layers` on plain vectors and returns the outputs. */
export function referenceEvaluate(layers: readonly Layer[], slots: number, x: ArrayLike<number>, options?: PlanningOptions): Float64Array {
  return referenceModel(layers, slots, options)(x);
}

export function outputCount(layers: readonly Layer[]): number {
  let width = 0;
  for (const layer of layers) if (layer.kind === 'dense') width = layer.outputs;
  return width;
}

/** The float model itself, evaluated directly: no packing, no folding. */
export function floatEvaluate(layers: readonly Layer[], x: ArrayLike<number>): Float64Array {
  let v: Float64Array = Float64Array.from(x);
  const outputs: Float64Array[] = [];
  for (const layer of layers) {
    if (layer.kind === 'conv') {
      v = floatConv(layer, v);
    } else if (layer.kind === 'dense') {
      const out = new Float64Array(layer.outputs);
      for (let r = 0; r < layer.outputs; r++) {
        let s = layer.bias?.[r] ?? 0;
        for (let c = 0; c < layer.inputs; c++) s += layer.weights[r * layer.inputs + c]! * v[c]!;
        out[r] = s;
      }
      v = out;
    } else if (layer.kind === 'add') {
      const skip = outputs[layer.from];
      if (skip === undefined || skip.length !== v.length) throw new Error(`layer ${outputs.length}: cannot add layer ${layer.from}'s output`);
      v = v.map((t, i) => t + skip[i]!);
    } else {
      v = v.map((t) => layer.coeffs.reduceRight((acc, a) => acc * t + a, 0));
    }
    outputs.push(v);
  }
  return v;
}
