import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConvShape, floatEvaluate, type Layer, type Mode, planClassifier, referenceModel } from '../../src/he';
import { CKKS_PLANNING } from '../../src/he/circuit';
import { freeGrid, planRotatedConv } from '../../src/he/conv';
import { convChain, DEEP_CNN, makeConv, makeDense, makeImages, maxAbs, maxAbsDiff, protect, type Protected, rng, yieldToEventLoop } from './helpers';
import { expectEncryptedMatches } from './expect-encrypted';


/** Odd sizes, strides, asymmetric padding, channel counts that divide nothing, three convolutions in a row. */
const CHAINS: [string, readonly ConvShape[]][] = [
  ['the deeper CNN', DEEP_CNN],
  [
    '3×9×11 → 5 maps (3×2, stride 1×2, pads [0,1,2,1]) → 7 maps (3×3, stride 2, pads [1,0,1,2])',
    [
      { kind: 'conv', inChannels: 3, inHeight: 9, inWidth: 11, outChannels: 5, kernel: [3, 2], stride: [1, 2], pads: [0, 1, 2, 1] },
      { kind: 'conv', inChannels: 5, inHeight: 9, inWidth: 6, outChannels: 7, kernel: [3, 3], stride: [2, 2], pads: [1, 0, 1, 2] },
    ],
  ],
  [
    'three in a row: 2×12×12 → 3 (3×3 pad 1) → 6 (2×2 stride 2) → 5 (3×3 pad 1)',
    [
      { kind: 'conv', inChannels: 2, inHeight: 12, inWidth: 12, outChannels: 3, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] },
      { kind: 'conv', inChannels: 3, inHeight: 12, inWidth: 12, outChannels: 6, kernel: [2, 2], stride: [2, 2], pads: [0, 0, 0, 0] },
      { kind: 'conv', inChannels: 6, inHeight: 6, inWidth: 6, outChannels: 5, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] },
    ],
  ],
];

describe('convolutions on encrypted activations: the packed plan', () => {
  it('matches the float model for every chain and activation (plaintext reference of the same packing)', async () => {
    for (const [, chain] of CHAINS) {
      for (const activation of [[0, 0, 1], [0, 2, 1], [0.3, 1.1, 0.5]]) {
        await yieldToEventLoop();
        const layers = convChain(chain, 5, activation);
        const ref = referenceModel(layers, 4096);
        for (const x of makeImages(chain[0]!, 3, 9)) {
          const float = floatEvaluate(layers, x);
          expect(maxAbsDiff(ref(x), float)).toBeLessThan(1e-9 * Math.max(1, maxAbs(float)));
        }
      }
    }
  });

  it('reads the output of a dense layer too (dense → activation → convolution)', () => {
    const conv = makeConv({ kind: 'conv', inChannels: 2, inHeight: 5, inWidth: 6, outChannels: 3, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] }, 4);
    const layers: Layer[] = [makeDense(40, 60, 1), { kind: 'poly', coeffs: [0.1, 1, 0.5] }, conv, { kind: 'poly', coeffs: [0, 0, 1] }, makeDense(90, 10, 2)];
    const ref = referenceModel(layers, 4096);
    const u = rng(3);
    for (let t = 0; t < 3; t++) {
      const x = Float64Array.from({ length: 40 }, () => u());
      const float = floatEvaluate(layers, x);
      expect(maxAbsDiff(ref(x), float)).toBeLessThan(1e-9 * Math.max(1, maxAbs(float)));
    }
  });

  it('reports products, rotations and the lower bound: 8 channel differences × 9 kernel offsets for the deeper CNN', () => {
    const layers = convChain(DEEP_CNN, 3, [0, 0, 1]);
    const plan = planClassifier({ slots: 4096, primes: [2 ** 40, ...Array(5).fill(2 ** 30)], params: { scaleBits: 30 }, topLevel: 5 } as never, layers);
    const conv = plan.plans[2]!;
    if (conv.kind !== 'conv-rot') throw new Error(`layer 2 is planned as ${conv.kind}`);
    // 13×13 maps in blocks of 256, the 8 input maps repeated every 2048 slots.
    expect(conv.input).toEqual({ channels: 8, height: 13, width: 13, block: 256, rowStep: 13, colStep: 1, period: 2048, perPart: 8 });
    expect(conv.babies).toEqual([0, 1, 2, 13, 14, 15, 26, 27, 28]);
    expect(conv.giant).toBe(8);
    // The first convolution's 25 planes go two per ciphertext (13 products, one conjugation).
    expect(plan.plans[0]).toMatchObject({ kind: 'conv', complex: true });
    expect(plan.plans[4]).toMatchObject({ kind: 'dense', layout: 'scattered', diagonals: 16 });
    expect(plan.layerCounts.map((c) => [c.ctMults, c.rotations, c.relins])).toEqual([
      [13, 1, 1],
      [1, 0, 1],
      [72, 8 + 7, 8],
      [1, 0, 1],
      [16, 3 + 3 + 8, 4],
    ]);
    // Rotation keys: the kernel's row and column steps, one block, the dense layer's steps.
    expect(plan.layerRotationSteps[2]).toEqual([1, 11, 256]);
    expect(plan.layerLowerBounds).toEqual([Math.ceil((25 * 8 * 169) / 4096), 0, Math.ceil((72 * 16 * 121) / 4096), 0, Math.ceil((10 * 1936) / 4096)]);
    expect(plan.depth).toBe(5);
  });

  it('without spanning ciphertexts (BGV), refuses tensors that do not fit one; refuses a layer that reads the wrong size', () => {
    const wide: ConvShape[] = [DEEP_CNN[0]!, { ...DEEP_CNN[1]!, outChannels: 32 }];
    expect(freeGrid(wide[1]!, 4096)).toBeUndefined();
    expect(() => referenceModel(convChain(wide, 1, [0, 0, 1]), 4096, { ...CKKS_PLANNING, spanCiphertexts: false })).toThrow(/layer 2: 8 input and 32 output maps of 13×13 do not fit one ciphertext of 4096 slots.*choose a larger ring degree or split after this layer/);
    const grid = freeGrid(DEEP_CNN[1]!, 4096)!;
    expect(() => planRotatedConv({ ...DEEP_CNN[1]!, inChannels: 7 }, grid, 4096, 'layer 2')).toThrow(/layer 2: reads 7×13×13, the layer before produces 8×13×13/);
    const wrong = convChain(DEEP_CNN, 1, [0, 0, 1]);
    wrong[2] = makeConv({ ...DEEP_CNN[1]!, inHeight: 12 }, 2);
    expect(() => referenceModel(wrong, 4096)).toThrow(/layer 2: the convolution reads 8×12×13 = 1248 values but the previous layer produces 1352/);
  });
});

/** conv → x²+x → [conv 3×3 pad 1 → x² → conv 3×3 pad 1] + skip → x² → dense: a residual block on encrypted activations (7 levels). */
function residual(seed: number, channels = 4): Layer[] {
  const block: ConvShape = { kind: 'conv', inChannels: channels, inHeight: 10, inWidth: 10, outChannels: channels, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] };
  return [
    makeConv({ kind: 'conv', inChannels: 1, inHeight: 22, inWidth: 22, outChannels: channels, kernel: [4, 4], stride: [2, 2], pads: [0, 0, 0, 0] }, seed),
    { kind: 'poly', coeffs: [0, 1, 0.5] },
    makeConv(block, seed + 1),
    { kind: 'poly', coeffs: [0, 0, 1] },
    makeConv(block, seed + 2),
    { kind: 'add', from: 1 },
    { kind: 'poly', coeffs: [0, 0, 1] },
    makeDense(channels * 100, 10, seed + 3),
  ];
}

describe('a residual add on encrypted activations', () => {
  it('matches the float model, and costs no level', () => {
    const layers = residual(3);
    const ref = referenceModel(layers, 4096);
    const u = rng(5);
    for (let t = 0; t < 3; t++) {
      const x = Float64Array.from({ length: 22 * 22 }, () => u());
      const float = floatEvaluate(layers, x);
      expect(maxAbsDiff(ref(x), float)).toBeLessThan(1e-9 * Math.max(1, maxAbs(float)));
    }
    const plan = planClassifier({ slots: 4096, primes: [2 ** 40, ...Array(7).fill(2 ** 30)], params: { scaleBits: 30 }, topLevel: 7 } as never, layers);
    // conv, x²+x, conv, x², conv (+ the skip before its rescale), x², dense.
    expect(plan.depth).toBe(7);
  });

  it('takes the skip from a convolution whose activation has a leading coefficient other than 1 (the scaling stays out of the skip)', () => {
    const block: ConvShape = { kind: 'conv', inChannels: 4, inHeight: 10, inWidth: 10, outChannels: 4, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] };
    const layers: Layer[] = [
      makeConv({ kind: 'conv', inChannels: 1, inHeight: 22, inWidth: 22, outChannels: 4, kernel: [4, 4], stride: [2, 2], pads: [0, 0, 0, 0] }, 1),
      { kind: 'poly', coeffs: [0, 0, 1] },
      makeConv(block, 2),
      { kind: 'poly', coeffs: [0, 1, 0.25] },
      makeConv(block, 3),
      { kind: 'poly', coeffs: [0, 0, 1] },
      makeConv(block, 4),
      { kind: 'add', from: 2 },
      { kind: 'poly', coeffs: [0, 0, 1] },
      makeDense(400, 10, 5),
    ];
    const ref = referenceModel(layers, 4096);
    const x = makeImages({ ...block, inChannels: 1, inHeight: 22, inWidth: 22 }, 1, 6)[0]!;
    const float = floatEvaluate(layers, x);
    expect(maxAbsDiff(ref(x), float)).toBeLessThan(1e-9 * Math.max(1, maxAbs(float)));
  });

  it('refuses an add whose branches differ in layout or size, that does not follow a convolution, or reads a later layer', () => {
    const layers = residual(3);
    // 16×5×5 after a strided convolution: as many values as the 4×10×10 skip, in other slots.
    const strided = [...layers];
    strided[4] = makeConv({ kind: 'conv', inChannels: 4, inHeight: 10, inWidth: 10, outChannels: 16, kernel: [3, 3], stride: [2, 2], pads: [1, 1, 0, 0] }, 9);
    expect(() => referenceModel(strided, 4096)).toThrow(/layer 5: layer 1's values sit in other slots than the convolution's before the add.*must keep their layout/);
    const narrow = [...layers];
    narrow[4] = makeConv({ kind: 'conv', inChannels: 4, inHeight: 10, inWidth: 10, outChannels: 3, kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] }, 9);
    expect(() => referenceModel(narrow, 4096)).toThrow(/layer 5: adds layer 1's 400 values to 300/);
    expect(() => referenceModel([...layers.slice(0, 5), { kind: 'poly', coeffs: [0, 0, 1] }, { kind: 'add', from: 1 }, layers[7]!], 4096)).toThrow(/layer 6: a residual add must follow a convolution/);
    expect(() => referenceModel([...layers.slice(0, 5), { kind: 'add', from: 4 }, ...layers.slice(6)], 4096)).toThrow(/layer 5: a residual add takes an earlier layer's output, from 0 to 3, got 4/);
  });
});

const MODES: [string, Mode][] = [
  ['ct(W)×ct(x)', { weights: 'encrypted', input: 'encrypted' }],
  ['ct(W)×pt(x), the device’s frame in plaintext', { weights: 'encrypted', input: 'plain' }],
];

for (const [name, mode] of MODES) {
  describe(`the deeper CNN encrypted from its first layer, ${name}, 128-bit`, () => {
    let p: Protected;
    const layers = convChain(DEEP_CNN, 11, [0, 0, 1]);
    beforeAll(async () => {
      p = await protect(layers, 128, mode, 15);
    });
    afterAll(() => p?.dispose());

    it('fits N=8192 and matches the reference and the float model', async () => {
      expect(p.he.params.polyModulusDegree).toBe(8192);
      await expectEncryptedMatches(p, layers, makeImages(DEEP_CNN[0]!, 2, 21), mode);
    });

    it('two workers sharing the first layer add up to the same scores', async () => {
      const x = makeImages(DEEP_CNN[0]!, 1, 23)[0]!;
      const float = floatEvaluate(layers, x);
      const partials = p.classifier.shares(2).map((_, i) => p.classifier.evaluateShare(x, i, 2).partial);
      await yieldToEventLoop();
      const got = p.decrypt(p.classifier.finish(partials).result);
      expect(maxAbsDiff(got, float)).toBeLessThan(1e-2 * maxAbs(float));
    });
  });
}

describe('a residual block encrypted, ct(W)×ct(x), 128-bit', () => {
  let p: Protected;
  // x + conv(x) between two activations, 4 levels: the skip joins the sum before the rescale.
  const layers: Layer[] = [...residual(21).slice(0, 3), { kind: 'add', from: 1 }, residual(21)[7]!];
  beforeAll(async () => {
    p = await protect(layers, 128, undefined, 15);
  });
  afterAll(() => p?.dispose());

  it('fits N=8192 and matches the reference and the float model', async () => {
    expect(p.he.params.polyModulusDegree).toBe(8192);
    await expectEncryptedMatches(p, layers, makeImages(22 * 22, 2, 8));
  });
});
