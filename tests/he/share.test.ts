import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DensePlan, floatEvaluate, type Mode, planClassifier, referenceModel, shareRanges } from '../../src/he';
import { argmax, makeHead, makeInputs, maxAbs, maxAbsDiff, protect, type Protected, yieldToEventLoop } from './helpers';

const MNIST = [1600, 512, 10];

describe('shareRanges', () => {
  const plan = (giant: number, baby: number) => ({ giant, baby }) as DensePlan;

  it('covers every giant-step group exactly once, lower ranges getting more groups', () => {
    for (const count of [1, 2, 3, 4, 7]) {
      for (const both of [true, false]) {
        const ranges = shareRanges(plan(16, 16), count, both);
        expect(ranges.length).toBe(count);
        expect(ranges[0]![0]).toBe(0);
        expect(ranges[ranges.length - 1]![1]).toBe(16);
        ranges.forEach(([lo, hi], i) => {
          expect(hi).toBeGreaterThan(lo);
          if (i > 0) expect(lo).toBe(ranges[i - 1]![1]);
          if (i > 0) expect(hi - lo).toBeLessThanOrEqual(ranges[i - 1]![1] - ranges[i - 1]![0]);
        });
      }
    }
    // The MNIST head's first layer, ct×ct: the upper share also turns the sum down to
    // group 0, so it gets 7 groups of products against the lower share's 9.
    expect(shareRanges(plan(16, 16), 2, true)).toEqual([
      [0, 9],
      [9, 16],
    ]);
  });

  it('uses no more shares than there are groups, and refuses a bad count', () => {
    expect(shareRanges(plan(2, 16), 4, true)).toEqual([
      [0, 1],
      [1, 2],
    ]);
    expect(() => shareRanges(plan(16, 16), 0, true)).toThrow(/shares must be a positive integer, got 0/);
    expect(() => shareRanges(plan(16, 16), 1.5, true)).toThrow(/positive integer/);
  });
});

const MODES: [string, Mode][] = [
  ['ct(W)×ct(x)', { weights: 'encrypted', input: 'encrypted' }],
  ['ct(W)×pt(x)', { weights: 'encrypted', input: 'plain' }],
];

for (const [name, mode] of MODES) {
  describe(`an evaluation shared by several workers, MNIST head, ${name}, 128-bit`, () => {
    let p: Protected;
    const layers = makeHead(MNIST, 'realistic', 41);
    beforeAll(async () => {
      p = await protect(layers, 128, mode);
    });
    afterAll(() => p?.dispose());

    it('shares of 1, 2 and 3 workers add up to the reference and the float model', async () => {
      const referenceOf = referenceModel(layers, p.he.slots);
      for (const [i, x] of makeInputs(1600, 4, 'realistic', 42).entries()) {
        const count = 1 + (i % 3);
        await yieldToEventLoop();
        const partials = Array.from({ length: count }, (_, k) => p.classifier.evaluateShare(x, k, count).partial);
        const got = p.decrypt(p.classifier.finish(partials.reverse()).result);
        const float = floatEvaluate(layers, x);
        expect(maxAbsDiff(got, referenceOf(x))).toBeLessThan(1e-3 * maxAbs(float));
        expect(argmax(got)).toBe(argmax(float));
      }
    });

    it('a shared evaluation performs the plan’s products once in all', () => {
      const x = makeInputs(1600, 1, 'realistic', 43)[0]!;
      const plan = planClassifier(p.he, layers, mode);
      const partials = [0, 1].map((k) => p.classifier.evaluateShare(x, k, 2).partial);
      const { counts } = p.classifier.finish(partials);
      const first = plan.plans[0] as DensePlan;
      const products = mode.input === 'encrypted' ? 'ctMults' : 'plainMults';
      // finish performs the second layer's products; the shares did the first layer's.
      expect(counts[products]).toBe(plan.counts[products] - first.diagonals);
    });
  });
}

describe('finish refuses partial sums that do not fit', () => {
  let p: Protected;
  let other: Protected;
  const layers = makeHead([1024, 128, 10], 'realistic', 44);
  const x = makeInputs(1024, 1, 'realistic', 45)[0]!;
  beforeAll(async () => {
    p = await protect(layers, 128);
    other = await protect(layers, 128);
  });
  afterAll(() => {
    p?.dispose();
    other?.dispose();
  });

  it('refuses missing, repeated, foreign, corrupt and mistaken partials with clear errors', () => {
    const giant = (planClassifier(p.he, layers).plans[0] as DensePlan).giant;
    expect(giant).toBeGreaterThan(1);
    const [a, b] = [0, 1].map((k) => p.classifier.evaluateShare(x, k, 2).partial) as [Uint8Array, Uint8Array];
    expect(() => p.classifier.finish([])).toThrow(/at least one partial sum/);
    expect(() => p.classifier.finish([a])).toThrow(/the partials cover giant-step groups \[0, \d+\), the layer has/);
    expect(() => p.classifier.finish([a, a, b])).toThrow(/do not cover giant-step groups .* exactly once/);
    expect(() => p.classifier.finish([b])).toThrow(/do not cover giant-step groups .* exactly once \(partial 0 starts at/);
    const foreign = other.classifier.evaluateShare(x, 1, 2).partial;
    expect(() => p.classifier.finish([a, foreign])).toThrow(expect.objectContaining({ code: 'E_KEYS' }));
    const flipped = b.slice();
    flipped[flipped.length - 100]! ^= 1;
    expect(() => p.classifier.finish([a, flipped])).toThrow(/partial file is corrupt: section 0 fails its checksum/);
    expect(() => p.classifier.finish([a, b.subarray(0, b.length - 1)])).toThrow(/truncated/);
    const result = p.classifier.evaluate(x).result;
    expect(() => p.classifier.finish([a, result])).toThrow(/expected a sealed-edge partial file, got a result file/);
    expect(() => p.classifier.evaluateShare(x, 2, 2)).toThrow(/share 2 of 2 does not exist/);
    // After every refusal the classifier still works.
    expect(argmax(p.decrypt(p.classifier.finish([b, a]).result))).toBe(argmax(floatEvaluate(layers, x)));
  });

  it('more workers than groups: the spare shares are empty and finish ignores them', () => {
    const count = (planClassifier(p.he, layers).plans[0] as DensePlan).giant + 2;
    const partials = Array.from({ length: count }, (_, k) => p.classifier.evaluateShare(x, k, count));
    expect(partials.filter((s) => s.evaluateMs === 0 && s.encryptMs === 0).length).toBe(2);
    const got = p.decrypt(p.classifier.finish(partials.map((s) => s.partial)).result);
    expect(maxAbsDiff(got, floatEvaluate(layers, x))).toBeLessThan(1e-3 * maxAbs(floatEvaluate(layers, x)));
  });
});
