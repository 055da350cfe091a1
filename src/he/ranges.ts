import { CKKS_PLANNING, evaluateLayers, firstPlan, foldModel, type Layer, outputSlots, packInputs, planActivations, planLayers } from './circuit';
import { fail } from './errors';
import { PlainBackend, packModel } from './reference';

/**
 * The value ranges a model reaches on real inputs, measured on the very packed plan the
 * device runs (every slot, the ones that hold garbage between the outputs included: CKKS
 * wraps around when any slot outgrows the modulus, not only the outputs).
 */
export interface CalibratedRanges {
  /** Inputs measured. */
  readonly inputs: number;
  /** Largest |value| in any slot after each layer (its rescale), in layer order. */
  readonly layerMax: readonly number[];
  /** Largest |value| of the decrypted scores (the first `outputs` slots). */
  readonly outputMax: number;
  /** Largest |value| in any slot of the result: what the first prime must hold. */
  readonly resultMax: number;
}

/** Records the largest |slot| of every layer's output. */
class RangeBackend extends PlainBackend {
  readonly layerMax: number[] = [];
  private layer = 0;

  enter(index: number): void {
    this.layer = index;
  }

  override rescale(x: Float64Array): void {
    let m = this.layerMax[this.layer] ?? 0;
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]!));
    this.layerMax[this.layer] = m;
  }
}

export function calibrateRanges(layers: readonly Layer[], slots: number, inputs: readonly ArrayLike<number>[]): CalibratedRanges {
  if (inputs.length === 0) fail('E_SHAPE', 'calibration needs at least one real input');
  const folded = foldModel(layers);
  const plans = planLayers(folded, planActivations(layers), slots, CKKS_PLANNING);
  const first = firstPlan(plans);
  const weights = packModel(plans, folded);
  const output = outputSlots(plans);
  const be = new RangeBackend(slots);
  let outputMax = 0;
  let resultMax = 0;
  for (const x of inputs) {
    const out = evaluateLayers(be, plans, weights, packInputs(first, x), (i) => be.enter(i));
    for (let i = 0; i < out.length; i++) {
      const v = Math.abs(out[i]!);
      if (!Number.isFinite(v)) fail('E_RANGE', 'a calibration input drives the model to a value that is not finite');
      resultMax = Math.max(resultMax, v);
      if (i % output.stride === 0 && i / output.stride < output.count) outputMax = Math.max(outputMax, v);
    }
  }
  const layerMax = plans.map((_, i) => be.layerMax[i] ?? 0);
  return { inputs: inputs.length, layerMax, outputMax, resultMax: Math.max(resultMax, layerMax[layerMax.length - 1] ?? 0) };
}

/**
 * Integer bits the first prime must hold above the scale for results up to `max`, with a
 * margin of `marginBits` (×4 by default) for inputs beyond the calibration data, and the
 * sign bit.
 */
export function integerBitsFor(max: number, marginBits = 2): number {
  if (!(max >= 0) || !Number.isFinite(max)) fail('E_RANGE', `a calibrated range must be a finite non-negative number, got ${max}`);
  return Math.max(1, Math.ceil(Math.log2(Math.max(max, 1))) + 1 + marginBits);
}
