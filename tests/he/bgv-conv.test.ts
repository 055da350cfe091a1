import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BgvContext,
  BgvDeviceKeys,
  type BgvPlanOptions,
  bgvReferenceModel,
  type ConvLayer,
  EncryptedBgvClassifier,
  floatEvaluate,
  type Layer,
  mergeBgvResults,
  type OpCounts,
  planBgv,
  verifyBgvClassifier,
} from '../../src/he';
import { chooseFixedPoint, clampInput, constMultiplier, layerBounds } from '../../src/he/bgv/fixed-point';
import { foldModel } from '../../src/he/circuit';
import { nodeSeal } from '../../src/node/seal';
import { type BgvProtected, protectBgv } from './bgv-helpers';
import { argmax, makeConv, makeDense, makeImages, maxAbs, maxAbsDiff, yieldToEventLoop } from './helpers';

type Geometry = Omit<ConvLayer, 'weights' | 'bias' | 'inputOffset'>;




const CONV1: Geometry = { kind: 'conv', inChannels: 1, inHeight: 20, inWidth: 20, outChannels: 4, kernel: [5, 5], stride: [2, 2], pads: [0, 0, 0, 0] };
const CONV2: Geometry = { kind: 'conv', inChannels: 4, inHeight: 8, inWidth: 8, outChannels: 6, kernel: [3, 3], stride: [1, 1], pads: [0, 0, 0, 0] };

/** conv 1→4 5×5 stride 2 on 20×20 → x² → conv 4→6 3×3 on encrypted activations → x² → dense 216→10. */
const NET: Layer[] = [makeConv(CONV1, 1), { kind: 'poly', coeffs: [0, 0, 1] }, makeConv(CONV2, 2), { kind: 'poly', coeffs: [0, 0, 1] }, makeDense(216, 10, 3)];

/** conv 1→2 4×4 stride 2 on 14×14 → x²+x → [conv 2→2 3×3 pad 1] + skip → dense 72→10: a residual block. */
function residual(gain = 1): Layer[] {
  const block: Geometry = { kind: 'conv', inChannels: 2, inHeight: 6, inWidth: 6, outChannels: 2, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] };
  return [
    makeConv({ kind: 'conv', inChannels: 1, inHeight: 14, inWidth: 14, outChannels: 2, kernel: [4, 4], stride: [2, 2], pads: [0, 0, 0, 0] }, 4),
    { kind: 'poly', coeffs: [0, 1, 1] },
    makeConv(block, 5, gain),
    { kind: 'add', from: 1 },
    makeDense(72, 10, 6),
  ];
}
const RESIDUAL = residual();

const CALIBRATION = makeImages(400, 100, 7);
const RES_CALIBRATION = makeImages(196, 100, 9);

/**
 * The fixed point's precision: the planner quantizes with the fewest bits that keep the
 * scores within this fraction of the largest |score| on the calibration images (6 bits for
 * NET: N=16384 and three 30-bit moduli; 1% takes 7 bits, N=32768 and three 34-bit ones).
 */
const PRECISION = 0.05;
const OPTIONS: BgvPlanOptions = { security: 128, calibration: CALIBRATION, precision: PRECISION };
const RES_OPTIONS: BgvPlanOptions = { security: 128, calibration: RES_CALIBRATION, precision: PRECISION };

/** The float model's largest |score| on the calibration images: what score errors are relative to. */
function largest(layers: readonly Layer[], calibration: readonly Float64Array[]): number {
  return Math.max(...calibration.map((x) => maxAbs(floatEvaluate(layers, x))));
}
const LARGEST = largest(NET, CALIBRATION);
const RES_LARGEST = largest(RESIDUAL, RES_CALIBRATION);

/**
 * Test images whose two best float scores are further apart than twice the fixed-point
 * tolerance, so the encrypted label must be the float model's (random weights leave many
 * images nearly tied).
 */
function clearImages(layers: readonly Layer[], pixels: number, tolerance: number, seed: number): Float64Array[] {
  const clear = makeImages(pixels, 30, seed).filter((x) => {
    const [a, b] = [...floatEvaluate(layers, x)].sort((u, v) => v - u);
    return a! - b! > 2 * tolerance;
  });
  if (clear.length < 2) throw new Error('fewer than two test images with a clear label');
  return clear.slice(0, 2);
}
const INPUTS = clearImages(NET, 400, 2 * PRECISION * LARGEST, 8);
const RES_INPUTS = clearImages(RESIDUAL, 196, 2 * PRECISION * RES_LARGEST, 10);

/** The float model's scores on the input clamped as the device clamps it. */
function floats(layers: readonly Layer[], x: Float64Array, plan: ReturnType<typeof planBgv>): Float64Array {
  return floatEvaluate(layers, clampInput(plan.fixedPoint, x));
}

function times(counts: OpCounts, k: number): OpCounts {
  return Object.fromEntries(Object.entries(counts).map(([key, v]) => [key, v * k])) as unknown as OpCounts;
}

describe('BGV convolutions: the plan and the exact integer reference', () => {
  const plan = planBgv(NET, OPTIONS);
  const resPlan = planBgv(RESIDUAL, RES_OPTIONS);

  it('plans the CKKS packing: an im2col first layer, a convolution on encrypted activations, a dense layer reading its scattered output', () => {
    expect(plan.classifier.plans.map((p) => p.kind)).toEqual(['conv', 'poly', 'conv-rot', 'poly', 'dense']);
    expect(plan.classifier.plans[4]).toMatchObject({ layout: 'scattered' });
    expect(plan.classifier.inputs).toBe(400);
    expect(plan.classifier.depth).toBe(5);
    expect(plan.fixedPoint.weightScales).toHaveLength(3);
    expect(plan.quantizationError).toBeLessThanOrEqual(PRECISION);
    // 25 planes, 4 channel differences × 9 offsets, the dense layer's diagonals.
    expect(plan.classifier.counts.ctMults).toBe(25 + 1 + 36 + 1 + 16);
    expect(plan.classifier.lowerBoundMults).toBeGreaterThan(0);
  });

  it('the integer reference matches the float model to the fixed point’s precision, and stays within the worst-case bounds', () => {
    const bounds = layerBounds(NET, plan.fixedPoint);
    expect(bounds.map((b) => b.kind)).toEqual(['conv', 'poly', 'conv', 'poly', 'dense']);
    expect(bounds[4]!.scale).toBe(plan.classifier.outputScale);
    const reference = bgvReferenceModel(plan.classifier, NET);
    const [lo, hi] = plan.fixedPoint.inputRange;
    for (const x of [new Float64Array(400).fill(hi), new Float64Array(400).fill(lo), ...INPUTS]) {
      for (const v of reference(x)) expect(Math.abs(Number(v))).toBeLessThanOrEqual(bounds[4]!.bound);
    }
    for (const x of INPUTS) {
      const float = floats(NET, x, plan);
      const got = Array.from(reference(x), (v) => Number(v) / plan.classifier.outputScale);
      expect(maxAbsDiff(got, float)).toBeLessThan(2 * PRECISION * LARGEST);
      expect(argmax(got)).toBe(argmax(float));
    }
  });

  it('a residual add: the convolution’s weight scale makes its output scale an exact integer multiple of the skip’s', () => {
    const scales = layerBounds(RESIDUAL, resPlan.fixedPoint).map((b) => b.scale);
    const k = constMultiplier(1, scales[1]!, scales[2]!);
    expect(k).toBeGreaterThan(1);
    expect(Math.abs((k * scales[1]!) / scales[2]! - 1)).toBeLessThan(1e-15);
    expect(resPlan.classifier.depth).toBe(4);
    const reference = bgvReferenceModel(resPlan.classifier, RESIDUAL);
    for (const x of RES_INPUTS) {
      const float = floats(RESIDUAL, x, resPlan);
      const got = Array.from(reference(x), (v) => Number(v) / resPlan.classifier.outputScale);
      expect(maxAbsDiff(got, float)).toBeLessThan(2 * PRECISION * RES_LARGEST);
      expect(argmax(got)).toBe(argmax(float));
    }
  });

  it('refuses, with the reason and the remedy, what BGV cannot evaluate', () => {
    // The skip would need dividing: its scale is above the convolution's sum's at any integer multiple.
    const huge = residual(1e9);
    expect(() => chooseFixedPoint(foldModel(huge), [0, 1], 4, 4)).toThrow(
      /layer 3: the residual add cannot align its branches in BGV: layer 1's values have scale 2\^[\d.]+, the convolution's sum only 2\^-?[\d.]+, and BGV can multiply the skip by an integer but not divide it: quantize with more bits/,
    );
    expect(() => planBgv(huge, { ...RES_OPTIONS, inputBits: 4, weightBits: 4 })).toThrow(/cannot align its branches in BGV/);
    // BGV's activations do not span ciphertexts: none fits even the largest ring.
    const wide: Layer[] = [makeConv({ ...CONV1, inHeight: 200, inWidth: 200 }, 1), { kind: 'poly', coeffs: [0, 0, 1] }, makeConv({ ...CONV2, inHeight: 98, inWidth: 98, outChannels: 4 }, 2), makeDense(4 * 96 * 96, 10, 3)];
    expect(() => planBgv(wide, { ...OPTIONS, calibration: makeImages(40000, 2, 1) })).toThrow(
      /^BGV \(rings up to N=32768\): layer 2: 4 input and 4 output maps of 98×98 do not fit one ciphertext of 16384 slots \(spanning several is CKKS only\): split after this layer$/,
    );
    // Branches in different slots, and plain weights.
    const strided = [...RESIDUAL];
    strided[2] = makeConv({ kind: 'conv', inChannels: 2, inHeight: 6, inWidth: 6, outChannels: 8, kernel: [3, 3], stride: [2, 2], pads: [1, 1, 0, 0] }, 5);
    expect(() => planBgv(strided, RES_OPTIONS)).toThrow(/^BGV \(rings up to N=32768\): layer 3: layer 1's values sit in other slots than the convolution's before the add/);
    expect(() => planBgv(NET, { ...OPTIONS, mode: { weights: 'plain', input: 'encrypted' } })).toThrow(/BGV encrypts the weights always; plain weights are a CKKS mode/);
    expect(() => planBgv(NET, { ...OPTIONS, calibration: makeImages(399, 2, 1) })).toThrow(/calibration vector 0 has 399 values, the classifier expects 400/);
  });
});

describe('BGV: a two-convolution network encrypted from its first layer, 128-bit', () => {
  let p: BgvProtected;
  let r: BgvProtected;
  beforeAll(async () => {
    p = await protectBgv(NET, OPTIONS);
    r = await protectBgv(RESIDUAL, { ...RES_OPTIONS, mode: { weights: 'encrypted', input: 'plain' } });
  });
  afterAll(() => {
    p?.dispose();
    r?.dispose();
  });

  it('the decrypted integers equal the integer reference exactly; the scores match the float model; counts are the plan’s', async () => {
    const reference = bgvReferenceModel(p.plan, NET);
    const k = p.ctx.params.plainModulusBits.length;
    const ms: number[] = [];
    for (const x of INPUTS.slice(0, 1)) {
      await yieldToEventLoop();
      const t0 = performance.now();
      const { result, counts } = p.classifier.evaluate(x);
      ms.push(performance.now() - t0);
      const got = p.decrypt(result);
      expect(got.integers).toEqual(reference(x));
      expect(got.noiseBudgetBits).toBeGreaterThan(0);
      const float = floatEvaluate(NET, clampInput(p.plan.fixedPoint, x));
      expect(maxAbsDiff(got.scores, float)).toBeLessThan(2 * PRECISION * LARGEST);
      expect(argmax(got.scores)).toBe(argmax(float));
      expect(counts).toEqual(times(p.plan.counts, k));
    }
    console.log(`BGV two-conv network: N=${p.ctx.params.polyModulusDegree}, ${k} CRT moduli, ${ms.map((t) => t.toFixed(0)).join(', ')} ms per image`);
  });

  it('components evaluated apart (the kiosk’s workers) merge into the same result', async () => {
    const runtime = await nodeSeal();
    const k = p.ctx.params.plainModulusBits.length;
    const x = INPUTS[1]!;
    const parts = [0, 1].map((share) => {
      const ctx = BgvContext.create(
        runtime,
        p.ctx.params,
        Array.from({ length: k }, (_, i) => i).filter((i) => i % 2 === share),
      );
      const keys = BgvDeviceKeys.load(ctx, p.owner.deviceKeyBytes());
      const classifier = EncryptedBgvClassifier.load(ctx, keys, p.classifierBytes);
      try {
        return classifier.evaluate(x).result;
      } finally {
        classifier.dispose();
        keys.dispose();
        ctx.dispose();
      }
    });
    await yieldToEventLoop();
    expect(p.decrypt(mergeBgvResults(parts, true)).integers).toEqual(bgvReferenceModel(p.plan, NET)(x));
  });

  it('a residual block, the device’s image in plaintext (ct(W)×pt(x)): exact against the integer reference, the float model’s label; protect’s check passes', async () => {
    const reference = bgvReferenceModel(r.plan, RESIDUAL);
    for (const x of RES_INPUTS) {
      await yieldToEventLoop();
      const { result, counts } = r.classifier.evaluate(x);
      const got = r.decrypt(result);
      expect(got.integers).toEqual(reference(x));
      expect(got.noiseBudgetBits).toBeGreaterThan(0);
      const float = floatEvaluate(RESIDUAL, clampInput(r.plan.fixedPoint, x));
      expect(maxAbsDiff(got.scores, float)).toBeLessThan(2 * PRECISION * RES_LARGEST);
      expect(argmax(got.scores)).toBe(argmax(float));
      expect(counts).toEqual(times(r.plan.counts, r.ctx.params.plainModulusBits.length));
    }
    // protect's own check before it publishes a bundle.
    expect(verifyBgvClassifier(r.ctx, r.owner, r.classifierBytes, RESIDUAL, [RES_INPUTS[0]!]).noiseBudgetBits).toBeGreaterThan(0);
  });
});
