import { expect } from 'vitest';
import { DEFAULT_MODE, floatEvaluate, type Layer, type Mode, planClassifier, planningFor, referenceModel } from '../../src/he';
import { argmax, maxAbs, maxAbsDiff, type Protected, yieldToEventLoop } from './helpers';

/**
 * Evaluates each input under encryption and checks the decrypted scores against the
 * plaintext reference of the same packing (within 1e-2 of the largest float score), the
 * float model's label, and the plan's operation counts.
 */
export async function expectEncryptedMatches(p: Protected, layers: Layer[], inputs: readonly Float64Array[], mode: Mode = DEFAULT_MODE): Promise<void> {
  const ref = referenceModel(layers, p.he.slots, planningFor(mode));
  const counts = planClassifier(p.he, layers, mode).counts;
  for (const x of inputs) {
    await yieldToEventLoop();
    const float = floatEvaluate(layers, x);
    const evaluation = p.classifier.evaluate(x);
    const got = p.decrypt(evaluation.result);
    expect(maxAbsDiff(got, ref(x))).toBeLessThan(1e-2 * maxAbs(float));
    expect(argmax(got)).toBe(argmax(float));
    expect(evaluation.counts).toEqual(counts);
  }
}
