import { evaluateLayers, firstPlan, type Layer, type LayerShape, type LayerWeights, packInputs } from '../circuit';
import { type Evaluation, type Mode, type Progress, SECTIONS_PER_YIELD, yieldToEventLoop } from '../classifier';
import { readContainer, writeContainer } from '../container';
import { fail, HeError } from '../errors';
import { loadSeal } from '../keys';
import { Scope } from '../scope';
import type { CipherText } from '../seal';
import { type OpCounts, zeroCounts } from '../trace';
import { type BgvCipher, BgvSealBackend, type BgvValue } from './backend';
import type { BgvContext } from './context';
import { checkFixedPoint, type FixedPoint, linearCount, quantizeInput } from './fixed-point';
import { BgvDeviceKeys, type BgvOwnerKeys } from './keys';
import { type BgvParameters, checkBgvParameters, describeBgvParameters, sameBgvParameters, switchLevels } from './params';
import { type BgvClassifierPlan, planBgvClassifier } from './plan';
import { bgvReferenceModel, packBgvModel } from './reference';

interface ClassifierHeader {
  params: BgvParameters;
  keyId: string;
  mode: Mode;
  layers: LayerShape[];
  fixedPoint: FixedPoint;
}

interface ResultHeader {
  params: BgvParameters;
  keyId: string;
  outputs: number;
  /** The CRT components whose ciphertexts the result holds, in section order. */
  moduli: number[];
}

function checkPlanFor(ctx: BgvContext, plan: BgvClassifierPlan): void {
  if (!sameBgvParameters(plan.params, ctx.params)) {
    fail('E_PARAMS', `the plan is for ${describeBgvParameters(plan.params)}, the context for ${describeBgvParameters(ctx.params)}`);
  }
}

/**
 * The owner's side: quantizes and packs the folded model for the plan and encrypts every
 * weight diagonal and bias under each CRT component's secret key (seeded ciphertexts at
 * the top of the chain; the device switches each one down to its level when it loads it).
 * Sections are component-major: all of component 0's weights, then component 1's, …
 */
export async function encryptBgvClassifier(
  ctx: BgvContext,
  owner: BgvOwnerKeys,
  layers: readonly Layer[],
  plan: BgvClassifierPlan,
  onProgress?: Progress,
): Promise<Uint8Array> {
  checkPlanFor(ctx, plan);
  if (!ctx.complete) fail('E_PARAMS', 'the owner needs a context with every CRT component open');
  const missing = plan.rotationSteps.filter((s) => !owner.steps.includes(s));
  if (missing.length > 0) fail('E_KEYS', `the key set has no Galois keys for rotation steps ${missing.join(', ')}`);
  const parts = packBgvModel(plan, layers).flatMap((w) => (w === null ? [] : [...w.diagonals.filter((d) => d !== null), ...w.biases.filter((b) => b !== null)]));
  const total = parts.length * ctx.components.length;
  const sections: Uint8Array[] = [];
  for (const c of ctx.components) {
    const scope = new Scope();
    try {
      const encryptor = scope.track(c.seal.Encryptor(c.context, owner.publicKey(c.index), owner.secretKey(c.index)));
      const plain = scope.track(c.seal.PlainText());
      for (const part of parts) {
        const serializable = encryptor.encryptSymmetricSerializable(c.encode(part.values, plain));
        try {
          sections.push(serializable.saveArray(c.seal.ComprModeType.zstd));
        } finally {
          serializable.delete();
        }
        onProgress?.(sections.length, total);
        if (sections.length % SECTIONS_PER_YIELD === 0) await yieldToEventLoop();
      }
    } finally {
      scope.dispose();
    }
  }
  const header: ClassifierHeader = { params: ctx.params, keyId: owner.keyId, mode: plan.mode, layers: [...plan.layers], fixedPoint: plan.fixedPoint };
  return writeContainer('classifier', header, sections);
}

function planOf(header: ClassifierHeader): { params: BgvParameters; keyId: string; plan: BgvClassifierPlan } {
  const params = checkBgvParameters(header.params);
  if (!Array.isArray(header.layers)) fail('E_CORRUPT', 'the classifier header has no layer list');
  if (typeof header.keyId !== 'string') fail('E_CORRUPT', 'the classifier header has no key id');
  const plan = planBgvClassifier(params, header.layers, header.mode, checkFixedPoint(header.fixedPoint, linearCount(header.layers)));
  return { params, keyId: header.keyId, plan };
}

/** The public part of a BGV classifier container (parameters, key id, plan), read from its checked header. */
export function bgvClassifierInfo(bytes: Uint8Array): { params: BgvParameters; keyId: string; plan: BgvClassifierPlan } {
  return planOf(readContainer<ClassifierHeader>(bytes, 'classifier').header);
}

/**
 * The device's side: a BGV classifier loaded once for the CRT components its context
 * opened (weights and keys stay in WASM memory), evaluated per input. A device that opened
 * every component produces a complete result; devices (or workers) that opened some each
 * produce a partial one, which mergeBgvResults joins.
 */
export class EncryptedBgvClassifier {
  private disposed = false;

  private constructor(
    private readonly ctx: BgvContext,
    private readonly keys: BgvDeviceKeys,
    readonly plan: BgvClassifierPlan,
    private readonly weights: Map<number, (LayerWeights<BgvCipher> | null)[]>,
    private readonly owned: Scope,
    readonly byteLength: number,
  ) {}

  static load(ctx: BgvContext, keys: BgvDeviceKeys, bytes: Uint8Array): EncryptedBgvClassifier {
    const { header, sections } = readContainer<ClassifierHeader>(bytes, 'classifier');
    const { params, keyId, plan } = planOf(header);
    if (!sameBgvParameters(params, ctx.params)) {
      fail('E_PARAMS', `the classifier was encrypted for ${describeBgvParameters(params)}, not ${describeBgvParameters(ctx.params)}`);
    }
    if (keyId !== keys.keyId) fail('E_KEYS', `the classifier was encrypted under key ${keyId}, the device holds key ${keys.keyId}`);
    const missing = plan.rotationSteps.filter((s) => !keys.steps.includes(s));
    if (missing.length > 0) fail('E_KEYS', `the device key set has no Galois keys for rotation steps ${missing.join(', ')}`);
    const perComponent = plan.weightSlots.size;
    const expected = perComponent * params.plainModulusBits.length;
    if (sections.length !== expected) fail('E_CORRUPT', `the classifier has ${sections.length} weight sections, its plan needs ${expected}`);
    const owned = new Scope();
    const weights = new Map<number, (LayerWeights<BgvCipher> | null)[]>();
    try {
      for (const c of ctx.components) {
        let next = c.index * perComponent;
        const load = (key: string): BgvCipher => {
          const slot = plan.weightSlots.get(key)!;
          const what = `weight section ${next} (component ${c.index}, ${key})`;
          const ct: CipherText = owned.track(loadSeal(c, c.seal.CipherText(), sections[next++]!, what));
          if (c.levelOf(ct) !== c.topLevel || ct.size !== 2) {
            fail('E_CORRUPT', `${what} is at level ${c.levelOf(ct)} with size ${ct.size}; weights are fresh ciphertexts at level ${c.topLevel}`);
          }
          if (slot.level !== c.topLevel) c.evaluator.cipherModSwitchTo(ct, c.parmsIdAt(slot.level), ct);
          return { ct, scale: slot.scale };
        };
        weights.set(
          c.index,
          plan.structure.map((structure, i): LayerWeights<BgvCipher> | null =>
            structure === null ? null : { diagonals: structure.map((used, k) => (used ? load(`${i}:${k}`) : null)), biases: [load(`${i}:-1`)] },
          ),
        );
      }
    } catch (error) {
      owned.dispose();
      throw error;
    }
    return new EncryptedBgvClassifier(ctx, keys, plan, weights, owned, bytes.length);
  }

  /**
   * Clamps the features (or a convolution's image) to the calibrated range and quantizes
   * them, packs them for the first layer (one vector, or one im2col plane per kernel
   * offset), evaluates every open component, or only those listed in `components`
   * (encrypting the packed input under each one's public key, or using it in the clear in
   * the plaintext-input mode) and serializes the still-encrypted scores. Timings and
   * counts are summed over the components.
   */
  evaluate(features: ArrayLike<number>, components?: readonly number[]): Evaluation {
    if (this.disposed) fail('E_DISPOSED', 'the classifier has been disposed');
    const open = this.ctx.components.map((c) => c.index);
    if (components !== undefined && (!Array.isArray(components) || components.some((i) => !open.includes(i)))) {
      fail('E_SHAPE', `components ${JSON.stringify(components)} are not among the open ones [${open.join(', ')}]`);
    }
    if (features?.length !== this.plan.inputs) fail('E_SHAPE', `input has ${features?.length} values, the classifier expects ${this.plan.inputs}`);
    const packed = packInputs(firstPlan(this.plan.plans), quantizeInput(this.plan.fixedPoint, features));
    const scale = this.plan.fixedPoint.inputScale;
    const timings = { encryptMs: 0, evaluateMs: 0, serializeMs: 0 };
    const counts: OpCounts = zeroCounts();
    const sections: Uint8Array[] = [];
    const moduli: number[] = [];
    for (const c of this.ctx.components) {
      if (components !== undefined && !components.includes(c.index)) continue;
      const keys = this.keys.component(c.index);
      const scope = new Scope();
      try {
        const t0 = performance.now();
        let inputs: BgvValue[];
        if (this.plan.mode.input === 'encrypted') {
          const encryptor = scope.track(c.seal.Encryptor(c.context, keys.publicKey));
          const plain = scope.track(c.seal.PlainText());
          inputs = packed.map((values) => {
            const ct = scope.track(c.seal.CipherText());
            encryptor.encrypt(c.encode(values, plain), ct);
            return { ct, scale };
          });
        } else {
          inputs = packed.map((plain) => ({ plain, scale }));
        }
        const t1 = performance.now();
        const backend = new BgvSealBackend(c, keys, scope, switchLevels(this.plan.params));
        const out = evaluateLayers<BgvValue, BgvCipher>(backend, this.plan.plans, this.weights.get(c.index)!, inputs);
        const t2 = performance.now();
        if ('plain' in out) fail('E_SHAPE', 'the classifier produced no ciphertext');
        sections.push(out.ct.saveArray(c.seal.ComprModeType.zstd));
        moduli.push(c.index);
        const t3 = performance.now();
        timings.encryptMs += t1 - t0;
        timings.evaluateMs += t2 - t1;
        timings.serializeMs += t3 - t2;
        for (const key of Object.keys(counts) as (keyof OpCounts)[]) counts[key] += backend.counts[key];
      } finally {
        scope.dispose();
      }
    }
    const header: ResultHeader = { params: this.ctx.params, keyId: this.keys.keyId, outputs: this.plan.outputs, moduli };
    return { result: writeContainer('result', header, sections), timings, counts };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.owned.dispose();
  }
}

function readResult(bytes: Uint8Array): { header: ResultHeader; sections: Uint8Array[] } {
  const { header, sections } = readContainer<ResultHeader>(bytes, 'result');
  const params = checkBgvParameters(header.params);
  const k = params.plainModulusBits.length;
  const { moduli } = header;
  if (
    !Array.isArray(moduli) ||
    moduli.length !== sections.length ||
    !moduli.every((m, i) => Number.isInteger(m) && m >= 0 && m < k && (i === 0 || m > moduli[i - 1]!))
  ) {
    fail('E_CORRUPT', `the result's component list ${JSON.stringify(moduli)} does not match its ${sections.length} sections`);
  }
  if (typeof header.keyId !== 'string') fail('E_CORRUPT', 'the result has no key id');
  return { header: { ...header, params }, sections };
}

/**
 * Joins partial results (each from a device or worker that opened some CRT components)
 * into one result holding every component once (all of them when `complete`). Pure
 * container work: no SEAL.
 */
export function mergeBgvResults(parts: readonly Uint8Array[], complete = false): Uint8Array {
  if (!Array.isArray(parts) || parts.length === 0) fail('E_SHAPE', 'no results to merge');
  const read = parts.map(readResult);
  const { params, keyId, outputs } = read[0]!.header;
  const byModulus = new Map<number, Uint8Array>();
  for (const { header, sections } of read) {
    if (!sameBgvParameters(header.params, params) || header.keyId !== keyId || header.outputs !== outputs) {
      fail('E_KEYS', 'the partial results were not computed by one classifier under one key');
    }
    header.moduli.forEach((m, i) => {
      if (byModulus.has(m)) fail('E_CORRUPT', `component ${m} appears in two partial results`);
      byModulus.set(m, sections[i]!);
    });
  }
  const moduli = [...byModulus.keys()].sort((a, b) => a - b);
  if (complete && moduli.length !== params.plainModulusBits.length) {
    fail('E_SHAPE', `the partial results hold components [${moduli.join(', ')}] of ${params.plainModulusBits.length}`);
  }
  const header: ResultHeader = { params, keyId, outputs, moduli };
  return writeContainer('result', header, moduli.map((m) => byModulus.get(m)!));
}

/** A decrypted BGV result. */
export interface BgvScores {
  /** The scores: integers / output scale. */
  readonly scores: Float64Array;
  /** The exact integers, recombined by CRT and centered in (−Π t_i / 2, Π t_i / 2]. */
  readonly integers: readonly bigint[];
  /** The smallest remaining noise budget over the components, in bits (SEAL's invariant noise budget). */
  readonly noiseBudgetBits: number;
}

/** x ≡ r_i (mod t_i) for all i, centered. */
function crt(residues: readonly bigint[], moduli: readonly bigint[]): bigint {
  const product = moduli.reduce((a, b) => a * b, 1n);
  let x = 0n;
  moduli.forEach((t, i) => {
    const rest = product / t;
    x += residues[i]! * rest * modInverse(rest % t, t);
  });
  x %= product;
  return x > product / 2n ? x - product : x;
}

function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1] = [a, m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return ((s0 % m) + m) % m;
}

/**
 * The owner's side: decrypts every component of a result, checks that each has noise
 * budget left and that both batching rows agree (they hold the same vector: a mismatch
 * means the noise overflowed or the ciphertext was altered), recombines the integers by
 * CRT and dequantizes them with the output scale the owner recorded.
 */
export function decryptBgvResult(ctx: BgvContext, owner: BgvOwnerKeys, bytes: Uint8Array): BgvScores {
  if (!ctx.complete) fail('E_PARAMS', 'decryption needs a context with every CRT component open');
  const { header, sections } = readResult(bytes);
  if (!sameBgvParameters(header.params, ctx.params)) fail('E_PARAMS', `the result was computed under ${describeBgvParameters(header.params)}`);
  if (header.keyId !== owner.keyId) fail('E_KEYS', `the result is encrypted under key ${header.keyId}, not ${owner.keyId}`);
  const { outputs, outputScale } = owner.decoding;
  if (header.outputs !== outputs) fail('E_CORRUPT', `the result declares ${String(header.outputs)} outputs, the model has ${outputs}`);
  const k = ctx.params.plainModulusBits.length;
  if (header.moduli.length !== k) fail('E_CORRUPT', `the result holds components [${header.moduli.join(', ')}] of ${k}: merge the partial results first`);
  const finalLevel = switchLevels(ctx.params).pop()!;
  const residues: bigint[][] = [];
  let budget = Infinity;
  const scope = new Scope();
  try {
    for (const c of ctx.components) {
      const ct = scope.track(loadSeal(c, c.seal.CipherText(), sections[c.index]!, `result ciphertext ${c.index}`));
      if (ct.size !== 2 || c.levelOf(ct) !== finalLevel) {
        fail('E_CORRUPT', `result ciphertext ${c.index} has size ${ct.size} at level ${c.levelOf(ct)}, expected size 2 at level ${finalLevel}`);
      }
      const decryptor = scope.track(c.seal.Decryptor(c.context, owner.secretKey(c.index)));
      const component = decryptor.invariantNoiseBudget(ct);
      if (component <= 0) fail('E_CORRUPT', `result component ${c.index} has no noise budget left: it cannot be decrypted correctly`);
      budget = Math.min(budget, component);
      const plain = scope.track(c.seal.PlainText());
      decryptor.decrypt(ct, plain);
      const { first, second } = c.decode(plain);
      if (first.some((v, i) => v !== second[i])) fail('E_CORRUPT', `result component ${c.index} decrypts to two different rows: its noise overflowed or it was altered`);
      residues.push(Array.from(first.subarray(0, outputs)));
    }
  } catch (error) {
    if (error instanceof HeError) throw error;
    throw new HeError('E_CORRUPT', `the result could not be decrypted: ${String(error)}`);
  } finally {
    scope.dispose();
  }
  const integers = Array.from({ length: outputs }, (_, j) =>
    crt(
      residues.map((r) => r[j]!),
      ctx.plainModuli,
    ),
  );
  return { scores: Float64Array.from(integers, (v) => Number(v) / outputScale), integers, noiseBudgetBits: budget };
}

/**
 * The owner's check at protect time: loads the encrypted classifier as a device would,
 * evaluates it on real feature vectors, decrypts under the secret key and requires every
 * result to equal the integer reference exactly with noise budget left. Returns the
 * smallest budget seen. Holds a second copy of the weights while it runs.
 */
export function verifyBgvClassifier(
  ctx: BgvContext,
  owner: BgvOwnerKeys,
  classifierBytes: Uint8Array,
  layers: readonly Layer[],
  samples: readonly ArrayLike<number>[],
): { noiseBudgetBits: number } {
  const keys = BgvDeviceKeys.load(ctx, owner.deviceKeyBytes());
  try {
    const classifier = EncryptedBgvClassifier.load(ctx, keys, classifierBytes);
    try {
      const reference = bgvReferenceModel(classifier.plan, layers);
      let budget = Infinity;
      for (const [i, x] of samples.entries()) {
        let got: BgvScores;
        try {
          got = decryptBgvResult(ctx, owner, classifier.evaluate(x).result);
        } catch (error) {
          if (error instanceof HeError && error.code === 'E_CORRUPT') fail('E_PARAMS', `sample ${i}: ${error.message}: the parameters do not hold this model`);
          throw error;
        }
        const want = reference(x);
        if (got.integers.some((v, j) => v !== want[j])) {
          fail('E_PARAMS', `sample ${i}: the decrypted integers differ from the integer reference: the parameters do not hold this model`);
        }
        budget = Math.min(budget, got.noiseBudgetBits);
      }
      return { noiseBudgetBits: budget };
    } finally {
      classifier.dispose();
    }
  } finally {
    keys.dispose();
  }
}
