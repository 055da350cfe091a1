import {
  CKKS_PLANNING,
  evaluateLayers,
  outputSlots,
  readOutputs,
  evaluateShare,
  finishLayers,
  firstPlan,
  foldModel,
  inputCount,
  outputParts,
  packInputs,
  shareGroups,
  type Layer,
  type LayerPlan,
  type LayerShape,
  type LayerWeights,
  planActivations,
  planLayers,
  type PlanningOptions,
  shareRanges,
} from './circuit';
import { packCiphertext, unpackCiphertext } from './bitpack';
import { readContainer, writeContainer } from './container';
import { type ConvPlan, convInputs, convLowerBound, rotatedConvLowerBound } from './conv';
import { encodeComplex, encryptComplex, monomialPlain } from './complex';
import type { HeContext } from './context';
import { fail, HeError } from './errors';
import { type DeviceKeys, loadSeal, type OwnerKeys } from './keys';
import { type DensePlan, diagonalIndex, lowerBoundMults, virtualSlots, weightCount } from './packing';
import { packModel } from './reference';
import { checkParameters, describeParameters, type HeParameters, MAX_RING_DEGREE, MIN_RING_DEGREE, sameParameters } from './params';
import { Scope } from './scope';
import { type SealValue, type SealWeight, SealBackend } from './seal-backend';
import type { CipherText, PlainText } from './seal';
import { type OpCounts, TraceBackend, type TraceWeight, zeroCounts } from './trace';

/** Which operands are encrypted. Default: both (the weights stay the owner's secret). */
export interface Mode {
  readonly weights: 'encrypted' | 'plain';
  readonly input: 'encrypted' | 'plain';
}

export const DEFAULT_MODE: Mode = { weights: 'encrypted', input: 'encrypted' };

export interface ClassifierPlan {
  readonly params: HeParameters;
  readonly mode: Mode;
  readonly layers: readonly LayerShape[];
  readonly plans: readonly LayerPlan[];
  readonly inputs: number;
  readonly outputs: number;
  /** Output r sits in slot r·outputStride of the result. */
  readonly outputStride: number;
  /** Levels the circuit consumes. */
  readonly depth: number;
  /** Rotation steps the device performs: its Galois keys cover exactly these. */
  readonly rotationSteps: readonly number[];
  /** The same, layer by layer (empty for layers that rotate nothing). */
  readonly layerRotationSteps: readonly (readonly number[])[];
  /** Operations of one evaluation, by kind. */
  readonly counts: OpCounts;
  /** The same, layer by layer. */
  readonly layerCounts: readonly OpCounts[];
  /** Each linear layer's ⌈weights·uses/slots⌉ bound its ct×ct products are measured against (0 for activations). */
  readonly layerLowerBounds: readonly number[];
  /** Σ ⌈m·n/slots⌉ over the dense layers, plus ⌈planes·outputs/slots⌉ for a convolution. */
  readonly lowerBoundMults: number;
  /** Per dense layer, which diagonals carry weights (the rest are structurally zero); per convolution, its planes. */
  readonly structure: readonly (readonly boolean[] | null)[];
  /** Level and scale each weight section is encrypted at, keyed `layer:diagonal` (−1 − u: the bias of output part u). */
  readonly weightSlots: ReadonlyMap<string, { level: number; scale: number }>;
  readonly inputScale: number;
  /** Level and scale of a share of the first layer (see evaluateShare), before rescaling. */
  readonly shareSlot: { level: number; scale: number };
}

/** The weight key's diagonal of the bias of output part u (`layer:−1` for a one-ciphertext output, as before parts existed). */
function biasDiagonal(u: number): number {
  return -1 - u;
}

export function checkMode(mode: Mode): Mode {
  const ok = (v: unknown) => v === 'encrypted' || v === 'plain';
  if (mode === null || typeof mode !== 'object' || !ok(mode.weights) || !ok(mode.input)) {
    fail('E_SHAPE', `mode must be { weights, input } each 'encrypted' or 'plain', got ${JSON.stringify(mode)}`);
  }
  if (mode.weights === 'plain' && mode.input === 'plain') {
    fail('E_UNSUPPORTED', 'with plain weights and plain input nothing is encrypted; encrypt at least one');
  }
  return { weights: mode.weights, input: mode.input };
}

/**
 * How CKKS plans a classifier in `mode`: two values per slot in the first layer when both
 * sides are encrypted (a plain input or plain weights would need complex plaintexts on the
 * device, which cost more than they save). `complex: false` plans real packing only, as
 * classifiers encrypted before complex packing existed were.
 */
export function planningFor(mode: Mode, complex = true): PlanningOptions {
  return { ...CKKS_PLANNING, complex: complex && mode.weights === 'encrypted' && mode.input === 'encrypted' };
}

/** Copies the public part of a model (shapes, activations), checking it on the way. */
export function shapesOf(layers: readonly LayerShape[]): LayerShape[] {
  if (!Array.isArray(layers)) fail('E_SHAPE', 'layers must be an array');
  return layers.map((l: LayerShape, i): LayerShape => {
    if (l?.kind === 'dense') return { kind: 'dense', inputs: l.inputs, outputs: l.outputs };
    if (l?.kind === 'conv') {
      const { inChannels, inHeight, inWidth, outChannels, kernel, stride, pads } = l;
      const copy = (v: unknown) => (Array.isArray(v) ? [...v] : v);
      return { kind: 'conv', inChannels, inHeight, inWidth, outChannels, kernel: copy(kernel), stride: copy(stride), pads: copy(pads) } as LayerShape;
    }
    if (l?.kind === 'add') return { kind: 'add', from: l.from };
    if (l?.kind === 'poly' && Array.isArray(l.coeffs) && l.coeffs.every((c) => typeof c === 'number')) {
      return { kind: 'poly', coeffs: [...l.coeffs] };
    }
    fail('E_SHAPE', `layer ${i} is neither a convolution, a dense layer, a polynomial activation nor a residual add`);
  });
}

/**
 * The fewest slots (of a ring the parameter planner offers) at which CKKS's packing for
 * `mode` plans every layer. Activations span as many ciphertexts as they need, so only
 * what must fit one ciphertext sets it: a dense layer's outputs, one map of a
 * convolution. What does not fit the largest ring is refused with the packing's own
 * reason (a larger ring is no remedy).
 */
export function layoutSlots(layers: readonly LayerShape[], mode: Mode): number {
  const shapes = shapesOf(layers);
  const polys = planActivations(shapes);
  const planning = planningFor(checkMode(mode));
  const largest = MAX_RING_DEGREE / 2;
  planLayers(shapes, polys, largest, planning);
  for (let slots = MIN_RING_DEGREE / 2; slots < largest; slots *= 2) {
    try {
      planLayers(shapes, polys, slots, planning);
      return slots;
    } catch (error) {
      // A dense layer's outputs or a convolution's map do not fit these slots: try a larger ring.
      if (!(error instanceof HeError && (error.code === 'E_SHAPE' || error.code === 'E_UNSUPPORTED'))) throw error;
    }
  }
  return largest;
}

/**
 * Plans a classifier for a context: packing of every layer, levels and scales (by tracing
 * the very plan the device will run), rotation steps and operation counts.
 */
export function planClassifier(he: HeContext, layers: readonly LayerShape[], mode: Mode = DEFAULT_MODE, complex = true): ClassifierPlan {
  const checked = checkMode(mode);
  const shapes = shapesOf(layers);
  const plans = planLayers(shapes, planActivations(shapes), he.slots, planningFor(checked, complex));
  const structure = plans.map((plan) => {
    if (plan.kind === 'conv') return Array<boolean>(convInputs(plan)).fill(true);
    if (plan.kind === 'conv-rot') return [...plan.used];
    if (plan.kind !== 'dense') return null;
    const index = diagonalIndex(plan);
    const virtual = virtualSlots(plan);
    return Array.from({ length: weightCount(plan) }, (_, k) => index.subarray(k * virtual, (k + 1) * virtual).some((v) => v >= 0));
  });
  const trace = new TraceBackend(he.primes, checked.weights === 'encrypted');
  const markers = plans.map((plan, layer): LayerWeights<TraceWeight> | null =>
    plan.kind === 'poly' || plan.kind === 'add'
      ? null
      : {
          diagonals: structure[layer]!.map((used, diagonal) => (used ? { layer, diagonal } : null)),
          biases: Array.from({ length: outputParts(plan) }, (_, u) => ({ layer, diagonal: biasDiagonal(u) })),
        },
  );
  const inputScale = 2 ** he.params.scaleBits;
  const input = { level: he.topLevel, scale: inputScale, size: checked.input === 'encrypted' ? 2 : 0 };
  const inputs = Array.from({ length: inputCount(firstPlan(plans)) }, () => ({ ...input }));
  evaluateLayers(trace, plans, markers, inputs, (i) => trace.enterLayer(i));
  const share = evaluateShare(new TraceBackend(he.primes, checked.weights === 'encrypted'), plans, markers, inputs).find((s) => s !== null);
  const sorted = (steps: Iterable<number>) => [...steps].sort((a, b) => a - b);
  const dense = plans.filter((p) => p.kind === 'dense');
  const first = firstPlan(plans);
  const layerLowerBounds = plans.map((p) =>
    p.kind === 'conv' ? convLowerBound(p) : p.kind === 'conv-rot' ? rotatedConvLowerBound(p) : p.kind === 'dense' ? lowerBoundMults(p.outputs, p.inputs, he.slots) : 0,
  );
  return {
    params: he.params,
    mode: checked,
    layers: shapes,
    plans,
    inputs: first.kind === 'conv' ? first.geometry.inputs : first.inputs,
    outputs: dense[dense.length - 1]!.outputs,
    outputStride: outputSlots(plans).stride,
    depth: he.topLevel - trace.minLevel,
    rotationSteps: sorted(trace.steps),
    layerRotationSteps: plans.map((_, i) => sorted(trace.layerSteps.get(i) ?? [])),
    counts: trace.counts,
    lowerBoundMults: layerLowerBounds.reduce((a, b) => a + b, 0),
    layerCounts: plans.map((_, i) => trace.layerCounts.get(i) ?? zeroCounts()),
    layerLowerBounds,
    structure,
    weightSlots: trace.weightSlots,
    inputScale,
    shareSlot: { level: share?.level ?? he.topLevel, scale: share?.scale ?? 0 },
  };
}

interface ClassifierHeader {
  params: HeParameters;
  keyId: string;
  mode: Mode;
  layers: LayerShape[];
  /** Whether the planner could pack two values per slot; absent (false) before complex packing existed. */
  complex?: boolean;
  /** How encrypted weight sections are stored: bit-packed (see bitpack.ts); absent: SEAL's zstd, as before. */
  weightEncoding?: 'bitpacked';
}

/** Calls back with (done, total) while the owner encrypts; total counts weight sections. */
export type Progress = (done: number, total: number) => void;

function float64Bytes(v: Float64Array): Uint8Array {
  const out = new Uint8Array(v.length * 8);
  const view = new DataView(out.buffer);
  v.forEach((x, i) => view.setFloat64(i * 8, x, true));
  return out;
}

function bytesFloat64(bytes: Uint8Array, length: number, what: string): Float64Array {
  if (bytes.length !== length * 8) fail('E_CORRUPT', `${what} has ${bytes.length} bytes, expected ${length * 8}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float64Array.from({ length }, (_, i) => view.getFloat64(i * 8, true));
}

/** Lets other work run (a server's requests, a test runner's heartbeats) between long steps. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Ciphertexts encrypted between two yields to the event loop (about 0.1 s at N=8192). */
export const SECTIONS_PER_YIELD = 16;

/**
 * The owner's side: packs the float model for its plan and encrypts every weight
 * diagonal and bias with the secret key (seeded ciphertexts, half the size of public-key
 * ones, stored bit-packed: see bitpack.ts), at the level and scale the device's evaluation will meet it. Seconds of work for
 * a large head, so it yields to the event loop as it goes. `complex: false` keeps to real
 * packing (the before of a comparison); the header records it for the device's planner.
 */
export async function encryptClassifier(
  he: HeContext,
  owner: OwnerKeys,
  layers: readonly Layer[],
  mode: Mode = DEFAULT_MODE,
  onProgress?: Progress,
  complex = true,
): Promise<Uint8Array> {
  const plan = planClassifier(he, layers, mode, complex);
  const missing = plan.rotationSteps.filter((s) => !owner.steps.includes(s));
  if (missing.length > 0) fail('E_KEYS', `the key set has no Galois keys for rotation steps ${missing.join(', ')}`);
  const folded = foldModel(layers);
  const { seal } = he;
  const total = [...plan.weightSlots.keys()].length;
  const sections: Uint8Array[] = [];
  const scope = new Scope();
  try {
    const encryptor = scope.track(seal.Encryptor(he.context, owner.publicKey, owner.secretKey));
    const plain = scope.track(seal.PlainText());
    const monomials = new Map<number, PlainText>();
    const monomial = (level: number): PlainText => {
      let mono = monomials.get(level);
      if (mono === undefined) monomials.set(level, (mono = scope.track(monomialPlain(he, level))));
      return mono;
    };
    const seal1 = (values: Float64Array, key: string): Uint8Array => {
      const slot = plan.weightSlots.get(key)!;
      if (plan.mode.weights === 'plain') return float64Bytes(values);
      const encoded = values.length === he.slots ? he.encode(values, slot.scale, slot.level, plain) : scope.track(encodeComplex(he, monomial(slot.level), values, slot.scale, slot.level));
      const serializable = encryptor.encryptSymmetricSerializable(encoded);
      if (encoded !== plain) scope.free(encoded);
      try {
        return packCiphertext(serializable.saveArray(seal.ComprModeType.none), he.primes, `weight ${key}`);
      } finally {
        serializable.delete();
      }
    };
    for (const [i, packed] of packModel(plan.plans, folded).entries()) {
      if (packed === null) continue;
      const parts: [Float64Array, string][] = packed.diagonals.flatMap((d, k): [Float64Array, string][] => (d === null ? [] : [[d, `${i}:${k}`]]));
      packed.biases.forEach((b, u) => parts.push([b, `${i}:${biasDiagonal(u)}`]));
      for (const [values, key] of parts) {
        sections.push(seal1(values, key));
        onProgress?.(sections.length, total);
        if (sections.length % SECTIONS_PER_YIELD === 0) await yieldToEventLoop();
      }
    }
  } finally {
    scope.dispose();
  }
  const header: ClassifierHeader = { params: he.params, keyId: owner.keyId, mode: plan.mode, layers: shapesOf(layers), complex, weightEncoding: 'bitpacked' };
  return writeContainer('classifier', header, sections);
}

export interface StageTimings {
  encryptMs: number;
  evaluateMs: number;
  serializeMs: number;
}

export interface Evaluation {
  /** The encrypted scores in the result container: only the owner can open it. */
  readonly result: Uint8Array;
  readonly timings: StageTimings;
  readonly counts: OpCounts;
}

/** One worker's share of an evaluation (see EncryptedClassifier.evaluateShare). */
export interface ShareEvaluation {
  /** A partial container: the share's sum, still encrypted, before rescaling. */
  readonly partial: Uint8Array;
  readonly encryptMs: number;
  readonly evaluateMs: number;
}

interface PartialHeader {
  params: HeParameters;
  keyId: string;
  range: [number, number];
}

interface ResultHeader {
  params: HeParameters;
  keyId: string;
  outputs: number;
  /** Output r sits in slot r·stride; absent (1) in results written before strided outputs. */
  stride?: number;
  /** 'bitpacked' (bitpack.ts); absent in results written before, which SEAL compressed with zstd. */
  encoding?: 'bitpacked';
}

/** How a classifier holds its encrypted weights. */
export interface LoadOptions {
  /**
   * The most WASM memory the encrypted weights may take as SEAL ciphertexts. Weights are
   * loaded in order while they fit; the rest stay serialized and each is read for its
   * product (`streamedWeights`): WASM memory ends at 4 GiB, and the keys and the
   * evaluation need the rest.
   */
  readonly residentWeightBytes?: number;
}

export const DEFAULT_RESIDENT_WEIGHT_BYTES = 1.5 * 2 ** 30;

/** WASM memory of an encrypted weight at `level`: two polynomials of N coefficients per prime. */
function cipherBytes(he: HeContext, level: number): number {
  return 2 * he.params.polyModulusDegree * (level + 1) * 8;
}

/**
 * The device's side: an encrypted classifier loaded once (keys and the weights that fit
 * the budget stay in WASM memory) and evaluated per input. Each evaluation frees
 * everything it created.
 */
export class EncryptedClassifier {
  private disposed = false;

  private constructor(
    private readonly he: HeContext,
    private readonly keys: DeviceKeys,
    readonly plan: ClassifierPlan,
    private readonly weights: (LayerWeights<SealWeight> | null)[],
    private readonly owned: Scope,
    readonly byteLength: number,
    /** X^(N/2) at the top level, when the device encrypts complex-packed planes. */
    private readonly monomial: PlainText | null,
    /** How many weights stay serialized and are read for each product (see LoadOptions). */
    readonly streamedWeights: number,
  ) {}

  /** Whether some weights stay serialized (see LoadOptions). */
  get streamed(): boolean {
    return this.streamedWeights > 0;
  }

  static load(he: HeContext, keys: DeviceKeys, bytes: Uint8Array, options: LoadOptions = {}): EncryptedClassifier {
    const budget = options.residentWeightBytes ?? DEFAULT_RESIDENT_WEIGHT_BYTES;
    if (typeof budget !== 'number' || !(budget >= 0)) fail('E_SHAPE', `residentWeightBytes must be a number of bytes ≥ 0, got ${String(budget)}`);
    const { header, sections } = readContainer<ClassifierHeader>(bytes, 'classifier');
    const params = checkParameters(header.params);
    if (!sameParameters(params, he.params)) {
      fail('E_PARAMS', `the classifier was encrypted for ${describeParameters(params)}, not ${describeParameters(he.params)}`);
    }
    if (header.keyId !== keys.keyId) {
      fail('E_KEYS', `the classifier was encrypted under key ${header.keyId}, the device holds key ${keys.keyId}`);
    }
    if (!Array.isArray(header.layers)) fail('E_CORRUPT', 'the classifier header has no layer list');
    if (header.complex !== undefined && typeof header.complex !== 'boolean') fail('E_CORRUPT', 'the classifier header says neither complex nor real packing');
    if (header.weightEncoding !== undefined && header.weightEncoding !== 'bitpacked') fail('E_CORRUPT', `unknown weight encoding ${JSON.stringify(header.weightEncoding)}`);
    const plan = planClassifier(he, header.layers, header.mode, header.complex === true);
    const missing = plan.rotationSteps.filter((s) => !keys.steps.includes(s));
    if (missing.length > 0) fail('E_KEYS', `the device key set has no Galois keys for rotation steps ${missing.join(', ')}`);
    const expected = plan.weightSlots.size;
    if (sections.length !== expected) fail('E_CORRUPT', `the classifier has ${sections.length} weight sections, its plan needs ${expected}`);
    const owned = new Scope();
    try {
      let next = 0;
      let room = budget;
      let streamedWeights = 0;
      let scratch: CipherText | undefined;
      const load = (key: string): SealWeight | null => {
        const slot = plan.weightSlots.get(key)!;
        const section = sections[next++]!;
        const what = `weight section ${next - 1} (${key})`;
        if (plan.mode.weights === 'plain') {
          const values = bytesFloat64(section, he.slots, what);
          if (values.every((v) => v === 0) && Number(key.split(':')[1]) >= 0) return null;
          return owned.track(he.encode(values, slot.scale, slot.level));
        }
        const read = (into: CipherText): CipherText => {
          const serialized = header.weightEncoding === 'bitpacked' ? unpackCiphertext(section, he.primes, what) : section;
          return loadSeal(he, into, serialized, what);
        };
        const size = cipherBytes(he, slot.level);
        const resident = size <= room;
        if (resident) room -= size;
        // A streamed weight is read once here too, so a damaged one is refused at load.
        const ct = read(resident ? owned.track(he.seal.CipherText()) : (scratch ??= owned.track(he.seal.CipherText())));
        if (he.levelOf(ct) !== slot.level || Math.abs(ct.scale / slot.scale - 1) > 1e-9 || ct.size !== 2) {
          fail('E_CORRUPT', `${what} is at level ${he.levelOf(ct)} scale 2^${Math.log2(ct.scale).toFixed(2)}, the plan needs level ${slot.level}`);
        }
        if (resident) return ct;
        streamedWeights++;
        return { readInto: read };
      };
      const weights = plan.plans.map((layerPlan, i): LayerWeights<SealWeight> | null => {
        if (layerPlan.kind === 'poly' || layerPlan.kind === 'add') return null;
        const diagonals = plan.structure[i]!.map((used, k) => (used ? load(`${i}:${k}`) : null));
        return { diagonals, biases: Array.from({ length: outputParts(layerPlan) }, (_, u) => load(`${i}:${biasDiagonal(u)}`)) };
      });
      const first = firstPlan(plan.plans);
      const monomial = first.complex ? owned.track(monomialPlain(he, he.topLevel)) : null;
      return new EncryptedClassifier(he, keys, plan, weights, owned, bytes.length, monomial, streamedWeights);
    } catch (error) {
      owned.dispose();
      throw error;
    }
  }

  /** The first layer's plan: it packs the input and is the layer shares split. */
  private get first(): ConvPlan | DensePlan {
    return firstPlan(this.plan.plans);
  }

  private packed(features: ArrayLike<number>): Float64Array[] {
    if (this.disposed) fail('E_DISPOSED', 'the classifier has been disposed');
    return packInputs(this.first, features);
  }

  /**
   * The packed input vectors as the first layer reads them (a share reads only its own),
   * each encrypted with the device's public key when read, or kept plain, by mode: a
   * convolution's planes are encrypted and freed one by one. `encryptMs` adds up the time
   * spent encrypting.
   */
  private input(packed: readonly Float64Array[], scope: Scope): { at: (index: number) => SealValue; encryptMs: () => number } {
    const vector = (index: number): Float64Array => {
      const v = packed[index];
      if (v === undefined) fail('E_SHAPE', `packed input ${index} does not exist (${packed.length} packed)`);
      return v;
    };
    if (this.plan.mode.input !== 'encrypted') return { at: (index) => ({ plain: vector(index), scale: this.plan.inputScale }), encryptMs: () => 0 };
    const he = this.he;
    const encryptor = scope.track(he.seal.Encryptor(he.context, this.keys.publicKey));
    const plain = scope.track(he.seal.PlainText());
    let ms = 0;
    const at = (index: number): SealValue => {
      const t0 = performance.now();
      const input = scope.track(he.seal.CipherText());
      if (this.monomial !== null) {
        encryptComplex(he, encryptor, this.monomial, vector(index), this.plan.inputScale, input, plain);
      } else {
        he.encode(vector(index), this.plan.inputScale, he.topLevel, plain);
        encryptor.encrypt(plain, input);
      }
      ms += performance.now() - t0;
      return input;
    };
    return { at, encryptMs: () => ms };
  }

  /** Serializes the still-encrypted scores into a result container. */
  private result(out: SealValue): Uint8Array {
    if ('plain' in out) fail('E_SHAPE', 'the classifier produced no ciphertext');
    const header: ResultHeader = { params: this.he.params, keyId: this.keys.keyId, outputs: this.plan.outputs, stride: this.plan.outputStride, encoding: 'bitpacked' };
    return writeContainer('result', header, [packCiphertext(out.saveArray(this.he.seal.ComprModeType.none), this.he.primes, 'the result')]);
  }

  /** Encrypts the input (features, or the image for a convolution), evaluates, serializes the still-encrypted scores. */
  evaluate(features: ArrayLike<number>): Evaluation {
    const packed = this.packed(features);
    const scope = new Scope();
    try {
      const t0 = performance.now();
      const input = this.input(packed, scope);
      const backend = new SealBackend(this.he, this.keys, scope);
      const out = evaluateLayers<SealValue, SealWeight>(backend, this.plan.plans, this.weights, input.at);
      const t1 = performance.now();
      const result = this.result(out);
      const t2 = performance.now();
      return {
        result,
        timings: { encryptMs: input.encryptMs(), evaluateMs: t1 - t0 - input.encryptMs(), serializeMs: t2 - t1 },
        counts: backend.counts,
      };
    } finally {
      scope.dispose();
    }
  }

  /** The giant-step ranges of the first layer that `count` workers evaluate (see shareRanges). */
  shares(count: number): [number, number][] {
    return shareRanges(this.first, count, this.plan.mode.weights === 'encrypted' && this.plan.mode.input === 'encrypted');
  }

  /**
   * One worker's part of an evaluation shared by `count` workers: encrypts the features
   * itself (fresh encryptions of the same input add up correctly) and evaluates share
   * `index` of the first layer's giant-step groups. Returns a partial container that
   * `finish` on any worker holding the same classifier combines with the others.
   */
  evaluateShare(features: ArrayLike<number>, index: number, count: number): ShareEvaluation {
    const ranges = this.shares(count);
    if (!Number.isInteger(index) || index < 0 || index >= count) fail('E_SHAPE', `share ${index} of ${count} does not exist`);
    const groups = shareGroups(this.first);
    const range = ranges[index] ?? [groups, groups];
    const header: PartialHeader = { params: this.he.params, keyId: this.keys.keyId, range };
    if (range[0] === range[1]) return { partial: writeContainer('partial', header, []), encryptMs: 0, evaluateMs: 0 };
    const packed = this.packed(features);
    const scope = new Scope();
    try {
      const t0 = performance.now();
      const input = this.input(packed, scope);
      const share = evaluateShare<SealValue, SealWeight>(new SealBackend(this.he, this.keys, scope), this.plan.plans, this.weights, input.at, range);
      const t1 = performance.now();
      // One section per output part, empty where the share has no product.
      const sections = share.every((s) => s === null) ? [] : share.map((s) => (s === null ? new Uint8Array(0) : this.cipherOf(s).saveArray(this.he.seal.ComprModeType.none)));
      return { partial: writeContainer('partial', header, sections), encryptMs: input.encryptMs(), evaluateMs: t1 - t0 - input.encryptMs() };
    } finally {
      scope.dispose();
    }
  }

  private cipherOf(v: SealValue): CipherText {
    if ('plain' in v) fail('E_SHAPE', 'a share produced no ciphertext');
    return v;
  }

  /**
   * Adds the partial sums of every share (whose ranges must cover the first layer's
   * giant-step groups exactly once), runs the rest of the classifier and serializes the
   * result. The partials are checked (kind, key, parameters, ranges, level, scale) before
   * SEAL reads them.
   */
  finish(partials: readonly Uint8Array[]): Evaluation {
    if (this.disposed) fail('E_DISPOSED', 'the classifier has been disposed');
    if (!Array.isArray(partials) || partials.length === 0) fail('E_SHAPE', 'finish needs at least one partial sum');
    const he = this.he;
    const giant = shareGroups(this.first);
    const parts = outputParts(this.first);
    const read = partials.map((bytes, i) => {
      const { header, sections } = readContainer<PartialHeader>(bytes, 'partial');
      if (header.keyId !== this.keys.keyId) fail('E_KEYS', `partial ${i} was computed under key ${header.keyId}, not ${this.keys.keyId}`);
      if (!sameParameters(checkParameters(header.params), he.params)) fail('E_PARAMS', `partial ${i} was computed under other parameters`);
      const r = header.range;
      if (!Array.isArray(r) || r.length !== 2 || !r.every(Number.isInteger) || r[0] < 0 || r[0] > r[1] || r[1] > giant) {
        fail('E_CORRUPT', `partial ${i} declares giant-step groups ${JSON.stringify(r)}, outside [0, ${giant}]`);
      }
      if (sections.length !== 0 && sections.length !== parts) fail('E_CORRUPT', `partial ${i} holds ${sections.length} sections, a share holds none or ${parts}`);
      return { range: r, sections, index: i };
    });
    read.sort((a, b) => a.range[0] - b.range[0] || a.range[1] - b.range[1]);
    let covered = 0;
    for (const { range, index } of read) {
      if (range[0] !== covered && range[0] !== range[1]) {
        fail('E_SHAPE', `the partials do not cover giant-step groups [0, ${giant}) exactly once (partial ${index} starts at ${range[0]}, expected ${covered})`);
      }
      covered = Math.max(covered, range[1]);
    }
    if (covered !== giant) fail('E_SHAPE', `the partials cover giant-step groups [0, ${covered}), the layer has ${giant}`);
    const scope = new Scope();
    try {
      const t0 = performance.now();
      const sums: (CipherText | null)[] = Array<CipherText | null>(parts).fill(null);
      const expected = this.plan.shareSlot;
      for (const { sections, index } of read) {
        sections.forEach((section, t) => {
          if (section.length === 0) return;
          const what = parts === 1 ? `partial ${index}` : `partial ${index} part ${t}`;
          const ct = scope.track(loadSeal(he, he.seal.CipherText(), section, what));
          if (he.levelOf(ct) !== expected.level || Math.abs(ct.scale / expected.scale - 1) > 1e-9 || ct.size !== 2) {
            fail('E_CORRUPT', `${what} is at level ${he.levelOf(ct)} scale 2^${Math.log2(ct.scale).toFixed(2)} size ${ct.size}, a share is at level ${expected.level} scale 2^${Math.log2(expected.scale).toFixed(2)} size 2`);
          }
          const sum = sums[t];
          if (sum == null) sums[t] = ct;
          else he.evaluator.add(sum, ct, sum);
        });
      }
      const backend = new SealBackend(he, this.keys, scope);
      const out = finishLayers<SealValue, SealWeight>(backend, this.plan.plans, this.weights, sums);
      const t1 = performance.now();
      const result = this.result(out);
      const t2 = performance.now();
      return { result, timings: { encryptMs: 0, evaluateMs: t1 - t0, serializeMs: t2 - t1 }, counts: backend.counts };
    } finally {
      scope.dispose();
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.owned.dispose();
  }
}

/** The owner's side again: opens a result and returns the scores (never sent to a device). */
export function decryptResult(he: HeContext, owner: OwnerKeys, bytes: Uint8Array): Float64Array {
  const { header, sections } = readContainer<ResultHeader>(bytes, 'result');
  const params = checkParameters(header.params);
  if (!sameParameters(params, he.params)) fail('E_PARAMS', `the result was computed under ${describeParameters(params)}`);
  if (header.keyId !== owner.keyId) fail('E_KEYS', `the result is encrypted under key ${header.keyId}, not ${owner.keyId}`);
  const stride = header.stride ?? 1;
  if (!Number.isInteger(header.outputs) || header.outputs < 1 || !Number.isInteger(stride) || stride < 1 || header.outputs * stride > he.slots) {
    fail('E_CORRUPT', `the result declares ${String(header.outputs)} outputs ${String(stride)} slots apart`);
  }
  if (sections.length !== 1) fail('E_CORRUPT', `a result holds one ciphertext, this one has ${sections.length} sections`);
  if (header.encoding !== undefined && header.encoding !== 'bitpacked') fail('E_CORRUPT', `unknown result encoding ${JSON.stringify(header.encoding)}`);
  const section = header.encoding === 'bitpacked' ? unpackCiphertext(sections[0]!, he.primes, 'result ciphertext') : sections[0]!;
  const scope = new Scope();
  try {
    const ct = scope.track(loadSeal(he, he.seal.CipherText(), section, 'result ciphertext'));
    if (ct.size !== 2) fail('E_CORRUPT', `the result ciphertext has size ${ct.size}, expected 2`);
    const decryptor = scope.track(he.seal.Decryptor(he.context, owner.secretKey));
    const plain = scope.track(he.seal.PlainText());
    decryptor.decrypt(ct, plain);
    const slots = he.encoder.decode(plain) as Float64Array;
    return readOutputs(slots, { count: header.outputs, stride });
  } finally {
    scope.dispose();
  }
}

