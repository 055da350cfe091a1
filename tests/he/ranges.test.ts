import { describe, expect, it } from 'vitest';
import { floatEvaluate, type Layer, planParameters } from '../../src/he';
import { calibrateRanges, integerBitsFor } from '../../src/he/ranges';
import { makeHead, makeInputs, maxAbs, maxAbsDiff, protect } from './helpers';

describe('calibrated ranges', () => {
  const layers = makeHead([64, 32, 10], 'realistic', 3);
  const inputs = makeInputs(64, 20, 'realistic', 4);

  it('measure every slot of the packed plan, the scores within them', () => {
    const ranges = calibrateRanges(layers, 4096, inputs);
    const scores = Math.max(...inputs.map((x) => maxAbs(floatEvaluate(layers, x))));
    expect(ranges.inputs).toBe(20);
    expect(ranges.outputMax).toBeCloseTo(scores, 9);
    expect(ranges.resultMax).toBeGreaterThanOrEqual(ranges.outputMax);
    expect(ranges.layerMax).toHaveLength(3);
    expect(ranges.layerMax.every((m) => m > 0)).toBe(true);
  });

  it('turn a range into integer bits with a ×4 margin and the sign, and refuse nonsense', () => {
    expect(integerBitsFor(0.5)).toBe(3);
    expect(integerBitsFor(30)).toBe(8);
    expect(integerBitsFor(32)).toBe(8);
    expect(integerBitsFor(33)).toBe(9);
    expect(integerBitsFor(30, 0)).toBe(6);
    expect(() => integerBitsFor(Number.NaN)).toThrow(/finite non-negative/);
    expect(() => calibrateRanges(layers, 4096, [])).toThrow(/at least one real input/);
  });
});

describe('precision traded for the smallest ring', () => {
  it('keeps depth 5 (the LoLa network) at N=8192 with the most precision that fits, never below the floor', () => {
    const exact = planParameters({ scheme: 'ckks', security: 128, depth: 5, precisionBits: 25, integerBits: 8 });
    expect(exact.polyModulusDegree).toBe(16384);
    const fitted = planParameters({ scheme: 'ckks', security: 128, depth: 5, precisionBits: 25, minPrecisionBits: 12, integerBits: 8 });
    expect(fitted.polyModulusDegree).toBe(8192);
    expect(fitted.coeffModulusBits).toEqual([35, 27, 27, 27, 27, 27, 47]);
    expect(fitted.scaleBits).toBe(27);
    // Depth 3 already fits at full precision: nothing changes.
    expect(planParameters({ scheme: 'ckks', security: 128, depth: 3, precisionBits: 25, minPrecisionBits: 12 })).toEqual(
      planParameters({ scheme: 'ckks', security: 128, depth: 3, precisionBits: 25 }),
    );
    expect(() => planParameters({ scheme: 'ckks', security: 128, depth: 5, precisionBits: 25, minPrecisionBits: 26 })).toThrow(/minPrecisionBits must be an integer from 1 to precisionBits/);
  });

  it('refuses a range no prime can hold', () => {
    expect(() => planParameters({ scheme: 'ckks', security: 128, depth: 3, precisionBits: 25, integerBits: integerBitsFor(2 ** 30) })).toThrow(/needs 68-bit primes; SEAL allows 60/);
  });
});

/** A head whose scores reach about 3·10⁴: more than a first prime sized for 2^8 can hold. */
function loudHead(): Layer[] {
  const layers = makeHead([64, 10], 'realistic', 9);
  const dense = layers[0]!;
  if (dense.kind !== 'dense') throw new Error('unreachable');
  return [{ ...dense, weights: Float64Array.from(dense.weights, (w) => w * 2e4) }];
}

describe('a first prime sized from the calibrated range', () => {
  it('decrypts the loud head right, where one sized too small wraps around to garbage', async () => {
    const layers = loudHead();
    const inputs = makeInputs(64, 8, 'realistic', 10);
    const scores = Math.max(...inputs.map((x) => maxAbs(floatEvaluate(layers, x))));
    expect(scores).toBeGreaterThan(1e4);
    const run = async (integerBits: number) => {
      const p = await protect(layers, 128, undefined, 20, integerBits);
      try {
        return inputs.map((x) => maxAbsDiff(p.decrypt(p.classifier.evaluate(x).result), floatEvaluate(layers, x)));
      } finally {
        p.dispose();
      }
    };
    const ranges = calibrateRanges(layers, 4096, inputs);
    const sized = await run(integerBitsFor(ranges.resultMax));
    expect(Math.max(...sized)).toBeLessThan(1e-3 * scores);
    const tooSmall = await run(8);
    expect(Math.max(...tooSmall)).toBeGreaterThan(0.1 * scores);
  });
});
