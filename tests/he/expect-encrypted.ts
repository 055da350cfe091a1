import { expect } from 'vitest';
import { DEFAULT_MODE, floatEvaluate, type Layer, type Mode, planClassifier, planningFor, referenceModel } from '../../src/he';
import { nodeSeal } from '../../src/node/seal';
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

/**
 * Evaluates the images one after another, whole and shared by 2 workers in turn, checks
 * every `checkEvery`-th decrypted result against the float model, and expects WASM memory
 * after the second evaluation to be all the rest need.
 */
export async function expectHeapFlat(p: Protected, layers: Layer[], images: readonly Float64Array[], checkEvery: number): Promise<void> {
  const runtime = await nodeSeal();
  let afterFirst = 0;
  for (const [i, x] of images.entries()) {
    const result = i % 2 === 0 ? p.classifier.evaluate(x).result : p.classifier.finish([0, 1].map((share) => p.classifier.evaluateShare(x, share, 2).partial)).result;
    if (i === 1) afterFirst = runtime.heapBytes();
    await yieldToEventLoop();
    if (i % checkEvery === 1) {
      const float = floatEvaluate(layers, x);
      expect(maxAbsDiff(p.decrypt(result), float)).toBeLessThan(1e-2 * maxAbs(float));
    }
  }
  expect(afterFirst).toBeGreaterThan(0);
  expect(runtime.heapBytes()).toBe(afterFirst);
}
