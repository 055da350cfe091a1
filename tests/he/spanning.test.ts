import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConvShape, floatEvaluate, type Layer, type Mode, planClassifier, referenceModel } from '../../src/he';
import { CKKS_PLANNING } from '../../src/he/circuit';
import { readContainer, writeContainer } from '../../src/he/container';
import { expectEncryptedMatches, expectHeapFlat } from './expect-encrypted';
import { codeOf, convChain, DEEP_CNN, makeConv, makeDense, makeImages, maxAbs, maxAbsDiff, protect, type Protected, yieldToEventLoop } from './helpers';

const square: Layer = { kind: 'poly', coeffs: [0, 0, 1] };

/** Odd sizes, strides, asymmetric padding; 5 and 7 maps that divide no part. */
const ODD: ConvShape[] = [
  { kind: 'conv', inChannels: 3, inHeight: 9, inWidth: 11, outChannels: 5, kernel: [3, 2], stride: [1, 2], pads: [0, 1, 2, 1] },
  { kind: 'conv', inChannels: 5, inHeight: 9, inWidth: 6, outChannels: 7, kernel: [3, 3], stride: [2, 2], pads: [1, 0, 1, 2] },
];

/** conv → x²+x → [conv 3×3 pad 1 → x² → conv 3×3 pad 1] + skip → x² → dense, 6 maps of 10×10. */
function residual(seed: number): Layer[] {
  const block: ConvShape = { kind: 'conv', inChannels: 6, inHeight: 10, inWidth: 10, outChannels: 6, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] };
  return [
    makeConv({ kind: 'conv', inChannels: 1, inHeight: 22, inWidth: 22, outChannels: 6, kernel: [4, 4], stride: [2, 2], pads: [0, 0, 0, 0] }, seed),
    { kind: 'poly', coeffs: [0, 1, 0.5] },
    makeConv(block, seed + 1),
    square,
    makeConv(block, seed + 2),
    { kind: 'add', from: 1 },
    square,
    makeDense(600, 10, seed + 3),
  ];
}

const COMPLEX = { ...CKKS_PLANNING, complex: true };

/** The slots of a fake context: planning needs only the slot count, primes and scale. */
function fakeContext(slots: number): never {
  return { slots, primes: [2 ** 40, ...Array(7).fill(2 ** 30)], params: { scaleBits: 30 }, topLevel: 7 } as never;
}

describe('activations spanning several ciphertexts: the packed plan', () => {
  const cases: [string, Layer[], number, typeof CKKS_PLANNING][] = [
    ['the deeper CNN at 512 slots (8 maps of 13×13 over 4 ciphertexts, 16 maps of 11×11 over 8)', convChain(DEEP_CNN, 3, [0, 0, 1]), 512, CKKS_PLANNING],
    ['the deeper CNN at 1024 slots, its first layer complex-packed', convChain(DEEP_CNN, 4, [0, 2, 1]), 1024, COMPLEX],
    ['odd sizes and strides at 128 slots (3 and 5 maps a part of ⌈·⌉ blocks)', convChain(ODD, 5, [0.3, 1.1, 0.5]), 128, COMPLEX],
    ['a residual block of 6 maps at 256 slots (2 maps a ciphertext)', residual(7), 256, CKKS_PLANNING],
    ['a convolution then dense layers at 512 slots (845 features over 2 ciphertexts)', [makeConv({ ...DEEP_CNN[0]!, outChannels: 5 }, 8), square, makeDense(845, 100, 9), square, makeDense(100, 10, 10)], 512, COMPLEX],
    ['a dense first layer of 1600 inputs at 512 slots (4 ciphertexts)', [makeDense(1600, 64, 11), { kind: 'poly', coeffs: [0, 2, 1] }, makeDense(64, 10, 12)], 512, CKKS_PLANNING],
  ];
  for (const [name, layers, slots, options] of cases) {
    it(`${name}: the reference equals the float model`, async () => {
      await yieldToEventLoop();
      const ref = referenceModel(layers, slots, options);
      const first = layers[0]!;
      const pixels = first.kind === 'conv' ? first.inChannels * first.inHeight * first.inWidth : first.kind === 'dense' ? first.inputs : 0;
      for (const x of makeImages(pixels, 3, 13)) {
        const float = floatEvaluate(layers, x);
        expect(maxAbsDiff(ref(x), float)).toBeLessThan(1e-9 * Math.max(1, maxAbs(float)));
      }
    });
  }

  it('counts every (output part, input part) product and each part’s rotations', () => {
    const plan = planClassifier(fakeContext(512), convChain(DEEP_CNN, 3, [0, 0, 1]));
    const [first, , conv, , dense] = plan.plans;
    if (first?.kind !== 'conv' || conv?.kind !== 'conv-rot' || dense?.kind !== 'dense') throw new Error('unexpected plan');
    // 13×13 maps in blocks of 256: two a ciphertext.
    expect(first.parts).toBe(4);
    expect(conv.input).toMatchObject({ block: 256, perPart: 2, period: 512 });
    expect(conv.output).toMatchObject({ perPart: 2, channels: 16 });
    expect(conv.babies).toEqual([0, 1, 2, 13, 14, 15, 26, 27, 28]);
    expect(conv.giant).toBe(2);
    expect(dense).toMatchObject({ layout: 'scattered', parts: 8, diagonals: 16 });
    // 8 output parts × 2 giant groups × 4 input parts × 9 offsets; 8 baby rotations per input
    // part, 1 giant rotation and 2 relinearizations per output part.
    expect(plan.layerCounts[2]).toMatchObject({ ctMults: 8 * 2 * 4 * 9, rotations: 4 * 8 + 8 * 1, relins: 8 * 2 });
    expect(plan.layerLowerBounds[2]).toBe(Math.ceil((72 * 16 * 121) / 512));
    // The first layer: 25 planes complex-paired (13 products) in each of 4 parts, one conjugation each.
    expect(plan.layerCounts[0]).toMatchObject({ ctMults: 4 * 13, rotations: 4, relins: 4 });
    expect(plan.depth).toBe(5);
  });

  it('refuses one map larger than a ciphertext, naming the layer and the remedy', () => {
    const big: ConvShape[] = [
      { kind: 'conv', inChannels: 1, inHeight: 40, inWidth: 40, outChannels: 2, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] },
      { kind: 'conv', inChannels: 2, inHeight: 40, inWidth: 40, outChannels: 2, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] },
    ];
    expect(() => referenceModel(convChain(big, 1, [0, 0, 1]), 1024)).toThrow(/layer 2: one map of 40×40 does not fit one ciphertext of 1024 slots: choose a larger ring degree or split after this layer/);
    expect(() => referenceModel([makeDense(10, 2000, 1)], 1024)).toThrow(/a 2000×10 layer's outputs do not fit in 1024 slots/);
  });
});

/** conv 1→32 5×5 stride 2 (32 maps of 12×12: two ciphertexts at N=8192), x², conv 32→8 3×3, x², dense 800→10. */
const WIDE: ConvShape[] = [
  { kind: 'conv', inChannels: 1, inHeight: 28, inWidth: 28, outChannels: 32, kernel: [5, 5], stride: [2, 2], pads: [0, 0, 0, 0] },
  { kind: 'conv', inChannels: 32, inHeight: 12, inWidth: 12, outChannels: 8, kernel: [3, 3], stride: [1, 1], pads: [0, 0, 0, 0] },
];

const MODES: [string, Mode][] = [
  ['ct(W)×ct(x)', { weights: 'encrypted', input: 'encrypted' }],
  ['ct(W)×pt(x)', { weights: 'encrypted', input: 'plain' }],
];

for (const [name, mode] of MODES) {
  describe(`32 maps spanning two ciphertexts, encrypted from the first layer, ${name}, 128-bit`, () => {
    let p: Protected;
    const layers = convChain(WIDE, 17, [0, 0, 1]);
    beforeAll(async () => {
      p = await protect(layers, 128, mode, 15);
    });
    afterAll(() => p?.dispose());

    it('spans two ciphertexts at N=8192 and matches the reference and the float model', async () => {
      expect(p.he.params.polyModulusDegree).toBe(8192);
      const plan = p.classifier.plan.plans;
      expect(plan[0]).toMatchObject({ kind: 'conv', parts: 2 });
      expect(plan[2]).toMatchObject({ kind: 'conv-rot', input: { perPart: 16 }, output: { perPart: 8 } });
      await expectEncryptedMatches(p, layers, makeImages(784, 2, 19), mode);
    });

    it('two workers sharing the first layer add up to the same scores (one section per ciphertext)', async () => {
      const x = makeImages(784, 1, 23)[0]!;
      const float = floatEvaluate(layers, x);
      const partials = p.classifier.shares(2).map((_, i) => p.classifier.evaluateShare(x, i, 2).partial);
      expect(partials.map((b) => readContainer(b, 'partial').sections.length)).toEqual([2, 2]);
      await yieldToEventLoop();
      expect(maxAbsDiff(p.decrypt(p.classifier.finish(partials).result), float)).toBeLessThan(1e-2 * maxAbs(float));
      const { header, sections } = readContainer<object>(partials[0]!, 'partial');
      const short = writeContainer('partial', header, sections.slice(0, 1));
      expect(codeOf(() => p.classifier.finish([short, partials[1]!]))).toBe('E_CORRUPT');
      expect(() => p.classifier.finish([short, partials[1]!])).toThrow(/partial 0 holds 1 sections, a share holds none or 2/);
    });
  });
}

describe('WASM memory with activations spanning ciphertexts', () => {
  it('evaluations whole and shared by 2 workers do not grow the heap after the first', async () => {
    // 32 maps of 12×12 over two ciphertexts, then a dense layer reading both.
    const layers: Layer[] = [makeConv(WIDE[0]!, 29), square, makeDense(32 * 144, 10, 30)];
    const p = await protect(layers, 128, undefined, 15);
    try {
      expect(p.classifier.plan.plans[2]).toMatchObject({ kind: 'dense', parts: 2 });
      await expectHeapFlat(p, layers, makeImages(784, 40, 31), 10);
    } finally {
      p.dispose();
    }
  });
});
