import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { floatEvaluate, referenceModel, type SecurityBits } from '../../src/he';
import { nodeSeal } from '../../src/node/seal';
import {
  argmax,
  makeHead,
  makeInputs,
  maxAbs,
  maxAbsDiff,
  protect,
  type Protected,
  type WeightKind,
  yieldToEventLoop,
} from './helpers';

/** The heads of the papers' shapes (issue 2): input width, hidden widths, classes. */
export const HEADS: Record<string, number[]> = {
  'MNIST 1600→512→x²+2x→10': [1600, 512, 10],
  'CIFAR-10 2304→512→x²+2x→10': [2304, 512, 10],
  'last layer 512→10': [512, 10],
  'small 256→64→x²+2x→10': [256, 64, 10],
};

const INPUTS = 200;

/**
 * For each head and both weight kinds: the decrypted output matches the plaintext
 * reference of the same packing and the float model within 1e-3 of the largest |logit|,
 * and its argmax equals the float model's, on 200 inputs in all (100 per weight kind).
 */
export function describeHeads(security: SecurityBits): void {
  describe(`encrypted heads at ${security}-bit security (ct(W)×ct(x))`, () => {
    for (const [name, widths] of Object.entries(HEADS)) {
      describe(name, () => {
        for (const [k, kind] of (['random', 'realistic'] as WeightKind[]).entries()) {
          let p: Protected;
          const seed = widths.reduce((a, b) => a * 31 + b, security + k);
          const layers = makeHead(widths, kind, seed);
          beforeAll(async () => {
            p = await protect(layers, security);
          });
          afterAll(() => p?.dispose());

          it(`${kind} weights: ${INPUTS / 2} inputs match the reference and the float model`, async () => {
            const runtime = await nodeSeal();
            let worst = 0;
            let agree = 0;
            let heapAfterFirst = 0;
            const inputs = makeInputs(widths[0]!, INPUTS / 2, kind, seed + 1);
            const referenceOf = referenceModel(layers, p.he.slots);
            for (const [i, x] of inputs.entries()) {
              const got = p.decrypt(p.classifier.evaluate(x).result);
              const reference = referenceOf(x);
              const float = floatEvaluate(layers, x);
              const bound = maxAbs(float);
              expect(maxAbsDiff(reference, float)).toBeLessThan(1e-9 * Math.max(1, bound));
              worst = Math.max(worst, maxAbsDiff(got, reference) / bound);
              expect(maxAbsDiff(got, reference)).toBeLessThan(1e-3 * bound);
              expect(maxAbsDiff(got, float)).toBeLessThan(1e-3 * bound);
              if (argmax(got) === argmax(float)) agree++;
              if (i === 0) heapAfterFirst = runtime.heapBytes();
              await yieldToEventLoop();
            }
            expect(agree).toBe(inputs.length);
            expect(worst).toBeGreaterThan(0); // CKKS is approximate: an exact match would mean no encryption
            expect(runtime.heapBytes()).toBe(heapAfterFirst);
          });
        }
      });
    }
  });
}
