import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncryptedClassifier, floatEvaluate, type Layer, planningFor, referenceModel } from '../../src/he';
import { readContainer, writeContainer } from '../../src/he/container';
import { argmax, codeOf, makeConv, makeDense, makeImages, maxAbs, maxAbsDiff, messageOf, protect, type Protected } from './helpers';

// A small LoLa-shaped network: conv (complex-packed planes) → x² → dense → x² → dense.
const CONV = { inChannels: 1, inHeight: 12, inWidth: 12, outChannels: 3, kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] } as const;
const LAYERS: Layer[] = [makeConv(CONV, 71), { kind: 'poly', coeffs: [0, 0, 1] }, makeDense(108, 20, 72), { kind: 'poly', coeffs: [0, 0, 1] }, makeDense(20, 10, 73)];

describe('encrypted weights kept serialized and read per product (streamed)', () => {
  let p: Protected;
  let streamed: EncryptedClassifier;
  beforeAll(async () => {
    p = await protect(LAYERS, 128);
    streamed = EncryptedClassifier.load(p.he, p.keys, p.classifierBytes, { residentWeightBytes: 0 });
  });
  afterAll(() => {
    streamed?.dispose();
    p?.dispose();
  });

  it('loads streamed only above the budget', () => {
    expect(p.classifier.streamed).toBe(false);
    expect(streamed.streamed).toBe(true);
  });

  it('gives the resident classifier’s scores: the reference of the same packing, the float model, the same operations', () => {
    const reference = referenceModel(LAYERS, p.he.slots, planningFor({ weights: 'encrypted', input: 'encrypted' }));
    for (const x of makeImages(CONV, 3, 74)) {
      const float = floatEvaluate(LAYERS, x);
      const a = streamed.evaluate(x);
      const b = p.classifier.evaluate(x);
      const got = p.decrypt(a.result);
      expect(maxAbsDiff(got, reference(x))).toBeLessThan(1e-3 * maxAbs(float));
      expect(maxAbsDiff(got, float)).toBeLessThan(1e-3 * maxAbs(float));
      expect(maxAbsDiff(got, p.decrypt(b.result))).toBeLessThan(1e-3 * maxAbs(float));
      expect(argmax(got)).toBe(argmax(float));
      expect(a.counts).toEqual(b.counts);
    }
  });

  it('keeps resident the weights that fit the budget and streams the rest', () => {
    const sizes = [...p.classifier.plan.weightSlots.values()].map((slot) => 2 * p.he.params.polyModulusDegree * (slot.level + 1) * 8);
    const total = sizes.reduce((a, b) => a + b, 0);
    const count = (residentWeightBytes: number) => {
      const c = EncryptedClassifier.load(p.he, p.keys, p.classifierBytes, { residentWeightBytes });
      c.dispose();
      return c.streamedWeights;
    };
    expect([count(total), count(total - 1), streamed.streamedWeights]).toEqual([0, 1, sizes.length]);
    const partial = EncryptedClassifier.load(p.he, p.keys, p.classifierBytes, { residentWeightBytes: total / 2 });
    try {
      expect(partial.streamedWeights).toBeGreaterThan(0);
      expect(partial.streamedWeights).toBeLessThan(sizes.length);
      expect(partial.streamed).toBe(true);
      const [x] = makeImages(CONV, 1, 76);
      const float = floatEvaluate(LAYERS, x!);
      const got = p.decrypt(partial.evaluate(x!).result);
      expect(maxAbsDiff(got, p.decrypt(p.classifier.evaluate(x!).result))).toBeLessThan(1e-3 * maxAbs(float));
      expect(argmax(got)).toBe(argmax(float));
    } finally {
      partial.dispose();
    }
  });

  it('shares of two workers add up to the same scores', () => {
    const [x] = makeImages(CONV, 1, 75);
    const float = floatEvaluate(LAYERS, x!);
    const partials = [0, 1].map((k) => streamed.evaluateShare(x!, k, 2).partial);
    const got = p.decrypt(streamed.finish(partials).result);
    expect(maxAbsDiff(got, float)).toBeLessThan(1e-3 * maxAbs(float));
  });

  it('refuses a weight at the wrong level when it loads, as the resident classifier does', () => {
    const { header, sections } = readContainer<Record<string, unknown>>(p.classifierBytes, 'classifier');
    // The first section is a weight of the first layer (top level), the last the last layer's bias.
    const swapped = [sections[sections.length - 1]!, ...sections.slice(1, -1), sections[0]!];
    const { sections: _entries, ...rest } = header;
    const bytes = writeContainer('classifier', rest, swapped);
    for (const residentWeightBytes of [0, undefined]) {
      expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, bytes, { residentWeightBytes }))).toBe('E_CORRUPT');
      expect(messageOf(() => EncryptedClassifier.load(p.he, p.keys, bytes, { residentWeightBytes }))).toMatch(/weight section 0 \(0:\d+\) is at level \d+ .*the plan needs level \d+/);
    }
  });

  it('refuses a budget that is not a number of bytes', () => {
    for (const residentWeightBytes of [-1, Number.NaN, '1GB' as unknown as number]) {
      expect(messageOf(() => EncryptedClassifier.load(p.he, p.keys, p.classifierBytes, { residentWeightBytes }))).toMatch(/residentWeightBytes must be a number of bytes ≥ 0/);
    }
  });
});
