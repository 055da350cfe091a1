import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceKeys, HeContext, type LayerShape, layoutSlots, OwnerKeys, planClassifier, planParameters } from '../../src/he';
import { nodeSeal } from '../../src/node/seal';
import { makeHead } from './helpers';

describe('classifier plan', () => {
  let he: HeContext;
  const mnist = makeHead([1600, 512, 10], 'realistic', 1);
  beforeAll(async () => {
    he = HeContext.create(await nodeSeal(), planParameters({ scheme: 'ckks', security: 128, depth: 3, precisionBits: 25 }));
  });
  afterAll(() => he?.dispose());

  it('reports depth, rotation steps per layer and operation counts of the MNIST head', () => {
    const plan = planClassifier(he, mnist);
    expect(plan.depth).toBe(3);
    // The first layer packs two values per slot: 128 diagonals, 16 baby × 8 giant steps, and
    // the conjugation (step 0) that takes the real part.
    expect(plan.plans[0]).toMatchObject({ complex: true, diagonals: 128, baby: 16, giant: 8 });
    expect(plan.layerRotationSteps).toEqual([[0, 1, 16, 512, 1024, 2048], [], [1, 4, 16, 32, 64, 128, 256]]);
    expect(plan.rotationSteps).toEqual([0, 1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048]);
    // 128 + 16 diagonal products and x² in the activation; 15 + 7 + 3 rotations and the
    // conjugation in layer 1, 3 + 3 + 5 in layer 2; one relinearization per giant step plus
    // the square. The first layer's 128 products are under its real-slot bound of 200.
    expect(plan.counts).toMatchObject({ ctMults: 145, rotations: 37, relins: 13, rescales: 3 });
    expect(plan.layerCounts[0]!.ctMults).toBeLessThanOrEqual(plan.layerLowerBounds[0]!);
    expect(plan.lowerBoundMults).toBe(200 + 2);
    // Real packing (as before): 256 + 16 products, 15 + 15 + 3 rotations in layer 1.
    const real = planClassifier(he, mnist, undefined, false);
    expect(real.counts).toMatchObject({ ctMults: 273, rotations: 44, relins: 21, rescales: 3 });
    expect(real.rotationSteps).toEqual([1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048]);
  });

  it('with a plaintext input the first layer rotates the input in the clear: no key for baby steps', () => {
    const plan = planClassifier(he, mnist, { weights: 'encrypted', input: 'plain' });
    expect(plan.layerRotationSteps[0]).toEqual([16, 512, 1024, 2048]);
  });

  it('Galois keys are generated for the plan’s steps only', () => {
    const plan = planClassifier(he, mnist);
    const owner = OwnerKeys.generate(he, plan.rotationSteps);
    const keys = DeviceKeys.load(he, owner.deviceKeyBytes());
    expect(keys.galois.size).toBe(plan.rotationSteps.length);
    expect(keys.steps).toEqual(plan.rotationSteps);
    keys.dispose();
    owner.dispose();
  });
});

describe('layoutSlots: the smallest ring whose ciphertexts hold the layout (activations may span several)', () => {
  const ENCRYPTED = { weights: 'encrypted', input: 'encrypted' } as const;
  const conv = (inChannels: number, side: number, outChannels: number, pad: number): LayerShape => ({
    kind: 'conv',
    inChannels,
    inHeight: side,
    inWidth: side,
    outChannels,
    kernel: [3, 3],
    stride: [1, 1],
    pads: [pad, pad, pad, pad],
  });
  const square: LayerShape = { kind: 'poly', coeffs: [0, 0, 1] };

  it('needs no larger ring for activations that span several ciphertexts, only for what must fit one', () => {
    // A head's 1600 inputs and the paper CNN's 64 maps of 13×13 span ciphertexts at the smallest ring.
    expect(layoutSlots(makeHead([1600, 512, 10], 'realistic', 1), ENCRYPTED)).toBe(512);
    const block = [conv(32, 13, 64, 1), square, conv(64, 13, 64, 0), square, { kind: 'dense', inputs: 64 * 11 * 11, outputs: 10 } as LayerShape];
    expect(layoutSlots(block, ENCRYPTED)).toBe(512);
    expect(layoutSlots(block, { weights: 'encrypted', input: 'plain' })).toBe(512);
    // A dense layer's outputs and one map of a convolution must fit one ciphertext.
    expect(layoutSlots([{ kind: 'dense', inputs: 100, outputs: 3000 }, square, { kind: 'dense', inputs: 3000, outputs: 10 }], ENCRYPTED)).toBe(4096);
    expect(layoutSlots([conv(1, 40, 4, 1), square, conv(4, 40, 4, 1), square, { kind: 'dense', inputs: 4 * 1600, outputs: 10 }], ENCRYPTED)).toBe(2048);
  });

  it('refuses what no ring holds with the packing’s reason', () => {
    expect(() => layoutSlots([{ kind: 'dense', inputs: 10, outputs: 40000 }], ENCRYPTED)).toThrow(/a 40000×10 layer's outputs do not fit in 16384 slots; choose a larger ring degree/);
    expect(() => layoutSlots([conv(1, 200, 2, 1), square, conv(2, 200, 2, 1), square, { kind: 'dense', inputs: 2 * 40000, outputs: 10 }], ENCRYPTED)).toThrow(/layer 2: one map of 200×200 does not fit one ciphertext of 16384 slots/);
  });
});
