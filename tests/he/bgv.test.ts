import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BgvContext,
  BgvDeviceKeys,
  BgvOwnerKeys,
  bgvReferenceModel,
  checkBgvParameters,
  containerScheme,
  decryptBgvResult,
  DeviceKeys,
  EncryptedBgvClassifier,
  EncryptedClassifier,
  floatEvaluate,
  mergeBgvResults,
  planBgv,
  planParameters,
} from '../../src/he';
import { calibrateRange, clampInput, layerBounds, quantizeInput } from '../../src/he/bgv/fixed-point';
import { isPrime, realizeBgvPrimes } from '../../src/he/bgv/primes';
import { readContainer, writeContainer } from '../../src/he/container';
import { nodeSeal } from '../../src/node/seal';
import { type BgvProtected, protectBgv } from './bgv-helpers';
import { codeOf, makeHead, makeInputs, maxAbs, maxAbsDiff, messageOf, protect, type Protected, rng } from './helpers';

/** Rewrites a container with a changed header or sections (a forgery with valid checksums). */
function forge<H extends object>(bytes: Uint8Array, kind: Parameters<typeof readContainer>[1], change: (header: H, sections: Uint8Array[]) => void): Uint8Array {
  const { header, sections } = readContainer<H & { sections?: unknown }>(bytes, kind);
  const copy = sections.map((s) => s.slice());
  delete header.sections;
  change(header, copy);
  return writeContainer(kind, header, copy);
}

const HEAD = makeHead([64, 32, 10], 'realistic', 7);
const CALIBRATION = makeInputs(64, 200, 'realistic', 8);
const INPUTS = makeInputs(64, 6, 'realistic', 9);
/** The largest |score| of the float model on the test inputs: what score errors are relative to. */
const LARGEST = Math.max(...INPUTS.map((x) => maxAbs(floatEvaluate(HEAD, x))));

describe('BGV primes', () => {
  it('Miller–Rabin is exact on known primes and composites', () => {
    for (const p of [2n, 3n, 65537n, 786433n, 2n ** 61n - 1n, 1152921504606830593n]) expect(isPrime(p)).toBe(true);
    for (const c of [1n, 561n, 65535n, 3215031751n, 2n ** 61n + 1n, 786433n * 65537n]) expect(isPrime(c)).toBe(false);
  });

  it('every data prime is ≡ 1 mod 2N·t, so correction factors stay 1; all primes distinct and of their size', () => {
    const params = planBgv(HEAD, { security: 128, calibration: CALIBRATION }).params;
    const components = realizeBgvPrimes(params);
    expect(realizeBgvPrimes(params)).toEqual(components);
    const twoN = BigInt(2 * params.polyModulusDegree);
    const bits = (q: bigint) => q.toString(2).length;
    expect(components.map((c) => bits(c.plain))).toEqual(params.plainModulusBits);
    for (const { plain, coeff } of components) {
      expect(plain % twoN).toBe(1n);
      expect(coeff.map(bits)).toEqual(params.coeffModulusBits);
      coeff.slice(0, -1).forEach((q) => expect(q % (twoN * plain)).toBe(1n));
      expect(coeff[coeff.length - 1]! % twoN).toBe(1n);
      expect(new Set([plain, ...coeff]).size).toBe(coeff.length + 1);
      [plain, ...coeff].forEach((q) => expect(isPrime(q)).toBe(true));
    }
  });
});

describe('BGV fixed point and worst-case bounds', () => {
  const plan = planBgv(HEAD, { security: 128, calibration: CALIBRATION });

  it('the calibrated range holds every calibration value and zero; the device clamps to it', () => {
    const [lo, hi] = calibrateRange(CALIBRATION, 64);
    expect(lo).toBe(0);
    expect(hi).toBe(Math.max(...CALIBRATION.flatMap((x) => Array.from(x))));
    const x = Float64Array.from({ length: 64 }, (_, i) => (i === 0 ? 10 * hi : i === 1 ? -5 : hi / 2));
    const q = quantizeInput(plan.fixedPoint, x);
    expect(q[0]).toBe(Math.round(hi * plan.fixedPoint.inputScale));
    expect(q[1]).toBe(0);
    expect(Array.from(clampInput(plan.fixedPoint, x).subarray(0, 3))).toEqual([hi, 0, hi / 2]);
  });

  it('no integer of the packed plan exceeds its layer’s bound, and the bounds fit the plaintext primes', () => {
    const bounds = layerBounds(HEAD, plan.fixedPoint);
    expect(bounds.map((b) => b.kind)).toEqual(['dense', 'poly', 'dense']);
    expect(bounds[2]!.scale).toBe(plan.classifier.outputScale);
    const product = realizeBgvPrimes(plan.params).reduce((a, c) => a * c.plain, 1n);
    expect(product).toBeGreaterThan(2n * BigInt(Math.ceil(Math.max(...bounds.map((b) => b.bound)))));
    const reference = bgvReferenceModel(plan.classifier, HEAD);
    // Worst cases: inputs at the ends of the range, and random ones.
    const [lo, hi] = plan.fixedPoint.inputRange;
    const extremes = [new Float64Array(64).fill(hi), new Float64Array(64).fill(lo), ...makeInputs(64, 20, 'realistic', 4)];
    for (const x of extremes) {
      for (const v of reference(x)) expect(Math.abs(Number(v))).toBeLessThanOrEqual(bounds[2]!.bound);
    }
  });

  it('quantizes with the fewest bits that keep the scores within 1% on the calibration data', () => {
    expect(plan.quantizationError).toBeLessThanOrEqual(0.01);
    const coarser = planBgv(HEAD, { security: 128, calibration: CALIBRATION, precision: 0.05 });
    expect(coarser.fixedPoint.inputScale).toBeLessThan(plan.fixedPoint.inputScale);
    expect(coarser.boundBits).toBeLessThan(plan.boundBits);
    const reference = bgvReferenceModel(plan.classifier, HEAD);
    for (const x of INPUTS) {
      const got = reference(x).map((v) => Number(v) / plan.classifier.outputScale);
      expect(maxAbsDiff(got, floatEvaluate(HEAD, clampInput(plan.fixedPoint, x)))).toBeLessThan(0.03 * LARGEST);
    }
  });
});

describe('the BGV planner', () => {
  it('plans every security level within SEAL’s bound, keeping the margin', () => {
    for (const security of [128, 192, 256] as const) {
      const { params, classifier, boundBits } = planBgv(HEAD, { security, calibration: CALIBRATION });
      expect(checkBgvParameters(params)).toEqual(params);
      expect(classifier.predictedBudgetBits).toBeGreaterThanOrEqual(6);
      expect(params.plainModulusBits.reduce((a, b) => a + b - 1, 0)).toBeGreaterThan(boundBits + 1);
      expect(classifier.depth).toBe(3);
    }
  });

  it('refuses overflowing configurations before any encryption, with E_PARAMS', async () => {
    const refused = (options: object) => messageOf(() => planBgv(HEAD, { security: 128, calibration: CALIBRATION, ...options }));
    expect(refused({ maxModuli: 1 })).toMatch(/worst-case bound 2\^\d+\.\d needs more than 1 CRT moduli of at most \d+ bits/);
    expect(refused({ inputBits: 30, weightBits: 30 })).toMatch(/needs more than 4 CRT moduli/);
    expect(refused({ marginBits: 900 })).toMatch(/no BGV parameters at 128-bit security hold the noise/);
    expect(refused({ inputBits: 0 })).toMatch(/inputBits must be an integer from 1 to 40/);
    expect(refused({ maxModuli: 9 })).toMatch(/maxModuli must be an integer from 1 to 8/);
    expect(refused({ precision: 1e-12 })).toMatch(/no quantization up to 16 bits keeps the scores within 1e-12/);
    for (const options of [{ maxModuli: 1 }, { inputBits: 30, weightBits: 30 }, { marginBits: 900 }, { calibration: [] }, { security: 100 }]) {
      expect(codeOf(() => planBgv(HEAD, { security: 128, calibration: CALIBRATION, ...options } as never))).toBe('E_PARAMS');
    }
    expect(codeOf(() => planBgv(HEAD, { security: 128, calibration: [new Float64Array(63)] }))).toBe('E_SHAPE');
    expect(codeOf(() => planBgv(HEAD, { security: 128, calibration: CALIBRATION, mode: { weights: 'plain', input: 'encrypted' } }))).toBe('E_UNSUPPORTED');
    expect(codeOf(() => planParameters({ scheme: 'bgv', security: 128, depth: 3, precisionBits: 25 }))).toBe('E_UNSUPPORTED');
  });

  it('refuses invalid parameters', async () => {
    const params = planBgv(HEAD, { security: 128, calibration: CALIBRATION }).params;
    const bad = [
      { ...params, scheme: 'ckks' },
      { ...params, polyModulusDegree: 12288 },
      { ...params, coeffModulusBits: [60, 60, 60, 60, 60, 60, 60, 60] },
      { ...params, plainModulusBits: [8] },
      { ...params, plainModulusBits: Array(9).fill(30) },
      { ...params, switchPrimes: [1, 1, 3] },
      { ...params, switchPrimes: [1, 0, 1] },
      null,
    ];
    for (const p of bad) expect(codeOf(() => checkBgvParameters(p))).toBe('E_PARAMS');
  });
});

describe('BGV under encryption: a small head at 128-bit', () => {
  let p: BgvProtected;
  let q: BgvProtected;
  let ckks: Protected;
  beforeAll(async () => {
    p = await protectBgv(HEAD, { security: 128, calibration: CALIBRATION });
    q = await protectBgv(HEAD, { security: 128, calibration: CALIBRATION, mode: { weights: 'encrypted', input: 'plain' } });
    ckks = await protect(HEAD);
  });
  afterAll(() => {
    p?.dispose();
    q?.dispose();
    ckks?.dispose();
  });

  it('both input modes equal the integer reference exactly, and the float model to the quantization’s precision', () => {
    for (const r of [p, q]) {
      const reference = bgvReferenceModel(r.plan, HEAD);
      for (const x of INPUTS) {
        const got = r.decrypt(r.classifier.evaluate(x).result);
        expect(got.integers).toEqual(reference(x));
        expect(got.noiseBudgetBits).toBeGreaterThan(0);
        expect(maxAbsDiff(got.scores, floatEvaluate(HEAD, clampInput(r.plan.fixedPoint, x)))).toBeLessThan(0.03 * LARGEST);
      }
    }
  });

  it('clamps inputs outside the calibrated range; an all-zero input yields the bias path', () => {
    const x = INPUTS[0]!.map((v, i) => (i % 2 ? 100 * v : -v));
    for (const r of [p, q]) {
      const got = r.decrypt(r.classifier.evaluate(x).result).integers;
      expect(got).toEqual(bgvReferenceModel(r.plan, HEAD)(clampInput(r.plan.fixedPoint, x)));
      const zero = new Float64Array(64);
      expect(r.decrypt(r.classifier.evaluate(zero).result).integers).toEqual(bgvReferenceModel(r.plan, HEAD)(zero));
    }
  });

  it('components evaluated apart (one per worker) merge into the same result', async () => {
    const runtime = await nodeSeal();
    const k = p.ctx.params.plainModulusBits.length;
    expect(k).toBeGreaterThan(1);
    const parts = Array.from({ length: k }, (_, i) => {
      const ctx = BgvContext.create(runtime, p.ctx.params, [i]);
      const keys = BgvDeviceKeys.load(ctx, p.owner.deviceKeyBytes());
      const classifier = EncryptedBgvClassifier.load(ctx, keys, p.classifierBytes);
      try {
        return classifier.evaluate(INPUTS[1]!).result;
      } finally {
        classifier.dispose();
        keys.dispose();
        ctx.dispose();
      }
    });
    const merged = mergeBgvResults([...parts].reverse());
    expect(p.decrypt(merged).integers).toEqual(bgvReferenceModel(p.plan, HEAD)(INPUTS[1]!));
    expect(messageOf(() => p.decrypt(parts[0]!))).toMatch(/merge the partial results first/);
    expect(codeOf(() => mergeBgvResults([parts[0]!, parts[0]!]))).toBe('E_CORRUPT');
    const foreign = forge<{ keyId: string }>(parts[1]!, 'result', (h) => {
      h.keyId = q.owner.keyId;
    });
    expect(codeOf(() => mergeBgvResults([parts[0]!, foreign]))).toBe('E_KEYS');
  });

  it('refuses containers of the other scheme and of other parameters', async () => {
    expect(containerScheme(p.owner.deviceKeyBytes(), 'deviceKeys')).toBe('bgv');
    expect(containerScheme(ckks.classifierBytes, 'classifier')).toBe('ckks');
    expect(codeOf(() => EncryptedBgvClassifier.load(p.ctx, p.keys, ckks.classifierBytes))).toBe('E_PARAMS');
    expect(codeOf(() => BgvDeviceKeys.load(p.ctx, ckks.owner.deviceKeyBytes()))).toBe('E_PARAMS');
    expect(codeOf(() => EncryptedClassifier.load(ckks.he, ckks.keys, p.classifierBytes))).toBe('E_PARAMS');
    expect(codeOf(() => DeviceKeys.load(ckks.he, p.owner.deviceKeyBytes()))).toBe('E_PARAMS');
    expect(codeOf(() => decryptBgvResult(p.ctx, p.owner, ckks.classifier.evaluate(INPUTS[0]!).result))).toBe('E_PARAMS');
    if (JSON.stringify(q.ctx.params) !== JSON.stringify(p.ctx.params)) {
      expect(codeOf(() => BgvDeviceKeys.load(q.ctx, p.owner.deviceKeyBytes()))).toBe('E_PARAMS');
      expect(codeOf(() => EncryptedBgvClassifier.load(q.ctx, q.keys, p.classifierBytes))).toBe('E_PARAMS');
    }
    const otherParams = forge<{ params: { coeffModulusBits: number[] } }>(p.classifierBytes, 'classifier', (h) => {
      h.params.coeffModulusBits[0]! -= 1;
    });
    expect(messageOf(() => EncryptedBgvClassifier.load(p.ctx, p.keys, otherParams))).toMatch(/encrypted for BGV N=.*, not BGV N=/);
  });

  it('refuses keys and results of another key pair', async () => {
    const other = BgvOwnerKeys.generate(p.ctx, p.plan);
    const otherKeys = BgvDeviceKeys.load(p.ctx, other.deviceKeyBytes());
    try {
      expect(codeOf(() => EncryptedBgvClassifier.load(p.ctx, otherKeys, p.classifierBytes))).toBe('E_KEYS');
      const result = p.classifier.evaluate(INPUTS[0]!).result;
      expect(codeOf(() => decryptBgvResult(p.ctx, other, result))).toBe('E_KEYS');
      expect(codeOf(() => BgvOwnerKeys.load(p.ctx, p.owner.secretKeyBytes(), other.deviceKeyBytes()))).toBe('E_KEYS');
      // A result relabelled with the other key id decrypts to noise: its two rows disagree.
      const relabelled = forge<{ keyId: string }>(result, 'result', (h) => {
        h.keyId = other.keyId;
      });
      expect(messageOf(() => decryptBgvResult(p.ctx, other, relabelled))).toMatch(/no noise budget left|two different rows/);
      const restored = BgvOwnerKeys.load(p.ctx, p.owner.secretKeyBytes(), p.owner.deviceKeyBytes());
      expect(decryptBgvResult(p.ctx, restored, result).integers).toEqual(p.decrypt(result).integers);
      restored.dispose();
    } finally {
      otherKeys.dispose();
      other.dispose();
    }
  });

  it('refuses truncated, corrupted and forged containers without aborting SEAL', async () => {
    const bytes = p.classifierBytes;
    const flip = (at: number) => {
      const copy = bytes.slice();
      copy[at]! ^= 0x40;
      return copy;
    };
    const load = (b: Uint8Array) => () => EncryptedBgvClassifier.load(p.ctx, p.keys, b);
    expect(codeOf(load(bytes.subarray(0, bytes.length - 7)))).toBe('E_TRUNCATED');
    expect(codeOf(load(flip(20)))).toBe('E_CORRUPT');
    expect(codeOf(load(flip(bytes.length - 5000)))).toBe('E_CORRUPT');
    const version = bytes.slice();
    version[4] = 2;
    expect(codeOf(load(version))).toBe('E_VERSION');
    expect(codeOf(() => BgvDeviceKeys.load(p.ctx, p.owner.deviceKeyBytes().subarray(0, 1000)))).toBe('E_TRUNCATED');
    const scale = forge<{ fixedPoint: { inputScale: number } }>(bytes, 'classifier', (h) => {
      h.fixedPoint.inputScale = -1;
    });
    expect(messageOf(load(scale))).toMatch(/invalid fixed-point encoding/);
    const missing = forge(bytes, 'classifier', (_h, s) => {
      s.pop();
    });
    expect(messageOf(load(missing))).toMatch(/weight sections, its plan needs/);
    const result = p.classifier.evaluate(INPUTS[0]!).result;
    // A result ciphertext where a fresh weight belongs: valid SEAL, wrong level.
    const misplaced = forge(bytes, 'classifier', (_h, s) => {
      s[0] = readContainer(result, 'result').sections[0]!.slice();
    });
    expect(messageOf(load(misplaced))).toMatch(/weights are fresh ciphertexts at level/);
    const garbage = forge(bytes, 'classifier', (_h, s) => {
      const r = rng(3);
      s[1] = Uint8Array.from(s[1]!, () => r() * 256);
    });
    expect(codeOf(load(garbage))).toBe('E_CORRUPT');
    // Components swapped: each prime set differs, so SEAL's own checks refuse them.
    const swapped = forge(result, 'result', (_h, s) => {
      [s[0], s[1]] = [s[1]!, s[0]!];
    });
    expect(codeOf(() => p.decrypt(swapped))).toBe('E_CORRUPT');
    const outputs = forge<{ outputs: number }>(result, 'result', (h) => {
      h.outputs = 11;
    });
    expect(codeOf(() => p.decrypt(outputs))).toBe('E_CORRUPT');
    const moduli = forge<{ moduli: number[] }>(result, 'result', (h) => {
      h.moduli = [1, 0];
    });
    expect(codeOf(() => p.decrypt(moduli))).toBe('E_CORRUPT');
    expect(p.decrypt(result).integers).toEqual(bgvReferenceModel(p.plan, HEAD)(INPUTS[0]!));
  });

  it('wrong inputs, use after dispose, and no heap growth across loads and evaluations', async () => {
    expect(messageOf(() => p.classifier.evaluate(new Float64Array(63)))).toMatch(/63 values, the classifier expects 64/);
    expect(codeOf(() => p.classifier.evaluate(INPUTS[0]!.map((v, i) => (i === 3 ? NaN : v))))).toBe('E_SHAPE');
    const runtime = await nodeSeal();
    const again = () => {
      const c = EncryptedBgvClassifier.load(p.ctx, p.keys, p.classifierBytes);
      c.evaluate(INPUTS[2]!);
      c.dispose();
      return c;
    };
    again();
    const before = runtime.heapBytes();
    for (let i = 0; i < 3; i++) again();
    expect(runtime.heapBytes()).toBe(before);
    expect(codeOf(() => again().evaluate(INPUTS[0]!))).toBe('E_DISPOSED');
  });
});
