import type { Backend } from '../circuit';
import { fail } from '../errors';
import { rotateLeft } from '../packing';
import type { Scope } from '../scope';
import type { CipherText, PlainText } from '../seal';
import { type OpCounts, zeroCounts } from '../trace';
import type { BgvComponent } from './context';
import { constAddend, constMultiplier, scaleByMultiplier } from './fixed-point';
import type { BgvComponentKeys } from './keys';

/** An encrypted fixed-point value: the ciphertext of integers and their scale. */
export interface BgvCipher {
  readonly ct: CipherText;
  scale: number;
}

/** The device's own quantized input in the clear (the plaintext-input mode). */
export interface BgvPlainInput {
  readonly plain: Float64Array;
  readonly scale: number;
}

export type BgvValue = BgvCipher | BgvPlainInput;

function isPlain(v: BgvValue): v is BgvPlainInput {
  return (v as BgvPlainInput).plain !== undefined;
}

function sameScale(a: number, b: number): boolean {
  return Math.abs(a / b - 1) < 1e-12;
}

/**
 * Runs the packed plan on one CRT component's ciphertexts. Values carry their scale;
 * `rescale` is a modulus switch to the next planned level (the integers stay the same,
 * the noise shrinks with the modulus); constants are the integers the fixed-point helpers
 * round them to, so the results equal the integer reference exactly while no value
 * overflows t/2. Every object it creates is tracked by `scope`.
 */
export class BgvSealBackend implements Backend<BgvValue, BgvCipher> {
  readonly counts: OpCounts = zeroCounts();
  private readonly product: CipherText;
  private readonly encoded: PlainText;
  private readonly inputs = new Map<Float64Array, Map<number, PlainText | null>>();

  constructor(
    private readonly c: BgvComponent,
    private readonly keys: BgvComponentKeys,
    private readonly scope: Scope,
    /** Chain level after each modulus switch (index 0: the top), strictly decreasing. */
    private readonly levels: readonly number[],
  ) {
    this.product = scope.track(c.seal.CipherText());
    this.encoded = scope.track(c.seal.PlainText());
  }

  private cipher(v: BgvValue): BgvCipher {
    if (isPlain(v)) fail('E_SHAPE', 'a plain input vector cannot be used where a ciphertext is needed');
    return v;
  }

  private fresh(scale: number): BgvCipher {
    return { ct: this.scope.track(this.c.seal.CipherText()), scale };
  }

  /** A copy of `ct` switched down to `level`, or `ct` itself when it is there already. */
  private atLevel(ct: CipherText, level: number): CipherText {
    if (this.c.levelOf(ct) === level) return ct;
    const copy = this.scope.track(this.c.seal.CipherText());
    this.c.evaluator.cipherModSwitchTo(ct, this.c.parmsIdAt(level), copy);
    return copy;
  }

  private release(moved: CipherText, original: CipherText): void {
    if (moved !== original) this.scope.free(moved);
  }

  /** The constant k in every slot (a constant polynomial: cheap to multiply, little noise). */
  private constantPlain(k: number): PlainText {
    return this.c.encode(new Float64Array(this.c.slots).fill(k), this.encoded);
  }

  rotate(x: BgvValue, step: number): BgvValue {
    if (isPlain(x)) return { plain: rotateLeft(x.plain, step), scale: x.scale };
    const out = this.fresh(x.scale);
    this.c.evaluator.rotateRows(x.ct, step, this.keys.galois, out.ct);
    this.counts.rotations++;
    return out;
  }

  mulAdd(acc: BgvValue | null, w: BgvCipher, x: BgvValue): BgvValue | null {
    const ev = this.c.evaluator;
    if (isPlain(x)) {
      const encoded = this.encodedInput(x, this.c.levelOf(w.ct));
      if (encoded === null) return acc;
      ev.multiplyPlain(w.ct, encoded, this.product);
      this.counts.plainMults++;
    } else {
      ev.multiply(w.ct, x.ct, this.product);
      this.counts.ctMults++;
    }
    const scale = x.scale * w.scale;
    if (acc === null) {
      const sum = this.fresh(scale);
      sum.ct.copy(this.product);
      return sum;
    }
    const target = this.cipher(acc);
    if (!sameScale(target.scale, scale)) fail('E_SHAPE', `adding products at scales ${target.scale} and ${scale}`);
    ev.add(target.ct, this.product, target.ct);
    this.counts.adds++;
    return acc;
  }

  mul(a: BgvValue, b: BgvValue): BgvValue {
    const x = this.cipher(a);
    const y = this.cipher(b);
    const level = Math.min(this.c.levelOf(x.ct), this.c.levelOf(y.ct));
    const u = this.atLevel(x.ct, level);
    const v = this.atLevel(y.ct, level);
    const out = this.fresh(x.scale * y.scale);
    if (x === y) this.c.evaluator.square(u, out.ct);
    else this.c.evaluator.multiply(u, v, out.ct);
    this.release(u, x.ct);
    this.release(v, y.ct);
    this.counts.ctMults++;
    return out;
  }

  mulConstLike(x: BgvValue, c: number, like: BgvValue): BgvValue {
    const source = this.cipher(x);
    const target = this.cipher(like);
    const moved = this.atLevel(source.ct, this.c.levelOf(target.ct));
    const out = this.fresh(target.scale);
    this.c.evaluator.multiplyPlain(moved, this.constantPlain(constMultiplier(c, source.scale, target.scale)), out.ct);
    this.release(moved, source.ct);
    this.counts.plainMults++;
    return out;
  }

  scaleBy(x: BgvValue, c: number): void {
    const v = this.cipher(x);
    const { factor, scale } = scaleByMultiplier(c);
    this.c.evaluator.multiplyPlain(v.ct, this.constantPlain(factor), v.ct);
    v.scale *= scale;
    this.counts.plainMults++;
    this.rescale(v);
  }

  negate(x: BgvValue): void {
    const v = this.cipher(x);
    this.c.evaluator.negate(v.ct, v.ct);
  }

  addConst(x: BgvValue, c: number): void {
    const v = this.cipher(x);
    this.c.evaluator.addPlain(v.ct, this.constantPlain(constAddend(c, v.scale)), v.ct);
    this.counts.adds++;
  }

  add(acc: BgvValue, x: BgvValue): void {
    const target = this.cipher(acc);
    const source = this.cipher(x);
    if (!sameScale(target.scale, source.scale)) fail('E_SHAPE', `adding values at scales ${target.scale} and ${source.scale}`);
    const moved = this.atLevel(source.ct, this.c.levelOf(target.ct));
    this.c.evaluator.add(target.ct, moved, target.ct);
    this.release(moved, source.ct);
    this.counts.adds++;
  }

  addWeight(acc: BgvValue, w: BgvCipher): void {
    const target = this.cipher(acc);
    if (!sameScale(target.scale, w.scale)) fail('E_SHAPE', `adding a bias at scale ${w.scale} to a value at scale ${target.scale}`);
    this.c.evaluator.add(target.ct, w.ct, target.ct);
    this.counts.adds++;
  }

  relinearize(x: BgvValue): void {
    const v = this.cipher(x);
    if (v.ct.size <= 2) return;
    this.c.evaluator.relinearize(v.ct, this.keys.relin, v.ct);
    this.counts.relins++;
  }

  rescale(x: BgvValue): void {
    const v = this.cipher(x);
    const next = this.levels[this.levels.indexOf(this.c.levelOf(v.ct)) + 1];
    if (next === undefined) fail('E_PARAMS', `no modulus switch is planned below level ${this.c.levelOf(v.ct)}`);
    this.c.evaluator.cipherModSwitchTo(v.ct, this.c.parmsIdAt(next), v.ct);
    this.counts.rescales++;
  }

  constant(w: BgvCipher | null): BgvValue {
    if (w === null) fail('E_SHAPE', 'a layer without a bias vanished: nothing to return');
    const out = this.fresh(w.scale);
    out.ct.copy(w.ct);
    return out;
  }

  clone(x: BgvValue): BgvValue {
    if (isPlain(x)) return { plain: x.plain.slice(), scale: x.scale };
    const out = this.fresh(x.scale);
    out.ct.copy(x.ct);
    return out;
  }

  free(x: BgvValue): void {
    if (!isPlain(x)) this.scope.free(x.ct);
  }

  /**
   * Encodes each rotation of the plain input once per level, in NTT form at that level
   * (what a product with an NTT-form ciphertext needs); null for an all-zero vector, whose
   * product SEAL refuses as transparent.
   */
  private encodedInput(x: BgvPlainInput, level: number): PlainText | null {
    let byLevel = this.inputs.get(x.plain);
    if (byLevel === undefined) {
      byLevel = new Map();
      this.inputs.set(x.plain, byLevel);
    }
    const known = byLevel.get(level);
    if (known !== undefined) return known;
    let encoded: PlainText | null = null;
    if (!x.plain.every((v) => v === 0)) {
      encoded = this.scope.track(this.c.seal.PlainText());
      this.c.encode(x.plain, this.encoded);
      this.c.evaluator.plainTransformToNtt(this.encoded, this.c.parmsIdAt(level), encoded);
    }
    byLevel.set(level, encoded);
    return encoded;
  }
}
