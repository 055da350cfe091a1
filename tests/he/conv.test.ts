import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ConvLayer,
  convGeometry,
  floatConv,
  floatEvaluate,
  type Layer,
  type Mode,
  planClassifier,
  referenceModel,
} from '../../src/he';
import { CKKS_PLANNING, evaluateLayers, firstPlan, foldModel, outputSlots, packInputs, planActivations, planLayers, readOutputs } from '../../src/he/circuit';
import { packConvInput, planConv } from '../../src/he/conv';
import { PlainBackend, packModel } from '../../src/he/reference';
import { makeConv, makeDense, makeImages, maxAbs, maxAbsDiff, protect, type Protected, yieldToEventLoop } from './helpers';
import { expectEncryptedMatches } from './expect-encrypted';

type Geometry = Omit<ConvLayer, 'kind' | 'weights' | 'bias'>;



/** conv → activation → dense → activation → dense, the CryptoNets/LoLa shape for any conv. */
function network(g: Geometry, seed: number, activation = [0, 0, 1], hidden = 20): Layer[] {
  const conv = makeConv(g, seed);
  const features = convGeometry(conv).outputs;
  return [conv, { kind: 'poly', coeffs: activation }, makeDense(features, hidden, seed + 1), { kind: 'poly', coeffs: activation }, makeDense(hidden, 10, seed + 2)];
}


const LOLA: Geometry = { inChannels: 1, inHeight: 28, inWidth: 28, outChannels: 5, kernel: [5, 5], stride: [2, 2], pads: [1, 1, 1, 1] };

/** Odd sizes, strides, asymmetric padding, channels that divide nothing. */
const GEOMETRIES: [string, Geometry][] = [
  ['LoLa 1×28×28 → 5×13×13, 5×5 stride 2 pad 1', LOLA],
  ['3×9×11 → 7 maps, 3×2 kernel, stride 1×2, pads [0,1,2,1]', { inChannels: 3, inHeight: 9, inWidth: 11, outChannels: 7, kernel: [3, 2], stride: [1, 2], pads: [0, 1, 2, 1] }],
  ['2×7×7 → 3 maps, 1×1 kernel', { inChannels: 2, inHeight: 7, inWidth: 7, outChannels: 3, kernel: [1, 1], stride: [1, 1], pads: [0, 0, 0, 0] }],
  ['3×32×32 → 4 maps, 5×5 stride 3, valid', { inChannels: 3, inHeight: 32, inWidth: 32, outChannels: 4, kernel: [5, 5], stride: [3, 3], pads: [0, 0, 0, 0] }],
];

describe('convolution geometry', () => {
  it('derives the output size as ONNX does and refuses bad geometry', () => {
    expect(convGeometry({ kind: 'conv', ...LOLA })).toEqual({ outHeight: 13, outWidth: 13, inputs: 784, outputs: 845, planes: 25 });
    expect(convGeometry({ kind: 'conv', ...GEOMETRIES[1]![1] })).toMatchObject({ outHeight: 9, outWidth: 6, planes: 18 });
    const bad = (patch: Partial<Geometry>) => () => convGeometry({ kind: 'conv', ...LOLA, ...patch });
    expect(bad({ inChannels: 0 })).toThrow(/positive integers/);
    expect(bad({ kernel: [5, 0] as never })).toThrow(/kernel must be two positive integers/);
    expect(bad({ stride: [2] as never })).toThrow(/stride must be two positive integers/);
    expect(bad({ pads: [1, 1, -1, 1] })).toThrow(/pads must be four non-negative integers/);
    expect(bad({ kernel: [31, 5] })).toThrow(/does not fit the padded 30×30 input/);
    expect(bad({ pads: [5, 0, 0, 0] })).toThrow(/reaches a whole kernel/);
  });

  it('im2col planes times weight planes is the convolution, in any output layout', () => {
    for (const [, g] of GEOMETRIES) {
      const conv = makeConv(g, 3);
      const geometry = convGeometry(conv);
      const slots = 8192;
      // A scattered layout: feature f at slot 3f + 1, the others empty.
      const columns = new Int32Array(slots).fill(-1);
      for (let f = 0; f < geometry.outputs; f++) columns[3 * f + 1] = f;
      const plan = planConv(conv, slots, columns);
      const image = makeImages(g, 1, 5)[0]!;
      const planes = packConvInput(plan, image);
      expect(planes.length).toBe(geometry.planes);
      const expected = floatConv(conv, image);
      for (let f = 0; f < geometry.outputs; f++) {
        let sum = conv.bias![Math.floor(f / (geometry.outHeight * geometry.outWidth))]!;
        const o = Math.floor(f / (geometry.outHeight * geometry.outWidth));
        for (let p = 0; p < geometry.planes; p++) sum += conv.weights[o * geometry.planes + p]! * planes[p]![3 * f + 1]!;
        expect(sum).toBeCloseTo(expected[f]!, 12);
      }
    }
  });

  it('refuses a layout that loses outputs, inputs of the wrong size or not finite', () => {
    const conv = makeConv(LOLA, 1);
    expect(() => planConv(conv, 4096, new Int32Array(4096).fill(-1))).toThrow(/leaves some of the 845 outputs out/);
    const columns = Int32Array.from({ length: 4096 }, (_, s) => (s < 845 ? s : -1));
    const plan = planConv(conv, 4096, columns);
    expect(() => packConvInput(plan, new Float64Array(783))).toThrow(/input has 783 values, the convolution reads 1×28×28 = 784/);
    expect(() => packConvInput(plan, new Float64Array(784).fill(Number.NaN))).toThrow(/input value 0 is not a finite number/);
  });
});

describe('the packed plan of a network that starts with a convolution', () => {
  it('matches the float model (the plaintext reference of the same packing)', async () => {
    for (const [, g] of GEOMETRIES) {
      for (const activation of [[0, 0, 1], [0, 2, 1], [0.1, 0.5, 0.25, 0.02]]) {
        await yieldToEventLoop();
        const layers = network(g, 7, activation);
        const ref = referenceModel(layers, 4096);
        for (const x of makeImages(g, 3, 9)) {
          const float = floatEvaluate(layers, x);
          expect(maxAbsDiff(ref(x), float)).toBeLessThan(1e-9 * Math.max(1, maxAbs(float)));
        }
      }
    }
  });

  it('reports products, rotations and the lower bound it is measured against', () => {
    const layers = network(LOLA, 3, [0, 0, 1], 100);
    const context = { slots: 4096, primes: [2 ** 40, ...Array(5).fill(2 ** 30)], params: { scaleBits: 30 }, topLevel: 5 } as never;
    // The device's frame in plaintext: 25 real planes; the next dense layer reads the
    // shifted layout (32 diagonals); the last one holds its 10 rows side by side in one
    // ciphertext (1 product, 7 rotate-and-sum steps).
    const plan = planClassifier(context, layers, { weights: 'encrypted', input: 'plain' });
    expect(plan.plans[0]).toMatchObject({ kind: 'conv', complex: false });
    expect(plan.counts.ctMults).toBe(32 + 1 + 2);
    expect(plan.counts.plainMults).toBe(25);
    expect(plan.plans[4]).toMatchObject({ layout: 'rows', diagonals: 1, outStride: 128, sumSteps: [1, 2, 4, 8, 16, 32, 64] });
    expect(plan.outputStride).toBe(128);
    expect(plan.layerRotationSteps[4]).toEqual([1, 2, 4, 8, 16, 32, 64]);
    expect(plan.layerLowerBounds).toEqual([Math.ceil((25 * 845) / 4096), 0, Math.ceil((845 * 100) / 4096), 0, 1]);
    const later = [
      [1, 0, 1],
      [32, 7 + 3 + 5, 4],
      [1, 0, 1],
      [1, 7, 1],
    ];
    expect(plan.layerCounts.map((c) => [c.ctMults + c.plainMults, c.rotations, c.relins])).toEqual([[25, 0, 0], ...later]);
    expect(plan.lowerBoundMults).toBe(Math.ceil((25 * 845) / 4096) + Math.ceil((845 * 100) / 4096) + Math.ceil((100 * 10) / 4096));
    expect(plan.layerRotationSteps[0]).toEqual([]);
    expect(plan.depth).toBe(5);
    expect(plan.inputs).toBe(784);
    // Both encrypted: planes two per ciphertext, 13 products and one conjugation (Galois step 0).
    const complex = planClassifier(context, layers);
    expect(complex.plans[0]).toMatchObject({ kind: 'conv', complex: true });
    expect(complex.layerCounts.map((c) => [c.ctMults, c.rotations, c.relins])).toEqual([[13, 1, 1], ...later]);
    expect(complex.layerRotationSteps[0]).toEqual([0]);
    expect(complex.rotationSteps[0]).toBe(0);
    expect(complex.depth).toBe(5);
  });

  it('reads planes made one by one as it multiplies them and frees each after its product', () => {
    const layers = [makeConv({ kind: 'conv', inChannels: 2, inHeight: 9, inWidth: 9, outChannels: 3, kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] }, 5), { kind: 'poly', coeffs: [0, 0, 1] }, makeDense(75, 10, 6)] as Layer[];
    const folded = foldModel(layers);
    const plans = planLayers(folded, planActivations(layers), 256, CKKS_PLANNING);
    const weights = packModel(plans, folded);
    const [x] = makeImages(162, 1, 7);
    const planes = packInputs(firstPlan(plans), x!);
    const live = new Set<Float64Array>();
    let most = 0;
    const be = new (class extends PlainBackend {
      override free(v: Float64Array): void {
        live.delete(v);
      }
    })(256);
    const made = (p: number) => {
      const v = planes[p]!.slice();
      live.add(v);
      most = Math.max(most, live.size);
      return v;
    };
    const lazy = readOutputs(evaluateLayers(be, plans, weights, made), outputSlots(plans));
    expect(most).toBe(1);
    expect(live.size).toBe(0);
    expect(Array.from(lazy)).toEqual(Array.from(readOutputs(evaluateLayers(new PlainBackend(256), plans, weights, planes), outputSlots(plans))));
  });

  it('refuses a network with no dense layer', () => {
    const layers = network(LOLA, 3);
    expect(() => referenceModel([layers[0]!, { kind: 'poly', coeffs: [0, 0, 1] }], 4096)).toThrow(/needs a dense layer after its convolution/);
  });
});

const MODES: [string, Mode][] = [
  ['ct(W)×ct(x)', { weights: 'encrypted', input: 'encrypted' }],
  ['ct(W)×pt(x), the device’s frame in plaintext', { weights: 'encrypted', input: 'plain' }],
  ['pt(W)×ct(x)', { weights: 'plain', input: 'encrypted' }],
];

for (const [name, mode] of MODES) {
  describe(`the CryptoNets/LoLa network encrypted from its first layer, ${name}, 128-bit`, () => {
    let p: Protected;
    const layers = network(LOLA, 11, [0, 0, 1], 100);
    beforeAll(async () => {
      p = await protect(layers, 128, mode, 15);
    });
    afterAll(() => p?.dispose());

    it('fits N=8192 and matches the reference and the float model on 4 images', async () => {
      expect(p.he.params.polyModulusDegree).toBe(8192);
      await expectEncryptedMatches(p, layers, makeImages(LOLA, 4, 21), mode);
    });

    it('shares of 2 and 3 workers (each encrypting its own planes) add up to the same scores', async () => {
      const x = makeImages(LOLA, 1, 23)[0]!;
      const float = floatEvaluate(layers, x);
      for (const count of [2, 3]) {
        await yieldToEventLoop();
        const ranges = p.classifier.shares(count);
        expect(ranges.map(([lo, hi]) => hi - lo)).toEqual(mode.input === 'encrypted' && mode.weights === 'encrypted' ? (count === 2 ? [6, 7] : [4, 4, 5]) : count === 2 ? [12, 13] : [8, 8, 9]);
        const partials = ranges.map((_, i) => p.classifier.evaluateShare(x, i, count).partial);
        const got = p.decrypt(p.classifier.finish(partials.reverse()).result);
        expect(maxAbsDiff(got, float)).toBeLessThan(1e-2 * maxAbs(float));
        expect(() => p.classifier.finish(partials.slice(1))).toThrow(/do not cover|cover giant-step groups/);
      }
    });
  });
}

it('a blank frame in plaintext-input mode still yields the encrypted bias (no transparent ciphertext)', async () => {
  const layers = network(LOLA, 5, [0, 0, 1], 100);
  const p = await protect(layers, 128, { weights: 'encrypted', input: 'plain' }, 15);
  try {
    const x = new Float64Array(784);
    const got = p.decrypt(p.classifier.evaluate(x).result);
    const float = floatEvaluate(layers, x);
    // The scores are small here (about 0.2): compare within 1% of 1.0 rather than of them.
    expect(maxAbsDiff(got, float)).toBeLessThan(1e-2 * Math.max(1, maxAbs(float)));
  } finally {
    p.dispose();
  }
});
