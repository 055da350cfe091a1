import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bgvReferenceModel, floatEvaluate, type Layer, type Mode, type SecurityBits, verifyBgvClassifier } from '../../src/he';
import { nodeSeal } from '../../src/node/seal';
import { clampInput } from '../../src/he/bgv/fixed-point';
import { mnistHead, PAPER_MODEL, protectBgv, type BgvProtected } from './bgv-helpers';
import { argmax, yieldToEventLoop } from './helpers';

/**
 * Per security level and input mode: images (enough to compare, few enough for CI) and the
 * ring degree and number of CRT moduli the planner picks as fastest.
 */
const CASES: [SecurityBits, Mode['input'], number, [number, number]][] = [
  [128, 'encrypted', 12, [16384, 2]],
  [128, 'plain', 8, [16384, 2]],
  [192, 'encrypted', 3, [16384, 2]],
  [192, 'plain', 3, [16384, 2]],
  [256, 'encrypted', 3, [32768, 2]],
  [256, 'plain', 3, [16384, 3]],
];

describe.skipIf(!existsSync(PAPER_MODEL))('BGV: the paper’s MNIST head on real MNIST test images', () => {
  let head: Layer[];
  let calibration: Float32Array[];
  let test: Float32Array[];
  beforeAll(async () => {
    ({ head, calibration, test } = await mnistHead(300, 12));
  });

  for (const [security, input, images, expected] of CASES) {
    describe(`${security}-bit, ${input} input`, () => {
      let p: BgvProtected;
      beforeAll(async () => {
        p = await protectBgv(head, { security, calibration, mode: { weights: 'encrypted', input } });
        expect([p.ctx.params.polyModulusDegree, p.ctx.params.plainModulusBits.length]).toEqual(expected);
      });
      afterAll(() => p?.dispose());

      it(`${images} images: the decrypted integers equal the integer reference exactly, the labels the float model's`, async () => {
        const runtime = await nodeSeal();
        const reference = bgvReferenceModel(p.plan, head);
        let heapAfterFirst = 0;
        for (const [i, x] of test.slice(0, images).entries()) {
          const { result } = p.classifier.evaluate(x);
          const got = p.decrypt(result);
          expect(got.integers).toEqual(reference(x));
          expect(got.noiseBudgetBits).toBeGreaterThan(0);
          expect(argmax(got.scores)).toBe(argmax(floatEvaluate(head, clampInput(p.plan.fixedPoint, x))));
          if (i === 0) heapAfterFirst = runtime.heapBytes();
          await yieldToEventLoop();
        }
        expect(runtime.heapBytes()).toBe(heapAfterFirst);
      });

      if (security === 128 && input === 'encrypted') {
        it('the owner verifies the noise budget at protect time with one real evaluation', () => {
          const { noiseBudgetBits } = verifyBgvClassifier(p.ctx, p.owner, p.classifierBytes, head, [calibration[0]!]);
          expect(noiseBudgetBits).toBeGreaterThan(0);
        });
      }
    });
  }
});
