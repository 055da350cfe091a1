import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { floatEvaluate } from '../../src/he';
import { nodeSeal } from '../../src/node/seal';
import { makeHead, makeInputs, maxAbs, maxAbsDiff, protect, type Protected, yieldToEventLoop } from './helpers';

describe('WASM memory', () => {
  let p: Protected;
  const layers = makeHead([256, 64, 10], 'realistic', 21);
  beforeAll(async () => {
    p = await protect(layers);
  });
  afterAll(() => p?.dispose());

  it('100 evaluations in a row do not grow the heap after the first', async () => {
    const runtime = await nodeSeal();
    const inputs = makeInputs(256, 100, 'realistic', 22);
    let afterFirst = 0;
    for (const [i, x] of inputs.entries()) {
      const { result } = p.classifier.evaluate(x);
      if (i === 0) afterFirst = runtime.heapBytes();
      await yieldToEventLoop();
      if (i % 25 === 0) {
        const float = floatEvaluate(layers, x);
        expect(maxAbsDiff(p.decrypt(result), float)).toBeLessThan(1e-3 * maxAbs(float));
      }
    }
    expect(afterFirst).toBeGreaterThan(0);
    expect(runtime.heapBytes()).toBe(afterFirst);
  });

  it('loading and disposing a classifier repeatedly does not grow the heap', async () => {
    const runtime = await nodeSeal();
    const again = async () => (await protect(layers)).dispose();
    await again();
    const before = runtime.heapBytes();
    for (let i = 0; i < 5; i++) await again();
    expect(runtime.heapBytes()).toBe(before);
  });
});
