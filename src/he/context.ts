import { fail, HeError } from './errors';
import type { HeParameters } from './params';
import type { CipherText, Context, ParmsIdType, PlainText, SealRuntime } from './seal';

/** SEAL's names of the security levels the project plans for. */
export const SECURITY = { 128: 'tc128', 192: 'tc192', 256: 'tc256' } as const;

/** A context's modulus chain: the parms id of every level (level ℓ holds q_0 … q_ℓ). */
export class ModulusChain {
  /** Chain index of the freshest ciphertexts. */
  readonly topLevel: number;
  private readonly ids: ParmsIdType[] = [];

  constructor(context: Context) {
    let data = context.firstContextData;
    this.topLevel = data.chainIndex;
    for (let level = this.topLevel; ; level--) {
      this.ids[level] = data.parmsId;
      if (level === 0) break;
      const next = data.nextContextData;
      data.delete();
      data = next;
    }
    data.delete();
  }

  parmsIdAt(level: number): ParmsIdType {
    const id = this.ids[level];
    if (id === undefined) fail('E_PARAMS', `level ${level} is outside the modulus chain 0…${this.topLevel}`);
    return id;
  }

  /** The level of a ciphertext: one below the number of primes it still holds. */
  levelOf(ct: CipherText): number {
    return ct.coeffModulusSize - 1;
  }

  delete(): void {
    for (const id of this.ids) id?.delete();
  }
}

/**
 * A SEAL context for one parameter set, with its encoder and evaluator. Creating one
 * costs 0.25 s at N=8192 and 1.5 s at 16384: make one per worker and keep it.
 */
export class HeContext {
  readonly slots: number;
  /** The data primes q_0 … q_L as numbers (level ℓ holds q_0 … q_ℓ). */
  readonly primes: readonly number[];
  readonly encoder;
  readonly evaluator;
  private readonly chain: ModulusChain;
  private disposed = false;

  private constructor(
    readonly runtime: SealRuntime,
    readonly params: HeParameters,
    readonly context: Context,
  ) {
    const { seal } = runtime;
    this.slots = params.polyModulusDegree / 2;
    this.encoder = seal.CKKSEncoder(context);
    this.evaluator = seal.Evaluator(context);
    const first = context.firstContextData;
    this.primes = Array.from(first.parms.coeffModulus, Number);
    first.delete();
    this.chain = new ModulusChain(context);
  }

  static create(runtime: SealRuntime, params: HeParameters): HeContext {
    const { seal } = runtime;
    const parms = seal.EncryptionParameters(seal.SchemeType.ckks);
    const bits = seal.CoeffModulus.Create(params.polyModulusDegree, Int32Array.from(params.coeffModulusBits));
    let context: Context;
    try {
      parms.setPolyModulusDegree(params.polyModulusDegree);
      parms.setCoeffModulus(bits);
      context = seal.Context(parms, true, seal.SecurityLevel[SECURITY[params.security]]);
    } catch (error) {
      throw new HeError('E_PARAMS', `SEAL rejected the parameters: ${sealMessage(error)}`);
    } finally {
      bits.delete();
      parms.delete();
    }
    if (!context.parametersSet()) {
      context.delete();
      fail('E_PARAMS', 'SEAL rejected the parameters');
    }
    return new HeContext(runtime, params, context);
  }

  get seal() {
    return this.runtime.seal;
  }

  /** Chain index of the freshest ciphertexts (one per rescaling the parameters allow). */
  get topLevel(): number {
    return this.primes.length - 1;
  }

  parmsIdAt(level: number): ParmsIdType {
    this.check();
    return this.chain.parmsIdAt(level);
  }

  /** The level of a ciphertext: one below the number of primes it still holds. */
  levelOf(ct: CipherText): number {
    return this.chain.levelOf(ct);
  }

  /** Encodes `values` (at most `slots` of them) at `scale` and level `level`. */
  encode(values: Float64Array, scale: number, level: number, into?: PlainText): PlainText {
    this.check();
    const plain = into ?? this.seal.PlainText();
    this.encoder.encode(values, scale, plain);
    if (level !== this.topLevel) this.evaluator.plainModSwitchTo(plain, this.parmsIdAt(level), plain);
    return plain;
  }

  private check(): void {
    if (this.disposed) fail('E_DISPOSED', 'the HE context has been disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.chain.delete();
    this.encoder.delete();
    this.evaluator.delete();
    this.context.delete();
  }
}

/** node-seal throws plain strings, numbers (exception pointers) or Errors. */
export function sealMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
