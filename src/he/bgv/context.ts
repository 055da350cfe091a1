import { ModulusChain, SECURITY, sealMessage } from '../context';
import { fail, HeError } from '../errors';
import type { CipherText, Context, ParmsIdType, PlainText, SealRuntime } from '../seal';
import { type BgvParameters, checkBgvParameters } from './params';
import { realizeBgvPrimes } from './primes';

/**
 * One CRT component: a SEAL BGV context whose plaintext modulus is the component's
 * batching prime, with its batch encoder and evaluator. Values use the first N/2 slots of
 * both rows of SEAL's 2 × N/2 batching matrix (the same vector in each row), so rotating
 * the rows is the cyclic rotation of N/2 slots the packing expects.
 */
export class BgvComponent {
  readonly slots: number;
  readonly encoder;
  readonly evaluator;
  /** Level ℓ holds primes q_0 … q_ℓ. */
  readonly topLevel: number;
  private readonly chain: ModulusChain;
  /** t as a number when it fits 32 bits (encoding then avoids BigInt), else 0. */
  private readonly small: number;

  constructor(
    readonly runtime: SealRuntime,
    readonly index: number,
    readonly context: Context,
    readonly plainModulus: bigint,
  ) {
    const { seal } = runtime;
    this.encoder = seal.BatchEncoder(context);
    this.evaluator = seal.Evaluator(context);
    this.slots = this.encoder.slotCount / 2;
    this.small = plainModulus < 2n ** 32n ? Number(plainModulus) : 0;
    this.chain = new ModulusChain(context);
    this.topLevel = this.chain.topLevel;
  }

  get seal() {
    return this.runtime.seal;
  }

  parmsIdAt(level: number): ParmsIdType {
    return this.chain.parmsIdAt(level);
  }

  levelOf(ct: CipherText): number {
    return this.chain.levelOf(ct);
  }

  /** Batch-encodes integers (held exactly in doubles), reduced mod t, into both rows. */
  encode(values: ArrayLike<number>, into?: PlainText): PlainText {
    if (values.length > this.slots) fail('E_SHAPE', `${values.length} values do not fit ${this.slots} slots`);
    const t = this.plainModulus;
    const plain = into ?? this.seal.PlainText();
    // The values are exact integers in doubles; % of doubles is exact (IEEE fmod).
    if (this.small > 0) {
      const matrix = new Uint32Array(2 * this.slots);
      for (let i = 0; i < values.length; i++) {
        const r = values[i]! % this.small;
        matrix[i] = matrix[this.slots + i] = r < 0 ? r + this.small : r;
      }
      this.encoder.encode(matrix, plain);
    } else {
      const matrix = new BigUint64Array(2 * this.slots);
      for (let i = 0; i < values.length; i++) {
        const r = BigInt(values[i]!) % t;
        matrix[i] = matrix[this.slots + i] = r < 0n ? r + t : r;
      }
      this.encoder.encode(matrix, plain);
    }
    return plain;
  }

  /** Both rows of a decrypted plaintext, as residues in [0, t). */
  decode(plain: PlainText): { first: BigUint64Array; second: BigUint64Array } {
    const all = this.encoder.decodeBigInt(plain, false) as BigUint64Array;
    return { first: all.subarray(0, this.slots), second: all.subarray(this.slots) };
  }

  dispose(): void {
    this.chain.delete();
    this.encoder.delete();
    this.evaluator.delete();
    this.context.delete();
  }
}

/**
 * The SEAL contexts of a BGV parameter set: one per CRT component. A device may open only
 * some components (`only`), e.g. one per worker; the owner opens all of them. Creating a
 * context costs about 0.25 s at N=8192 and 1.5 s at 16384 each: keep them.
 */
export class BgvContext {
  readonly slots: number;
  /** Every component's plaintext prime t_i, in order. */
  readonly plainModuli: readonly bigint[];
  private readonly opened = new Map<number, BgvComponent>();
  private disposed = false;

  private constructor(
    readonly runtime: SealRuntime,
    readonly params: BgvParameters,
    plainModuli: readonly bigint[],
  ) {
    this.slots = params.polyModulusDegree / 2;
    this.plainModuli = Object.freeze([...plainModuli]);
  }

  static create(runtime: SealRuntime, params: BgvParameters, only?: readonly number[]): BgvContext {
    const checked = checkBgvParameters(params);
    const k = checked.plainModulusBits.length;
    const wanted = only === undefined ? Array.from({ length: k }, (_, i) => i) : [...new Set(only)].sort((a, b) => a - b);
    if (wanted.length === 0 || !wanted.every((i) => Number.isInteger(i) && i >= 0 && i < k)) {
      fail('E_PARAMS', `components [${wanted.join(', ')}] are not among the ${k} of these parameters`);
    }
    const primes = realizeBgvPrimes(checked);
    const ctx = new BgvContext(runtime, checked, primes.map((p) => p.plain));
    try {
      for (const i of wanted) ctx.opened.set(i, ctx.createComponent(i, primes[i]!.coeff));
    } catch (error) {
      ctx.dispose();
      throw error;
    }
    return ctx;
  }

  private createComponent(index: number, chain: readonly bigint[]): BgvComponent {
    const { seal } = this.runtime;
    const moduli = chain.map((q) => seal.Modulus(q));
    const vector = seal.Vector();
    const plain = seal.Modulus(this.plainModuli[index]!);
    const parms = seal.EncryptionParameters(seal.SchemeType.bgv);
    let context: Context;
    try {
      vector.from(moduli.map((m) => m.instance) as unknown as BigUint64Array, 'Modulus');
      parms.setPolyModulusDegree(this.params.polyModulusDegree);
      parms.setCoeffModulus(vector);
      parms.setPlainModulus(plain);
      context = seal.Context(parms, true, seal.SecurityLevel[SECURITY[this.params.security]]);
    } catch (error) {
      throw new HeError('E_PARAMS', `SEAL rejected the BGV parameters: ${sealMessage(error)}`);
    } finally {
      parms.delete();
      plain.delete();
      vector.delete();
      moduli.forEach((m) => m.delete());
    }
    if (!context.parametersSet()) {
      context.delete();
      fail('E_PARAMS', 'SEAL rejected the BGV parameters');
    }
    return new BgvComponent(this.runtime, index, context, this.plainModuli[index]!);
  }

  /** The components this context opened, in order. */
  get components(): BgvComponent[] {
    this.check();
    return [...this.opened.values()];
  }

  component(index: number): BgvComponent {
    this.check();
    const c = this.opened.get(index);
    if (c === undefined) fail('E_PARAMS', `CRT component ${index} is not open in this context`);
    return c;
  }

  /** Whether every component is open (the owner's side needs them all). */
  get complete(): boolean {
    return this.opened.size === this.params.plainModulusBits.length;
  }

  private check(): void {
    if (this.disposed) fail('E_DISPOSED', 'the BGV context has been disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const c of this.opened.values()) c.dispose();
    this.opened.clear();
  }
}
