import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { floatEvaluate } from '../../src/he';
import { nodeSeal } from '../../src/node/seal';
import { expectHeapFlat } from './expect-encrypted';
import { gaussian, makeHead, makeInputs, maxAbs, maxAbsDiff, protect, type Protected, rng, yieldToEventLoop } from './helpers';
import type { Layer } from '../../src/he';

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

  it('a network encrypted from its convolution: 100 evaluations, whole and shared by 2 workers, do not grow the heap', async () => {
    const g = gaussian(rng(31));
    const conv: Layer = {
      kind: 'conv',
      inChannels: 1,
      inHeight: 28,
      inWidth: 28,
      outChannels: 5,
      kernel: [5, 5],
      stride: [2, 2],
      pads: [1, 1, 1, 1],
      weights: Float64Array.from({ length: 125 }, () => 0.2 * g()),
      bias: Float64Array.from({ length: 5 }, () => 0.1 * g()),
    };
    const network = [conv, { kind: 'poly', coeffs: [0, 0, 1] }, ...makeHead([845, 100, 10], 'realistic', 32, [0, 0, 1])] as Layer[];
    const lola = await protect(network, 128, undefined, 15);
    try {
      await expectHeapFlat(lola, network, makeInputs(784, 100, 'random', 33), 25);
    } finally {
      lola.dispose();
    }
  });

  it('convolutions on encrypted activations with a residual add: 100 evaluations do not grow the heap', async () => {
    const runtime = await nodeSeal();
    const g = gaussian(rng(41));
    const conv = (inChannels: number, size: number, pads: [number, number, number, number]): Layer => ({
      kind: 'conv',
      inChannels,
      inHeight: size,
      inWidth: size,
      outChannels: 2,
      kernel: [3, 3],
      stride: [1, 1],
      pads,
      weights: Float64Array.from({ length: 2 * inChannels * 9 }, () => 0.3 * g()),
      bias: Float64Array.from({ length: 2 }, () => 0.1 * g()),
    });
    // conv 1×12×12 → 2×10×10, x², x + conv(x), dense → 10.
    const network = [conv(1, 12, [0, 0, 0, 0]), { kind: 'poly', coeffs: [0, 0, 1] }, conv(2, 10, [1, 1, 1, 1]), { kind: 'add', from: 1 }, ...makeHead([200, 10], 'realistic', 42)] as Layer[];
    const p2 = await protect(network, 128, undefined, 15);
    try {
      const images = makeInputs(144, 100, 'random', 43);
      let afterFirst = 0;
      for (const [i, x] of images.entries()) {
        const { result } = p2.classifier.evaluate(x);
        if (i === 0) afterFirst = runtime.heapBytes();
        await yieldToEventLoop();
        if (i % 25 === 0) {
          const float = floatEvaluate(network, x);
          expect(maxAbsDiff(p2.decrypt(result), float)).toBeLessThan(1e-2 * maxAbs(float));
        }
      }
      expect(afterFirst).toBeGreaterThan(0);
      expect(runtime.heapBytes()).toBe(afterFirst);
    } finally {
      p2.dispose();
    }
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
