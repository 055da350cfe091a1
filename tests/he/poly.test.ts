import { afterAll, describe, expect, it } from 'vitest';
import { classifierDepth, floatEvaluate, type Layer, planClassifier, referenceModel } from '../../src/he';
import { argmax, makeHead, makeInputs, maxAbs, maxAbsDiff, protect, type Protected } from './helpers';

// Polynomial activations as CryptoDL-style approximations of ReLU produce them (degree 2
// to 8 on about [−6, 6]), plus x², x²+2x and the identity.
const ACTIVATIONS: [string, number[]][] = [
  ['identity', [0, 1]],
  ['x²', [0, 0, 1]],
  ['x²+2x', [0, 2, 1]],
  ['ReLU ≈ degree 2', [0.1198, 0.5, 0.1473]],
  ['ReLU ≈ degree 3', [0.1524, 0.5, 0.0955, 0.0004]],
  ['degree 4', [0.119, 0.5, 0.125, 0, -0.0011]],
  ['degree 5', [0.1, 0.5, 0.11, 0.001, -0.0009, 0.00002]],
  ['degree 8', [0.09, 0.5, 0.12, 0, -0.0025, 0, 0.00003, 0, -1e-7]],
];

describe('polynomial activations under encryption', () => {
  const opened: Protected[] = [];
  afterAll(() => opened.forEach((p) => p.dispose()));

  for (const [name, coeffs] of ACTIVATIONS) {
    it(`${name}: depth ⌈log2 d⌉ and results within 1e-3 of the largest logit`, async () => {
      const layers = makeHead([64, 32, 10], 'realistic', coeffs.length, coeffs);
      const p = await protect(layers);
      opened.push(p);
      const degree = coeffs.length - 1;
      expect(planClassifier(p.he, layers).depth).toBe(2 + (degree > 1 ? Math.ceil(Math.log2(degree)) : 0));
      const referenceOf = referenceModel(layers, p.he.slots);
      for (const x of makeInputs(64, 10, 'random', 3).map((v) => v.map((t) => 2 * t))) {
        const float = floatEvaluate(layers, x);
        const got = p.decrypt(p.classifier.evaluate(x).result);
        expect(maxAbsDiff(got, referenceOf(x))).toBeLessThan(1e-3 * maxAbs(float));
        expect(maxAbsDiff(got, float)).toBeLessThan(1e-3 * maxAbs(float));
        expect(argmax(got)).toBe(argmax(float));
      }
    });
  }

  it('an activation after an activation applies its leading coefficient with a level', async () => {
    const head = makeHead([32, 8], 'realistic', 10);
    const layers: Layer[] = [...head, { kind: 'poly', coeffs: [0, 1, 0.5] }, { kind: 'poly', coeffs: [0.1, 0.3, 0.2] }];
    expect(classifierDepth(layers)).toBe(1 + 1 + 2);
    const p = await protect(layers);
    opened.push(p);
    for (const x of makeInputs(32, 5, 'realistic', 6)) {
      const float = floatEvaluate(layers, x);
      expect(maxAbsDiff(p.decrypt(p.classifier.evaluate(x).result), float)).toBeLessThan(1e-3 * maxAbs(float));
    }
  });

  it('an activation at the end applies its leading coefficient and constant', async () => {
    const layers: Layer[] = [...makeHead([32, 8], 'realistic', 9), { kind: 'poly', coeffs: [0.5, -1, 0.25, -0.125] }];
    expect(classifierDepth(layers)).toBe(1 + 2); // σ folds the leading coefficient to −1: a negation, no level
    const p = await protect(layers);
    opened.push(p);
    for (const x of makeInputs(32, 5, 'realistic', 4)) {
      const float = floatEvaluate(layers, x);
      expect(maxAbsDiff(p.decrypt(p.classifier.evaluate(x).result), float)).toBeLessThan(1e-3 * maxAbs(float));
    }
  });
});
