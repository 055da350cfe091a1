import type { Backend } from './circuit';
import type { HeContext } from './context';
import { fail } from './errors';
import { rotateLeft } from './packing';
import type { Scope } from './scope';
import type { CipherText, GaloisKeys, PlainText, PublicKey, RelinKeys } from './seal';
import { zeroCounts } from './trace';

/** A value during encrypted evaluation: a ciphertext, or the device's plain input vector. */
export type SealValue = CipherText | PlainVector;
/**
 * A weight: encrypted (the default), plain (the TenSEAL/LoLa comparison mode), or
 * encrypted and kept serialized until its product (see StoredWeight).
 */
export type SealWeight = CipherText | PlainText | StoredWeight;

/**
 * An encrypted weight kept outside WASM memory and read into it for each product that
 * uses it: a classifier whose weights would not fit SEAL's heap (WASM memory ends at
 * 4 GiB) trades a load per product for memory.
 */
export interface StoredWeight {
  /** Reads the ciphertext into `into` (its previous content is overwritten). */
  readonly readInto: (into: CipherText) => void;
}

export interface PlainVector {
  readonly plain: Float64Array;
  readonly scale: number;
}

function isPlain(v: SealValue): v is PlainVector {
  return (v as PlainVector).plain !== undefined;
}

function isCipher(w: CipherText | PlainText): w is CipherText {
  return (w as CipherText).size !== undefined;
}

function isStored(w: SealWeight): w is StoredWeight {
  return (w as StoredWeight).readInto !== undefined;
}

export interface EvaluationKeys {
  readonly relin: RelinKeys;
  readonly galois: GaloisKeys;
  /** Needed only to make an encryption of zero when a layer's products all vanish. */
  readonly publicKey: PublicKey;
}

/**
 * Runs the packed plan on SEAL ciphertexts. Every object it creates is tracked by
 * `scope`; the plan's executor frees intermediates as soon as they are dead, so the
 * peak is a handful of ciphertexts plus the baby-step rotations.
 */
export class SealBackend implements Backend<SealValue, SealWeight> {
  readonly counts = zeroCounts();
  private readonly product: CipherText;
  private readonly encoded: PlainText;
  /** Where a stored weight is read for its product. */
  private readonly fetched: CipherText;
  private readonly inputs = new Map<Float64Array, Map<number, PlainText | null>>();

  constructor(
    private readonly he: HeContext,
    private readonly keys: EvaluationKeys,
    private readonly scope: Scope,
  ) {
    this.product = scope.track(he.seal.CipherText());
    this.encoded = scope.track(he.seal.PlainText());
    this.fetched = scope.track(he.seal.CipherText());
  }

  /** The weight in WASM memory: a stored one is read into the backend's one scratch ciphertext. */
  private weight(w: SealWeight): CipherText | PlainText {
    if (!isStored(w)) return w;
    w.readInto(this.fetched);
    return this.fetched;
  }

  private cipher(v: SealValue): CipherText {
    if (isPlain(v)) fail('E_SHAPE', 'a plain input vector cannot be used where a ciphertext is needed');
    return v;
  }

  private fresh(): CipherText {
    return this.scope.track(this.he.seal.CipherText());
  }

  private atLevel(ct: CipherText, level: number): CipherText {
    const copy = this.fresh();
    this.he.evaluator.cipherModSwitchTo(ct, this.he.parmsIdAt(level), copy);
    return copy;
  }

  rotate(x: SealValue, step: number): SealValue {
    if (isPlain(x)) return { plain: rotateLeft(x.plain, step), scale: x.scale };
    const out = this.fresh();
    this.he.evaluator.rotateVector(x, step, this.keys.galois, out);
    this.counts.rotations++;
    return out;
  }

  mulAdd(acc: SealValue | null, weight: SealWeight, x: SealValue): SealValue | null {
    const ev = this.he.evaluator;
    const w = this.weight(weight);
    if (isPlain(x)) {
      if (!isCipher(w)) fail('E_SHAPE', 'plain weights need an encrypted input');
      const encoded = this.encodedInput(x, this.he.levelOf(w));
      if (encoded === null) return acc;
      ev.multiplyPlain(w, encoded, this.product);
      this.counts.plainMults++;
    } else if (isCipher(w)) {
      ev.multiply(w, x, this.product);
      this.counts.ctMults++;
    } else {
      ev.multiplyPlain(x, w, this.product);
      this.counts.plainMults++;
    }
    if (acc === null) {
      const sum = this.fresh();
      sum.copy(this.product);
      return sum;
    }
    ev.add(this.cipher(acc), this.product, this.cipher(acc));
    this.counts.adds++;
    return acc;
  }

  mul(a: SealValue, b: SealValue): SealValue {
    let x = this.cipher(a);
    let y = this.cipher(b);
    const la = this.he.levelOf(x);
    const lb = this.he.levelOf(y);
    const out = this.fresh();
    if (la > lb) x = this.atLevel(x, lb);
    if (lb > la) y = this.atLevel(y, la);
    if (x === y) this.he.evaluator.square(x, out);
    else this.he.evaluator.multiply(x, y, out);
    if (x !== a) this.scope.free(x);
    if (y !== b) this.scope.free(y);
    this.counts.ctMults++;
    return out;
  }

  mulConstLike(x: SealValue, c: number, like: SealValue): SealValue {
    const target = this.cipher(like);
    const level = this.he.levelOf(target);
    const source = this.cipher(x);
    const moved = this.he.levelOf(source) > level ? this.atLevel(source, level) : source;
    const out = this.fresh();
    this.he.encode(this.filled(c), target.scale / moved.scale, level, this.encoded);
    this.he.evaluator.multiplyPlain(moved, this.encoded, out);
    if (moved !== source) this.scope.free(moved);
    this.counts.plainMults++;
    return out;
  }

  scaleBy(x: SealValue, c: number): void {
    const ct = this.cipher(x);
    const level = this.he.levelOf(ct);
    this.he.encode(this.filled(c), this.he.primes[level]!, level, this.encoded);
    this.he.evaluator.multiplyPlain(ct, this.encoded, ct);
    this.counts.plainMults++;
    this.rescale(ct);
  }

  negate(x: SealValue): void {
    this.he.evaluator.negate(this.cipher(x), this.cipher(x));
  }

  addConst(x: SealValue, c: number): void {
    const ct = this.cipher(x);
    this.he.encode(this.filled(c), ct.scale, this.he.levelOf(ct), this.encoded);
    this.he.evaluator.addPlain(ct, this.encoded, ct);
    this.counts.adds++;
  }

  add(acc: SealValue, x: SealValue): void {
    const target = this.cipher(acc);
    const source = this.cipher(x);
    const level = this.he.levelOf(target);
    const moved = this.he.levelOf(source) > level ? this.atLevel(source, level) : source;
    this.he.evaluator.add(target, moved, target);
    if (moved !== source) this.scope.free(moved);
    this.counts.adds++;
  }

  addWeight(acc: SealValue, weight: SealWeight): void {
    const target = this.cipher(acc);
    const w = this.weight(weight);
    if (isCipher(w)) this.he.evaluator.add(target, w, target);
    else this.he.evaluator.addPlain(target, w, target);
    this.counts.adds++;
  }

  relinearize(x: SealValue): void {
    const ct = this.cipher(x);
    if (ct.size <= 2) return;
    this.he.evaluator.relinearize(ct, this.keys.relin, ct);
    this.counts.relins++;
  }

  rescale(x: SealValue): void {
    this.he.evaluator.rescaleToNext(this.cipher(x), this.cipher(x));
    this.counts.rescales++;
  }

  realPart(x: SealValue): SealValue {
    const ct = this.cipher(x);
    const out = this.fresh();
    this.he.evaluator.complexConjugate(ct, this.keys.galois, out);
    this.he.evaluator.add(out, ct, out);
    this.counts.rotations++;
    this.counts.adds++;
    return out;
  }

  constant(weight: SealWeight | null): SealValue {
    if (weight === null) fail('E_SHAPE', 'a layer without a bias vanished: nothing to return');
    const w = this.weight(weight);
    const out = this.fresh();
    if (isCipher(w)) {
      out.copy(w);
      return out;
    }
    // An encryption of zero at the bias's level and scale, plus the bias.
    const encryptor = this.scope.track(this.he.seal.Encryptor(this.he.context, this.keys.publicKey));
    const level = w.coeffCount / this.he.params.polyModulusDegree - 1;
    this.he.encode(new Float64Array(this.he.slots), w.scale, level, this.encoded);
    encryptor.encrypt(this.encoded, out);
    this.he.evaluator.addPlain(out, w, out);
    return out;
  }

  clone(x: SealValue): SealValue {
    if (isPlain(x)) return { plain: x.plain.slice(), scale: x.scale };
    const out = this.fresh();
    out.copy(x);
    return out;
  }

  free(x: SealValue): void {
    if (!isPlain(x)) this.scope.free(x);
  }

  /** Encodes each rotation of the plain input once per level, not once per diagonal. */
  private encodedInput(x: PlainVector, level: number): PlainText | null {
    let byLevel = this.inputs.get(x.plain);
    if (byLevel === undefined) {
      byLevel = new Map();
      this.inputs.set(x.plain, byLevel);
    }
    const known = byLevel.get(level);
    if (known !== undefined) return known;
    const encoded = x.plain.every((v) => v === 0) ? null : this.scope.track(this.he.encode(x.plain, x.scale, level));
    byLevel.set(level, encoded);
    return encoded;
  }

  private filled(c: number): Float64Array {
    return new Float64Array(this.he.slots).fill(c);
  }
}
