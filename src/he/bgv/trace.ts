import type { Backend } from '../circuit';
import { fail } from '../errors';
import { type OpCounts, type TraceWeight, zeroCounts } from '../trace';
import { constMultiplier, scaleByMultiplier } from './fixed-point';
import { MAX_PRIME_BITS, minDataBits } from './params';

/**
 * A heuristic model of BGV noise in SEAL, in bits: `noise` is log2 of the largest
 * coefficient of m + t·e, so a ciphertext whose primes total Q bits has a budget of about
 * Q − noise − 1 bits (what Decryptor.invariantNoiseBudget reports). Fitted to SEAL's
 * measured budgets at N=8192–32768 and rounded to the pessimistic side:
 * - a fresh encryption holds T + ½·log2 N + 2 bits (public key) or T + 6 (secret key),
 *   T = log2 t;
 * - a ct×ct product adds the operands' noise bits, plus 4 (½·log2 N + 1 for a square,
 *   whose factors are not independent): magnitudes multiply;
 * - a product with a batch-encoded plaintext (coefficients up to t/2) adds T + ½·log2 N − 1,
 *   one with a constant k adds log2|k|;
 * - sums of independent products grow as the root of the sum of squares, other sums add
 *   magnitudes;
 * - key switching (rotation, relinearization) adds fresh-sized noise, T + ½·log2 N +
 *   log2(primes) + 2 bits, more when the special prime is smaller than the data primes;
 * - a modulus switch dropping p bits of primes leaves max(noise − p, T + ½·log2 N + 2).
 * Since magnitudes multiply, every switch must bring the noise back to that floor before
 * the next product: each level of the circuit costs about T + 20 bits of modulus. (Sums
 * of values with different BGV correction factors would cost ≈ T/2 bits more each; the
 * chosen primes keep every correction factor 1, see realizeBgvPrimes.)
 */
export class NoiseModel {
  readonly halfLogN: number;
  readonly floor: number;

  constructor(
    readonly polyModulusDegree: number,
    readonly plainBits: number,
  ) {
    this.halfLogN = Math.log2(polyModulusDegree) / 2;
    this.floor = plainBits + this.halfLogN + 2;
  }

  freshPublic(): number {
    return this.floor;
  }
  freshSecret(): number {
    return this.plainBits + 6;
  }
  mulCipher(a: number, b: number, square: boolean): number {
    return a + b + (square ? this.halfLogN + 1 : 4);
  }
  mulPlain(a: number): number {
    return a + this.plainBits + this.halfLogN - 1;
  }
  mulConst(a: number, k: number): number {
    return a + Math.log2(Math.abs(k));
  }
  /** Magnitudes add (correlated noise). */
  add(a: number, b: number): number {
    return Math.max(a, b) + Math.log2(1 + 2 ** -Math.abs(a - b));
  }
  /** Independent noises: root of the sum of squares. */
  addIndependent(a: number, b: number): number {
    return Math.max(a, b) + 0.5 * Math.log2(1 + 4 ** -Math.abs(a - b));
  }
  keySwitch(a: number, primes: number, excessBits: number): number {
    return this.add(a, this.plainBits + this.halfLogN + Math.log2(primes) + 2 + Math.max(0, excessBits));
  }
  modSwitch(a: number, droppedBits: number): number {
    return this.add(a - droppedBits, this.floor);
  }
}

/**
 * Median cost of SEAL's BGV operations in ms on one core of this project's machine
 * (node-seal 6.0.3), as a function of the ring degree and the number of data primes ℓ at
 * the operation's level; a key switch also works over the special prime. Measured at
 * N=8192–32768: costs grow linearly with N, a little faster for the NTT-bound ones. What
 * the planner compares candidates by.
 */
export function opCostMs(op: 'ctMul' | 'plainMul' | 'constMul' | 'add' | 'keySwitch' | 'modSwitch' | 'encrypt', n: number, primes: number): number {
  const large = 1 + 0.05 * Math.log2(n / 8192);
  const unit = n * primes;
  switch (op) {
    case 'ctMul':
    case 'constMul':
      return 2.7e-5 * unit;
    case 'plainMul':
      return 1.3e-5 * unit;
    case 'add':
      return 4.5e-6 * unit;
    case 'keySwitch':
      return n * (primes + 1) * (2.1e-5 * primes + 4.3e-5) * large;
    case 'modSwitch':
      return 4.1e-5 * unit * large;
    case 'encrypt':
      return 1.6e-4 * unit * large;
  }
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** What the BGV tracer knows of a value: modulus switches so far, scale, size, noise. */
export interface BgvTraceValue {
  /** Modulus switches the value has gone through (0: fresh, at the top of the chain). */
  depth: number;
  scale: number;
  /** 0 for the device's plain input, else the ciphertext size. */
  size: number;
  noise: number;
}

/**
 * The modulus chain as the tracer sees it: the bits of the primes each switch drops, in
 * order, the primes left at the end and the special prime. An `open` chain is being
 * planned: a switch beyond `drops` appends the fewest primes that bring the noise back to
 * its floor.
 */
export interface TraceChain {
  readonly drops: (readonly number[])[];
  readonly baseBits: readonly number[];
  readonly specialBits: number;
  readonly open: boolean;
}

/** The fewest primes (at least one, each at least `minBits`) that total `bits` bits. */
export function primesToDrop(bits: number, minBits: number): number[] {
  const count = Math.max(1, Math.ceil(bits / MAX_PRIME_BITS));
  return Array<number>(count).fill(Math.max(minBits, Math.ceil(bits / count)));
}

/**
 * Runs the packed plan on metadata: scales (exactly as the device computes them), the
 * chain depth of every value, and a noise estimate; records the depth and scale each weight
 * is used at, the rotation steps, the operation counts and an estimate of the time.
 */
export class BgvTraceBackend implements Backend<BgvTraceValue, TraceWeight> {
  readonly counts: OpCounts = zeroCounts();
  readonly steps = new Set<number>();
  readonly layerSteps = new Map<number, Set<number>>();
  /** Depth and scale of each weight, keyed `layer:diagonal` (−1: the bias). */
  readonly weightSlots = new Map<string, { depth: number; scale: number }>();
  costMs = 0;
  private layer = -1;

  constructor(
    private readonly model: NoiseModel,
    private readonly chain: TraceChain,
    /** Scale of the diagonals (or planes) of linear layer `layer` (by layer index). */
    private readonly weightScale: (layer: number) => number,
    private readonly weightsEncrypted: boolean,
  ) {}

  enterLayer(index: number): void {
    this.layer = index;
    this.layerSteps.set(index, new Set());
  }

  /** Primes at a depth: the ones still to drop plus the base. */
  primesAt(depth: number): number {
    let primes = this.chain.baseBits.length;
    for (let d = depth; d < this.chain.drops.length; d++) primes += this.chain.drops[d]!.length;
    return primes;
  }

  /** Total bits of the primes at a depth. */
  bitsAt(depth: number): number {
    return sum(this.chain.baseBits) + sum(this.chain.drops.slice(depth).flat());
  }

  private cost(op: Parameters<typeof opCostMs>[0], depth: number): void {
    this.costMs += opCostMs(op, this.model.polyModulusDegree, this.primesAt(depth));
  }

  private keySwitch(x: BgvTraceValue): void {
    const dataMax = Math.max(...this.chain.baseBits, ...this.chain.drops.flat());
    x.noise = this.model.keySwitch(x.noise, Math.max(1, this.primesAt(x.depth)), dataMax - this.chain.specialBits);
    this.cost('keySwitch', x.depth);
  }

  private record(key: string, depth: number, scale: number): void {
    const known = this.weightSlots.get(key);
    if (known !== undefined && (known.depth !== depth || known.scale !== scale)) fail('E_SHAPE', `weight ${key} is used at two different levels`);
    this.weightSlots.set(key, { depth, scale });
  }

  /** Noise of a weight used at `depth`: encrypted fresh at the top, switched down at load. */
  private weightNoise(depth: number): number {
    let noise = this.model.freshSecret();
    for (let d = 0; d < depth; d++) noise = this.model.modSwitch(noise, sum(this.chain.drops[d]!));
    return noise;
  }

  rotate(x: BgvTraceValue, step: number): BgvTraceValue {
    const out = { ...x };
    if (x.size > 0) {
      this.counts.rotations++;
      this.steps.add(step);
      this.layerSteps.get(this.layer)?.add(step);
      this.keySwitch(out);
    }
    return out;
  }

  mulAdd(acc: BgvTraceValue | null, w: TraceWeight, x: BgvTraceValue): BgvTraceValue {
    const weightScale = this.weightScale(w.layer);
    this.record(`${w.layer}:${w.diagonal}`, x.depth, weightScale);
    const bothEncrypted = this.weightsEncrypted && x.size > 0;
    let noise: number;
    if (bothEncrypted) {
      this.counts.ctMults++;
      this.cost('ctMul', x.depth);
      noise = this.model.mulCipher(x.noise, this.weightNoise(x.depth), false);
    } else {
      this.counts.plainMults++;
      this.cost('plainMul', x.depth);
      noise = this.model.mulPlain(x.size > 0 ? x.noise : this.weightNoise(x.depth));
    }
    const product = { depth: x.depth, scale: x.scale * weightScale, size: bothEncrypted ? 3 : 2, noise };
    if (acc === null) return product;
    this.counts.adds++;
    this.cost('add', x.depth);
    return { ...acc, size: Math.max(acc.size, product.size), noise: this.model.addIndependent(acc.noise, noise) };
  }

  mul(a: BgvTraceValue, b: BgvTraceValue): BgvTraceValue {
    const depth = Math.max(a.depth, b.depth);
    this.counts.ctMults++;
    this.cost('ctMul', depth);
    return { depth, scale: a.scale * b.scale, size: 3, noise: this.model.mulCipher(a.noise, b.noise, a === b) };
  }

  mulConstLike(x: BgvTraceValue, c: number, like: BgvTraceValue): BgvTraceValue {
    const k = constMultiplier(c, x.scale, like.scale);
    this.counts.plainMults++;
    this.cost('constMul', like.depth);
    return { depth: like.depth, scale: like.scale, size: 2, noise: this.model.mulConst(x.noise, k) };
  }

  scaleBy(x: BgvTraceValue, c: number): void {
    const { factor, scale } = scaleByMultiplier(c);
    this.counts.plainMults++;
    this.cost('constMul', x.depth);
    x.noise = this.model.mulConst(x.noise, factor);
    x.scale *= scale;
    this.rescale(x);
  }

  negate(): void {}

  addConst(x: BgvTraceValue): void {
    this.counts.adds++;
    this.cost('add', x.depth);
  }

  add(acc: BgvTraceValue, x: BgvTraceValue): void {
    if (acc.scale !== x.scale) fail('E_SHAPE', `adding values at scales ${acc.scale} and ${x.scale}`);
    this.counts.adds++;
    this.cost('add', acc.depth);
    acc.size = Math.max(acc.size, x.size);
    acc.noise = this.model.add(acc.noise, x.noise);
  }

  addWeight(acc: BgvTraceValue, w: TraceWeight): void {
    this.record(`${w.layer}:${w.diagonal}`, acc.depth, acc.scale);
    this.counts.adds++;
    this.cost('add', acc.depth);
    acc.noise = this.model.addIndependent(acc.noise, this.weightNoise(acc.depth));
  }

  relinearize(x: BgvTraceValue): void {
    if (x.size > 2) {
      this.counts.relins++;
      this.keySwitch(x);
      x.size = 2;
    }
  }

  rescale(x: BgvTraceValue): void {
    let drop = this.chain.drops[x.depth];
    if (drop === undefined) {
      if (!this.chain.open) fail('E_PARAMS', 'the circuit is deeper than the modulus chain');
      drop = primesToDrop(Math.ceil(x.noise - this.model.floor), minDataBits(this.model.polyModulusDegree, this.model.plainBits));
      this.chain.drops.push(drop);
    }
    this.counts.rescales++;
    this.cost('modSwitch', x.depth);
    x.noise = this.model.modSwitch(x.noise, sum(drop));
    x.depth++;
  }

  constant(w: TraceWeight | null): BgvTraceValue {
    fail('E_SHAPE', `the tracer never sees a vanishing layer (${w === null ? 'no bias' : 'bias'})`);
  }

  clone(x: BgvTraceValue): BgvTraceValue {
    return { ...x };
  }

  free(): void {}
}
