import { describe, expect, it } from 'vitest';
import { classifierDepth, floatEvaluate, HeError, type Layer, referenceEvaluate } from '../../src/he';
import { diagonalIndex, lowerBoundMults, packInput, planDense, rotateLeft } from '../../src/he/packing';
import { makeHead, makeInputs, maxAbs, maxAbsDiff } from './helpers';

describe('hybrid diagonal packing', () => {
  const shapes: [number, number, number][] = [
    // [inputs, outputs, slots]
    [1600, 512, 4096],
    [2304, 512, 4096],
    [512, 10, 4096],
    [256, 64, 4096],
    [64, 512, 4096],
    [100, 37, 256],
    [7, 3, 64],
    [1600, 512, 8192],
    [4096, 4096, 4096],
  ];

  it('uses every weight exactly once, whatever the layout', () => {
    for (const [n, m, slots] of shapes) {
      for (const inputLayout of ['shifted', 'replicated'] as const) {
        const plan = planDense(n, m, slots, { inputLayout, finalLayer: false });
        const index = diagonalIndex(plan);
        const seen = new Uint8Array(n * m);
        for (const at of index) if (at >= 0) seen[at]!++;
        expect(seen.every((c) => c === 1)).toBe(true);
      }
    }
  });

  it('with two values per slot, uses every weight exactly once in half the diagonals, and its reference is the float layer', () => {
    for (const [n, m, slots] of shapes) {
      const plan = planDense(n, m, slots, { inputLayout: 'shifted', finalLayer: false, complex: true });
      const real = planDense(n, m, slots, { inputLayout: 'shifted', finalLayer: false });
      if (!plan.complex) {
        // Chosen only where it is cheaper: not when one real diagonal does, nor when a copy of the input fills a ciphertext.
        expect(real.diagonals === 1 || 2 * real.period > slots).toBe(true);
        continue;
      }
      expect(plan.diagonals).toBe(Math.max(1, real.diagonals / 2));
      const index = diagonalIndex(plan);
      expect(index.length).toBe(plan.diagonals * 2 * slots);
      const seen = new Uint8Array(n * m);
      for (const at of index) if (at >= 0) seen[at]!++;
      expect(seen.every((c) => c === 1)).toBe(true);
    }
    const mnist = planDense(1600, 512, 4096, { inputLayout: 'shifted', finalLayer: false, complex: true });
    expect(mnist).toMatchObject({ complex: true, diagonals: 128, sumSteps: [512, 1024, 2048] });
    expect(packInput(mnist, Array.from({ length: 1600 }, (_, i) => i)).length).toBe(8192);
    const layers = makeHead([1600, 512, 10], 'realistic', 5);
    for (const x of makeInputs(1600, 2, 'realistic', 6)) {
      const float = floatEvaluate(layers, x);
      expect(maxAbsDiff(referenceEvaluate(layers, 4096, x, { rowsLast: true, complex: true }), float)).toBeLessThan(1e-9 * maxAbs(float));
    }
  });

  it('reaches the lower bound of ⌈m·n/slots⌉ multiplications with the shifted input layout', () => {
    const mnist = planDense(1600, 512, 4096, { inputLayout: 'shifted', finalLayer: false });
    expect(mnist.layout).toBe('shifted');
    expect(mnist.diagonals).toBe(256);
    expect(mnist.diagonals / lowerBoundMults(512, 1600, 4096)).toBeLessThan(2);
    expect(mnist.sumSteps).toEqual([512, 1024, 2048]);
    expect(mnist.baby * mnist.giant).toBe(256);
    const lastOnly = planDense(512, 10, 4096, { inputLayout: 'shifted', finalLayer: true });
    expect(lastOnly.diagonals).toBe(2);
  });

  it('a replicated final layer sums only within its input period', () => {
    const plan = planDense(512, 10, 4096, { inputLayout: 'replicated', inputPeriod: 512, finalLayer: true });
    expect(plan.sumSteps).toEqual([16, 32, 64, 128, 256]);
  });

  it('rejects layers that do not fit or do not chain', () => {
    expect(() => planDense(5000, 10, 4096, { inputLayout: 'shifted', finalLayer: true })).toThrow(/does not fit in 4096 slots/);
    expect(() => planDense(0, 10, 4096, { inputLayout: 'shifted', finalLayer: true })).toThrow(HeError);
    expect(() => planDense(512, 10, 4096, { inputLayout: 'replicated', inputPeriod: 256, finalLayer: true })).toThrow(/period 256/);
    expect(planDense(32, 10, 4096, { inputLayout: 'replicated', inputPeriod: 64, finalLayer: true }).period).toBe(64);
  });

  it('packs inputs into the shifted layout and refuses wrong lengths and non-numbers', () => {
    const plan = planDense(6, 4, 16, { inputLayout: 'shifted', finalLayer: false });
    // period 8, two copies, the second rotated by `diagonals` = 2
    expect(plan.period).toBe(8);
    expect(plan.diagonals).toBe(2);
    expect(Array.from(packInput(plan, [1, 2, 3, 4, 5, 6]))).toEqual([1, 2, 3, 4, 5, 6, 0, 0, 3, 4, 5, 6, 0, 0, 1, 2]);
    expect(() => packInput(plan, [1, 2, 3])).toThrow(/3 values, the classifier expects 6/);
    expect(() => packInput(plan, [1, 2, 3, 4, 5, NaN])).toThrow(/not a finite number/);
  });

  it('rotates left like SEAL', () => {
    expect(Array.from(rotateLeft(Float64Array.from([0, 1, 2, 3]), 1))).toEqual([1, 2, 3, 0]);
    expect(Array.from(rotateLeft(Float64Array.from([0, 1, 2, 3]), -1))).toEqual([3, 0, 1, 2]);
  });
});

describe('the plaintext reference runs the packed plan and equals the float model', () => {
  const cases: [string, number[], number[], number][] = [
    ['MNIST head', [1600, 512, 10], [0, 2, 1], 4096],
    ['CIFAR head', [2304, 512, 10], [0, 2, 1], 4096],
    ['MNIST head at N=16384', [1600, 512, 10], [0, 2, 1], 8192],
    ['expanding layer', [64, 512, 10], [0, 2, 1], 4096],
    ['odd sizes, cubic', [100, 37, 3], [0.1, 0.5, 0.2, -0.01], 256],
    ['three dense layers', [300, 100, 50, 10], [0.5, 1, 0.25], 2048],
    ['no activation', [1600, 512, 10], [0, 1], 4096],
  ];
  for (const [name, widths, act, slots] of cases) {
    it(name, () => {
      const layers = makeHead(widths, 'realistic', 7, act);
      for (const x of makeInputs(widths[0]!, 5, 'realistic', 8)) {
        const float = floatEvaluate(layers, x);
        expect(maxAbsDiff(referenceEvaluate(layers, slots, x), float)).toBeLessThan(1e-9 * Math.max(1, maxAbs(float)));
      }
    });
  }

  it('folds an activation into the next layer, or applies it when it comes last', () => {
    const layers: Layer[] = [
      { kind: 'dense', inputs: 4, outputs: 3, weights: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1], bias: [0, 1, -1] },
      { kind: 'poly', coeffs: [1, -2, 3] },
    ];
    const x = [0.5, 2, -1, 3];
    // z = [0.5, 3, 1]; 3z² − 2z + 1 = [0.75, 22, 2]
    expect(Array.from(floatEvaluate(layers, x))).toEqual([0.75, 22, 2]);
    const ref = referenceEvaluate(layers, 16, x);
    expect(maxAbsDiff(ref, [0.75, 22, 2])).toBeLessThan(1e-12);
    expect(classifierDepth(layers)).toBe(2); // dense 1 + x² 1; σ makes the leading coefficient ±1
  });

  it('activation depth is ⌈log2 d⌉ when a dense layer follows', () => {
    for (let d = 1; d <= 8; d++) {
      const coeffs = Array.from({ length: d + 1 }, (_, i) => 1 / (i + 1));
      const layers = makeHead([16, 8, 4], 'random', d, coeffs);
      expect(classifierDepth(layers)).toBe(2 + (d <= 1 ? 0 : Math.ceil(Math.log2(d))));
    }
  });

  it('rejects malformed models', () => {
    expect(() => referenceEvaluate([], 64, [])).toThrow(/at least one layer/);
    expect(() => referenceEvaluate([{ kind: 'poly', coeffs: [0, 1] }], 64, [1])).toThrow(/first layer.*dense/);
    const head = makeHead([8, 4, 2], 'random', 1);
    expect(() => referenceEvaluate([head[0]!, head[1]!, { ...(head[2] as Layer & { kind: 'dense' }), inputs: 5 }], 64, new Array(8).fill(0))).toThrow(/expects 5 inputs/);
    expect(() => referenceEvaluate([head[0]!, { kind: 'poly', coeffs: [3] }, head[2]!], 64, new Array(8).fill(0))).toThrow(/degree ≥ 1/);
    expect(() => referenceEvaluate([{ kind: 'dense', inputs: 2, outputs: 1, weights: [1] }], 64, [1, 1])).toThrow(/1×2 needs 2/);
    expect(() => referenceEvaluate([{ kind: 'dense', inputs: 2, outputs: 1, weights: [1, NaN] }], 64, [1, 1])).toThrow(/not a finite number/);
  });
});
