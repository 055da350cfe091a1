import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceKeys, HeContext, OwnerKeys, planClassifier, planParameters } from '../../src/he';
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
    expect(plan.layerRotationSteps).toEqual([[1, 16, 512, 1024, 2048], [], [1, 4, 16, 32, 64, 128, 256]]);
    expect(plan.rotationSteps).toEqual([1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048]);
    // 256 + 16 diagonal products and x² in the activation; 15 + 15 + 3 rotations in layer 1,
    // 3 + 3 + 5 in layer 2; one relinearization per giant step plus the square.
    expect(plan.counts).toMatchObject({ ctMults: 273, rotations: 44, relins: 21, rescales: 3 });
    expect(plan.lowerBoundMults).toBe(200 + 2);
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
