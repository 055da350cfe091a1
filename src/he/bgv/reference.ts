import { type Backend, evaluateLayers, firstPlan, foldModel, type Layer, type LayerWeights, packInputs } from '../circuit';
import { shapesOf } from '../classifier';
import { fail } from '../errors';
import { packModel } from '../reference';
import { constAddend, constMultiplier, quantizeFolded, quantizeInput, scaleByMultiplier } from './fixed-point';
import type { BgvClassifierPlan } from './plan';

/** Integers held exactly in doubles, at a scale: a packed weight or bias as it is encrypted. */
export interface IntVector {
  readonly values: Float64Array;
  readonly scale: number;
}

/**
 * The folded model quantized and packed for the plan: every weight diagonal (or plane) and
 * bias as the integers the owner encrypts (the same for every CRT component, reduced mod
 * t_i there). The diagonals pack the integer weights; the biases pack the real folded
 * model (a convolution's input offset times its real weights included) and are rounded at
 * the scale they are added at.
 */
export function packBgvModel(plan: BgvClassifierPlan, layers: readonly Layer[]): (LayerWeights<IntVector> | null)[] {
  if (JSON.stringify(shapesOf(layers)) !== JSON.stringify(plan.layers)) fail('E_SHAPE', 'the layers are not the ones the plan was made for');
  const folded = foldModel(layers);
  const real = packModel(plan.plans, folded);
  const integer = packModel(plan.plans, quantizeFolded(folded, plan.fixedPoint));
  return integer.map((packed, i) => {
    if (packed === null) return null;
    const slot = (k: number) => plan.weightSlots.get(`${i}:${k}`)!;
    const bias = slot(-1);
    return {
      diagonals: packed.diagonals.map((d, k) => (d === null ? null : { values: d, scale: slot(k).scale })),
      biases: [{ values: real[i]!.biases[0]!.map((b) => Math.round(b * bias.scale)), scale: bias.scale }],
    };
  });
}

/** Exact integers at a scale. */
interface BigVector {
  readonly v: bigint[];
  scale: number;
}

function big(values: ArrayLike<number>): bigint[] {
  return Array.from(values, (x) => BigInt(x));
}

/**
 * The packed plan on exact integers (BigInt, no modulus): what every CRT component
 * computes modulo its t_i, and what their CRT recombination must equal exactly.
 */
class IntegerBackend implements Backend<BigVector, BigVector> {
  constructor(private readonly slots: number) {}

  rotate(x: BigVector, step: number): BigVector {
    const s = ((step % this.slots) + this.slots) % this.slots;
    return { v: [...x.v.slice(s), ...x.v.slice(0, s)], scale: x.scale };
  }
  mulAdd(acc: BigVector | null, w: BigVector, x: BigVector): BigVector {
    const out = acc ?? { v: Array<bigint>(this.slots).fill(0n), scale: x.scale * w.scale };
    for (let i = 0; i < this.slots; i++) {
      const a = w.v[i]!;
      const b = x.v[i]!;
      if (a !== 0n && b !== 0n) out.v[i]! += a * b;
    }
    return out;
  }
  mul(a: BigVector, b: BigVector): BigVector {
    return { v: a.v.map((x, i) => x * b.v[i]!), scale: a.scale * b.scale };
  }
  private times(x: BigVector, k: number): bigint[] {
    const factor = BigInt(k);
    return x.v.map((v) => v * factor);
  }
  private timesInPlace(x: BigVector, k: number): void {
    const factor = BigInt(k);
    for (let i = 0; i < this.slots; i++) x.v[i]! *= factor;
  }
  mulConstLike(x: BigVector, c: number, like: BigVector): BigVector {
    return { v: this.times(x, constMultiplier(c, x.scale, like.scale)), scale: like.scale };
  }
  scaleBy(x: BigVector, c: number): void {
    const { factor, scale } = scaleByMultiplier(c);
    this.timesInPlace(x, factor);
    x.scale *= scale;
  }
  negate(x: BigVector): void {
    this.timesInPlace(x, -1);
  }
  addConst(x: BigVector, c: number): void {
    const k = BigInt(constAddend(c, x.scale));
    for (let i = 0; i < this.slots; i++) x.v[i]! += k;
  }
  add(acc: BigVector, x: BigVector): void {
    for (let i = 0; i < this.slots; i++) acc.v[i]! += x.v[i]!;
  }
  addWeight(acc: BigVector, w: BigVector): void {
    this.add(acc, w);
  }
  relinearize(): void {}
  rescale(): void {}
  constant(w: BigVector | null): BigVector {
    return w === null ? { v: Array<bigint>(this.slots).fill(0n), scale: 1 } : { v: [...w.v], scale: w.scale };
  }
  clone(x: BigVector): BigVector {
    return { v: [...x.v], scale: x.scale };
  }
  free(): void {}
}

/**
 * The integer reference of a BGV classifier: quantizes and packs the model once, then for
 * each input runs the same packed plan on exact integers and returns the output integers
 * (the decrypted, CRT-recombined result must equal them exactly).
 */
export function bgvReferenceModel(plan: BgvClassifierPlan, layers: readonly Layer[]): (x: ArrayLike<number>) => bigint[] {
  const first = firstPlan(plan.plans);
  const slots = plan.params.polyModulusDegree / 2;
  const weights = packBgvModel(plan, layers).map((w): LayerWeights<BigVector> | null =>
    w === null
      ? null
      : {
          diagonals: w.diagonals.map((d) => (d === null ? null : { v: big(d.values), scale: d.scale })),
          biases: w.biases.map((b) => (b === null ? null : { v: big(b.values), scale: b.scale })),
        },
  );
  return (x) => {
    const inputs = packInputs(first, quantizeInput(plan.fixedPoint, x)).map((v) => ({ v: big(v), scale: plan.fixedPoint.inputScale }));
    return evaluateLayers(new IntegerBackend(slots), plan.plans, weights, inputs).v.slice(0, plan.outputs);
  };
}
