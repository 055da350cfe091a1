import type { Backend } from './circuit';
import { fail } from './errors';

/** What the tracer knows of a value: its level (chain index), scale and size. */
export interface TraceValue {
  level: number;
  scale: number;
  size: number;
}

/** A weight slot: which layer and diagonal (−1: the bias) it belongs to. */
export interface TraceWeight {
  readonly layer: number;
  readonly diagonal: number;
}

export interface OpCounts {
  ctMults: number;
  plainMults: number;
  rotations: number;
  relins: number;
  rescales: number;
  adds: number;
}

export function zeroCounts(): OpCounts {
  return { ctMults: 0, plainMults: 0, rotations: 0, relins: 0, rescales: 0, adds: 0 };
}

/**
 * Runs a plan on metadata only, doing SEAL's scale arithmetic in the same order SEAL does
 * (products multiply scales, rescaling divides by the dropped prime), so the owner can
 * encrypt every weight at exactly the level and scale the device will need, and the plan
 * can report its depth, rotation steps and operation counts before anything is encrypted.
 */
export class TraceBackend implements Backend<TraceValue, TraceWeight> {
  readonly counts = zeroCounts();
  /** The same, by layer index (operations before the first enterLayer are not attributed). */
  readonly layerCounts = new Map<number, OpCounts>();
  readonly steps = new Set<number>();
  /** Rotation steps by layer index. */
  readonly layerSteps = new Map<number, Set<number>>();
  private layer = -1;
  /** Level and scale each weight slot must be encrypted at, keyed `layer:diagonal`. */
  readonly weightSlots = new Map<string, { level: number; scale: number }>();
  minLevel: number;

  /**
   * @param primes the data primes q_0 … q_L as numbers
   * @param weightsEncrypted ct(W) products count as ct×ct, pt(W) ones as plain products
   */
  constructor(
    private readonly primes: readonly number[],
    private readonly weightsEncrypted: boolean,
  ) {
    this.minLevel = primes.length - 1;
  }

  private record(w: TraceWeight, level: number, scale: number): void {
    const key = `${w.layer}:${w.diagonal}`;
    const known = this.weightSlots.get(key);
    if (known !== undefined && (known.level !== level || known.scale !== scale)) {
      fail('E_SHAPE', `weight ${key} is used at two different levels`);
    }
    this.weightSlots.set(key, { level, scale });
  }

  /** Attributes the operations that follow to layer `index`. */
  enterLayer(index: number): void {
    this.layer = index;
    this.layerSteps.set(index, new Set());
    this.layerCounts.set(index, zeroCounts());
  }

  private count(kind: keyof OpCounts): void {
    this.counts[kind]++;
    const layer = this.layerCounts.get(this.layer);
    if (layer !== undefined) layer[kind]++;
  }

  rotate(x: TraceValue, step: number): TraceValue {
    if (x.size > 0) {
      this.count('rotations');
      this.steps.add(step);
      this.layerSteps.get(this.layer)?.add(step);
    }
    return { ...x };
  }

  mulAdd(acc: TraceValue | null, w: TraceWeight, x: TraceValue): TraceValue {
    const weightScale = this.primes[x.level]!;
    this.record(w, x.level, weightScale);
    const bothEncrypted = this.weightsEncrypted && x.size > 0;
    if (bothEncrypted) this.count('ctMults');
    else this.count('plainMults');
    const product = { level: x.level, scale: x.scale * weightScale, size: bothEncrypted ? 3 : 2 };
    if (acc === null) return product;
    this.count('adds');
    return { ...acc, size: Math.max(acc.size, product.size) };
  }

  mul(a: TraceValue, b: TraceValue): TraceValue {
    this.count('ctMults');
    return { level: Math.min(a.level, b.level), scale: a.scale * b.scale, size: 3 };
  }

  mulConstLike(x: TraceValue, _c: number, like: TraceValue): TraceValue {
    this.count('plainMults');
    return { level: like.level, scale: x.scale * (like.scale / x.scale), size: 2 };
  }

  scaleBy(x: TraceValue, _c: number): void {
    this.count('plainMults');
    x.scale *= this.primes[x.level]!;
    this.rescale(x);
  }

  negate(): void {}

  addConst(_x: TraceValue, _c: number): void {
    this.count('adds');
  }

  add(acc: TraceValue, x: TraceValue): void {
    this.count('adds');
    acc.size = Math.max(acc.size, x.size);
  }

  addWeight(acc: TraceValue, w: TraceWeight): void {
    this.record(w, acc.level, acc.scale);
    this.count('adds');
  }

  relinearize(x: TraceValue): void {
    if (x.size > 2) {
      this.count('relins');
      x.size = 2;
    }
  }

  /** The conjugation is a Galois key switch: counted with the rotations, its key as step 0 (SEAL's element 2N−1). */
  realPart(x: TraceValue): TraceValue {
    this.count('adds');
    return this.rotate(x, 0);
  }

  rescale(x: TraceValue): void {
    if (x.level === 0) fail('E_PARAMS', 'the circuit is deeper than the modulus chain');
    this.count('rescales');
    x.scale /= this.primes[x.level]!;
    x.level--;
    this.minLevel = Math.min(this.minLevel, x.level);
  }

  constant(w: TraceWeight | null): TraceValue {
    fail('E_SHAPE', `the tracer never sees a vanishing layer (${w === null ? 'no bias' : 'bias'})`);
  }

  clone(x: TraceValue): TraceValue {
    return { ...x };
  }

  free(): void {}
}
