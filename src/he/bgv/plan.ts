import { evaluateLayers, firstPlan, foldModel, inputCount, type Layer, type LayerPlan, type LayerShape, type LayerWeights, planActivations, planLayers } from '../circuit';
import { checkMode, DEFAULT_MODE, type Mode, shapesOf } from '../classifier';
import { fail, HeError } from '../errors';
import { convLowerBound, rotatedConvLowerBound } from '../conv';
import { diagonalIndex, lowerBoundMults } from '../packing';
import { MAX_MODULUS_BITS, type SecurityBits } from '../params';
import { floatEvaluate } from '../reference';
import type { OpCounts, TraceWeight } from '../trace';
import { calibrateRange, chooseFixedPoint, clampInput, type FixedPoint, type LayerBound, layerBounds, linearCount, quantizationError } from './fixed-point';
import { BGV_RING_DEGREES, type BgvParameters, checkBgvParameters, finalPrimes, MAX_MODULI, MAX_PRIME_BITS, maxPlainBits, minDataBits, minPlainBits, switchLevels } from './params';
import { plainPrimes, realizeBgvPrimes } from './primes';
import { BgvTraceBackend, NoiseModel, opCostMs, primesToDrop, type TraceChain } from './trace';

/** Everything the device (and the owner) derive from parameters, shapes, mode and fixed point. */
export interface BgvClassifierPlan {
  readonly params: BgvParameters;
  readonly mode: Mode;
  readonly fixedPoint: FixedPoint;
  readonly layers: readonly LayerShape[];
  readonly plans: readonly LayerPlan[];
  readonly inputs: number;
  readonly outputs: number;
  /** Modulus switches of one evaluation. */
  readonly depth: number;
  /** Rotation steps the device performs: its Galois keys cover exactly these. */
  readonly rotationSteps: readonly number[];
  readonly layerRotationSteps: readonly (readonly number[])[];
  /** Operations of one evaluation of one CRT component, by kind. */
  readonly counts: OpCounts;
  readonly lowerBoundMults: number;
  /** Per dense layer, which diagonals carry weights (the rest are structurally zero); per convolution, its planes or used diagonals. */
  readonly structure: readonly (readonly boolean[] | null)[];
  /** Chain level and scale each weight section is used at, keyed `layer:diagonal` (−1: bias). */
  readonly weightSlots: ReadonlyMap<string, { level: number; scale: number }>;
  /** Scale of the scores: decrypted integer / outputScale ≈ the float model's score. */
  readonly outputScale: number;
  /** The noise model's estimate of a result's remaining budget in bits (largest t_i). */
  readonly predictedBudgetBits: number;
  /** Estimated time of one evaluation, all CRT components, one core (ms). */
  readonly estimatedMs: number;
}

/** The chain as the tracer reads it from parameters. */
function traceChain(params: BgvParameters): TraceChain {
  const bits = params.coeffModulusBits;
  let end = bits.length - 1;
  const drops = params.switchPrimes.map((k) => {
    end -= k;
    return bits.slice(end, end + k);
  });
  return { baseBits: bits.slice(0, finalPrimes(params)), drops, specialBits: bits[bits.length - 1]!, open: false };
}

function structureOf(plans: readonly LayerPlan[], slots: number): (boolean[] | null)[] {
  return plans.map((plan) => {
    if (plan.kind === 'conv') return Array<boolean>(plan.geometry.planes).fill(true);
    if (plan.kind === 'conv-rot') return [...plan.used];
    if (plan.kind !== 'dense') return null;
    const index = diagonalIndex(plan);
    return Array.from({ length: plan.diagonals }, (_, k) => index.subarray(k * slots, (k + 1) * slots).some((v) => v >= 0));
  });
}

function markersOf(structure: readonly (readonly boolean[] | null)[]): (LayerWeights<TraceWeight> | null)[] {
  return structure.map((used, layer) =>
    used === null ? null : { diagonals: used.map((u, diagonal) => (u ? { layer, diagonal } : null)), biases: [{ layer, diagonal: -1 }] },
  );
}

/** Scale of the diagonals (or planes) of each linear layer, by layer index. */
function weightScaleOf(shapes: readonly LayerShape[], fp: FixedPoint): (layer: number) => number {
  const byLayer = new Map<number, number>();
  let linear = 0;
  shapes.forEach((l, i) => (l.kind === 'dense' || l.kind === 'conv') && byLayer.set(i, fp.weightScales[linear++]!));
  return (layer) => byLayer.get(layer)!;
}

function checkBgvMode(mode: Mode): Mode {
  const checked = checkMode(mode);
  if (checked.weights !== 'encrypted') fail('E_UNSUPPORTED', 'BGV encrypts the weights always; plain weights are a CKKS mode');
  return checked;
}

function trace(
  shapes: readonly LayerShape[],
  plans: readonly LayerPlan[],
  structure: readonly (readonly boolean[] | null)[],
  mode: Mode,
  fp: FixedPoint,
  model: NoiseModel,
  chain: TraceChain,
): { be: BgvTraceBackend; noise: number; depth: number; scale: number } {
  const be = new BgvTraceBackend(model, chain, weightScaleOf(shapes, fp), mode.weights === 'encrypted');
  const encrypted = mode.input === 'encrypted';
  const inputs = Array.from({ length: inputCount(firstPlan(plans)) }, () => ({ depth: 0, scale: fp.inputScale, size: encrypted ? 2 : 0, noise: encrypted ? model.freshPublic() : 0 }));
  const out = evaluateLayers(be, plans, markersOf(structure), inputs, (i) => be.enterLayer(i));
  return { be, noise: out.noise, depth: out.depth, scale: out.scale };
}

/**
 * The plan of a BGV classifier for given parameters: packing (as CKKS packs for N/2
 * slots), the chain level and scale of every weight, rotation steps, operation counts,
 * the output scale and the predicted noise budget. The device derives it from the
 * classifier's header, so it must be a pure function of its arguments.
 */
export function planBgvClassifier(params: BgvParameters, layers: readonly LayerShape[], mode: Mode, fixedPoint: FixedPoint): BgvClassifierPlan {
  const checked = checkBgvMode(mode);
  const shapes = shapesOf(layers);
  const slots = params.polyModulusDegree / 2;
  const plans = planLayers(shapes, planActivations(shapes), slots);
  const dense = plans.filter((p) => p.kind === 'dense');
  if (fixedPoint.weightScales.length !== linearCount(shapes)) {
    fail('E_SHAPE', `the fixed-point encoding has ${fixedPoint.weightScales.length} weight scales for ${linearCount(shapes)} convolutions and dense layers`);
  }
  const first = firstPlan(plans);
  const plainBits = Math.max(...params.plainModulusBits);
  const structure = structureOf(plans, slots);
  const model = new NoiseModel(params.polyModulusDegree, plainBits);
  const { be, noise, depth, scale } = trace(shapes, plans, structure, checked, fixedPoint, model, traceChain(params));
  if (depth !== params.switchPrimes.length) {
    fail('E_PARAMS', `the circuit switches modulus ${depth} times, the parameters are for ${params.switchPrimes.length}`);
  }
  const levels = switchLevels(params);
  const top = levels[0]!;
  const sorted = (steps: Iterable<number>) => [...steps].sort((a, b) => a - b);
  const components = params.plainModulusBits.length;
  const encryptMs = checked.input === 'encrypted' ? inputCount(first) * opCostMs('encrypt', params.polyModulusDegree, top + 1) : 0;
  return {
    params,
    mode: checked,
    fixedPoint,
    layers: shapes,
    plans,
    inputs: first.kind === 'conv' ? first.geometry.inputs : first.inputs,
    outputs: dense[dense.length - 1]!.outputs,
    depth,
    rotationSteps: sorted(be.steps),
    layerRotationSteps: plans.map((_, i) => sorted(be.layerSteps.get(i) ?? [])),
    counts: be.counts,
    lowerBoundMults: plans.reduce(
      (n, p) => n + (p.kind === 'conv' ? convLowerBound(p) : p.kind === 'conv-rot' ? rotatedConvLowerBound(p) : p.kind === 'dense' ? lowerBoundMults(p.outputs, p.inputs, slots) : 0),
      0,
    ),
    structure,
    weightSlots: new Map([...be.weightSlots].map(([key, slot]) => [key, { level: levels[slot.depth]!, scale: slot.scale }])),
    outputScale: scale,
    predictedBudgetBits: Math.floor(be.bitsAt(depth) - noise - 1),
    estimatedMs: components * (be.costMs + encryptMs),
  };
}

export interface BgvPlanOptions {
  readonly security: SecurityBits;
  /**
   * Feature vectors of real inputs (a few hundred): their range is the range the device
   * clamps its features to, and the worst-case bounds hold for every input inside it.
   */
  readonly calibration: readonly ArrayLike<number>[];
  readonly mode?: Mode;
  /**
   * The largest error of a score allowed on the calibration data, relative to the largest
   * |score| there (default 0.01): the planner quantizes with the fewest bits that meet it.
   */
  readonly precision?: number;
  /** Bits of the largest quantized feature (instead of the fewest that meet `precision`). */
  readonly inputBits?: number;
  /** Bits of each linear layer's largest quantized weight (likewise). */
  readonly weightBits?: number;
  /** The most CRT plaintext moduli (each a whole evaluation) the plan may use. Default 4. */
  readonly maxModuli?: number;
  /** Noise budget the planner keeps in reserve for the model's error, bits. Default 6. */
  readonly marginBits?: number;
}

/** The owner's plan: parameters, fixed-point encoding and worst-case bounds. */
export interface BgvPlan {
  readonly params: BgvParameters;
  readonly fixedPoint: FixedPoint;
  readonly classifier: BgvClassifierPlan;
  /** Worst-case bound of every layer (inputs clamped to the calibrated range). */
  readonly bounds: readonly LayerBound[];
  /** log2 of the largest |integer| any layer can reach: Π t_i exceeds twice that. */
  readonly boundBits: number;
  /** The quantized scores' largest error on the calibration data, relative to the largest |score|. */
  readonly quantizationError: number;
}

const DEFAULTS = { precision: 0.01, maxModuli: 4, marginBits: 6 };
/** The most bits the precision search quantizes features and weights with. */
const MAX_AUTO_BITS = 16;
/** Calibration vectors the precision search evaluates (spread over the set): enough to see the error, quick. */
const PRECISION_SAMPLES = 128;

/**
 * The fixed-point encoding: the given bits, or the fewest (the same for features and
 * weights, from 2 up) whose quantized model meets the precision on (up to 128 of) the
 * calibration vectors.
 */
function fixedPointFor(
  layers: readonly Layer[],
  calibration: readonly ArrayLike<number>[],
  range: readonly [number, number],
  options: { precision: number; inputBits?: number; weightBits?: number },
): { fixedPoint: FixedPoint; error: number } {
  const { precision, inputBits, weightBits } = options;
  if (!(precision > 0 && precision < 1)) fail('E_PARAMS', `precision must be a number between 0 and 1, got ${precision}`);
  const step = Math.max(1, calibration.length / PRECISION_SAMPLES);
  const samples = Array.from({ length: Math.min(calibration.length, PRECISION_SAMPLES) }, (_, i) => calibration[Math.floor(i * step)]!);
  const folded = foldModel(layers);
  const polys = planActivations(layers);
  let floats: Float64Array[] | undefined;
  const encode = (bits: number) => {
    const fixedPoint = chooseFixedPoint(folded, range, inputBits ?? bits, weightBits ?? bits);
    floats ??= samples.map((x) => floatEvaluate(layers, clampInput(fixedPoint, x)));
    return { fixedPoint, error: quantizationError(folded, polys, fixedPoint, samples, floats) };
  };
  if (inputBits !== undefined && weightBits !== undefined) return encode(inputBits);
  for (let bits = 2; bits <= MAX_AUTO_BITS; bits++) {
    const found = encode(bits);
    if (found.error <= precision) return found;
  }
  fail('E_PARAMS', `no quantization up to ${MAX_AUTO_BITS} bits keeps the scores within ${precision} of the float model's on the calibration data`);
}

/**
 * Plaintext prime sizes for k components whose primes' product exceeds 2·bound, as even
 * as possible (the noise grows with the largest); null when that takes primes larger than
 * maxPlainBits(N).
 */
function plainBitsFor(bound: number, k: number, n: number): number[] | null {
  const need = BigInt(Math.ceil(2 * bound * (1 + 1e-12))) + 1n;
  const total = Math.ceil(Math.log2(2 * bound + 1)) + k;
  const bits = Array.from({ length: k }, (_, i) => Math.max(minPlainBits(n), Math.floor(total / k) + (i < total % k ? 1 : 0)));
  for (;;) {
    if (bits.some((b) => b > maxPlainBits(n))) return null;
    const primes = plainPrimes(n, bits);
    if (primes !== null && primes.reduce((a, b) => a * b, 1n) >= need) return bits;
    bits[bits.indexOf(Math.min(...bits))]! += 1;
  }
}

/**
 * One candidate: ring degree N and plaintext primes. The chain follows the circuit: each
 * modulus switch drops the primes that bring the noise back to its floor, the primes left
 * at the end hold the final noise plus the margin, the special prime is as large as the
 * largest data prime. Bits left under the security bound go to the final primes (more
 * budget at no cost in speed) and the special prime. Null when the chain does not fit the
 * bound (`shortBits` says by how much) or its primes do not exist.
 */
function candidate(
  shapes: readonly LayerShape[],
  mode: Mode,
  fp: FixedPoint,
  security: SecurityBits,
  n: number,
  plainModulusBits: number[],
  marginBits: number,
): { params: BgvParameters; classifier: BgvClassifierPlan } | { shortBits: number } | null {
  const plainBits = Math.max(...plainModulusBits);
  const minBits = minDataBits(n, plainBits);
  const plans = planLayers(shapes, planActivations(shapes), n / 2);
  const chain: TraceChain = { drops: [], baseBits: [], specialBits: MAX_PRIME_BITS, open: true };
  const { noise } = trace(shapes, plans, structureOf(plans, n / 2), mode, fp, new NoiseModel(n, plainBits), chain);
  const drops = chain.drops.flat();
  const bound = MAX_MODULUS_BITS[security][n]!;
  const total = (base: readonly number[]) => [...base, ...drops].reduce((a, b) => a + b, 0) + Math.max(...base, ...drops);
  let base = primesToDrop(Math.ceil(noise + 1 + marginBits), minBits);
  if (total(base) > bound) return { shortBits: total(base) - bound };
  for (;;) {
    const i = base.indexOf(Math.min(...base));
    const grown = base.map((b, j) => (j === i ? b + 1 : b));
    if (base[i]! >= MAX_PRIME_BITS || total(grown) > bound) break;
    base = grown;
  }
  const special = Math.min(MAX_PRIME_BITS, bound - total(base) + Math.max(...base, ...drops));
  const params = checkBgvParameters({
    scheme: 'bgv',
    security,
    polyModulusDegree: n,
    coeffModulusBits: [...base, ...[...chain.drops].reverse().flat(), special],
    plainModulusBits,
    switchPrimes: chain.drops.map((d) => d.length),
  });
  try {
    realizeBgvPrimes(params);
  } catch (error) {
    if (error instanceof HeError && error.code === 'E_PARAMS') return null;
    throw error;
  }
  const classifier = planBgvClassifier(params, shapes, mode, fp);
  return classifier.predictedBudgetBits >= marginBits ? { params, classifier } : { shortBits: marginBits - classifier.predictedBudgetBits };
}

/**
 * The packed plan at the largest ring degree BGV plans: what fails there (a tensor too
 * large for one ciphertext, a residual add whose branches differ in layout) fails at every
 * ring, and is refused with the packing's own reason.
 */
function largestRingPlans(shapes: readonly LayerShape[]): LayerPlan[] {
  const n = Math.max(...BGV_RING_DEGREES);
  try {
    return planLayers(shapes, planActivations(shapes), n / 2);
  } catch (error) {
    // The planner already tried every ring: a larger one is no remedy here.
    if (error instanceof HeError && error.code === 'E_UNSUPPORTED') fail('E_UNSUPPORTED', `BGV (rings up to N=${n}): ${error.message.replace('choose a larger ring degree or ', '')}`);
    throw error;
  }
}

/**
 * The owner's BGV planner. From calibration data it fixes the input range and the scales,
 * bounds every layer's integers in the worst case from the quantized weights, and chooses
 * the plaintext moduli (several batching primes recombined by CRT when one is not enough),
 * the ring degree and the modulus chain that evaluate fastest (by the cost model) while
 * keeping a positive noise budget with `marginBits` to spare, within SEAL's bound for the
 * security level. Refuses with E_PARAMS, before anything is encrypted, a configuration
 * whose bound needs more than `maxModuli` moduli or whose noise no ring degree can hold.
 */
export function planBgv(layers: readonly Layer[], options: BgvPlanOptions): BgvPlan {
  const { security } = options;
  if (!(security in MAX_MODULUS_BITS)) fail('E_PARAMS', `security must be 128, 192 or 256 bits, got ${String(security)}`);
  const mode = checkBgvMode(options.mode ?? DEFAULT_MODE);
  const { maxModuli, marginBits, precision } = { ...DEFAULTS, ...options };
  if (!Number.isInteger(maxModuli) || maxModuli < 1 || maxModuli > MAX_MODULI) {
    fail('E_PARAMS', `maxModuli must be an integer from 1 to ${MAX_MODULI}, got ${maxModuli}`);
  }
  if (!Number.isFinite(marginBits) || marginBits < 0) fail('E_PARAMS', `marginBits must be a non-negative number, got ${marginBits}`);
  const shapes = shapesOf(layers);
  const largest = firstPlan(largestRingPlans(shapes));
  const range = calibrateRange(options.calibration, largest.kind === 'conv' ? largest.geometry.inputs : largest.inputs);
  const { fixedPoint, error } = fixedPointFor(layers, options.calibration, range, { precision, inputBits: options.inputBits, weightBits: options.weightBits });
  const bounds = layerBounds(layers, fixedPoint);
  const bound = Math.max(1, ...bounds.map((b) => b.bound));
  const boundBits = Math.log2(bound);
  if (plainBitsFor(bound, maxModuli, BGV_RING_DEGREES[0]) === null) {
    fail(
      'E_PARAMS',
      `the worst-case bound 2^${boundBits.toFixed(1)} needs more than ${maxModuli} CRT moduli of at most ` +
        `${maxPlainBits(BGV_RING_DEGREES[0])} bits: quantize with fewer bits or allow more moduli`,
    );
  }
  let best: { params: BgvParameters; classifier: BgvClassifierPlan } | undefined;
  let closest = Infinity;
  for (const n of BGV_RING_DEGREES) {
    for (let k = 1; k <= maxModuli; k++) {
      const plainBits = plainBitsFor(bound, k, n);
      if (plainBits === null) continue;
      let found: ReturnType<typeof candidate>;
      try {
        found = candidate(shapes, mode, fixedPoint, security, n, plainBits, marginBits);
      } catch (error) {
        // The layers do not fit N/2 slots (a dense layer's width, a convolution's maps): try a larger ring.
        if (error instanceof HeError && (error.code === 'E_SHAPE' || error.code === 'E_UNSUPPORTED')) break;
        throw error;
      }
      if (found === null) continue;
      if ('shortBits' in found) {
        closest = Math.min(closest, found.shortBits);
        continue;
      }
      if (best === undefined || found.classifier.estimatedMs < best.classifier.estimatedMs) best = found;
    }
  }
  if (best === undefined) {
    fail(
      'E_PARAMS',
      `no BGV parameters at ${security}-bit security hold the noise of this circuit with a worst-case bound of ` +
        `2^${boundBits.toFixed(1)} and ${marginBits} bits of margin${Number.isFinite(closest) ? ` (the closest candidate lacks ${closest} bits)` : ''}: ` +
        'quantize with fewer bits, allow more moduli or lower the security level',
    );
  }
  return { params: best.params, fixedPoint, classifier: best.classifier, bounds, boundBits, quantizationError: error };
}
