import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { floatEvaluate, type Mode, planClassifier, referenceModel } from '../../src/he';
import { HEADS } from './heads';
import { argmax, makeHead, makeInputs, maxAbs, maxAbsDiff, protect, type Protected, yieldToEventLoop } from './helpers';

const MODES: [string, Mode][] = [
  ['ct(W)×pt(x), the paper’s plaintext-input mode', { weights: 'encrypted', input: 'plain' }],
  ['pt(W)×ct(x), as TenSEAL and LoLa do', { weights: 'plain', input: 'encrypted' }],
];

for (const [modeName, mode] of MODES) {
  describe(modeName, () => {
    for (const [name, widths] of Object.entries(HEADS)) {
      describe(name, () => {
        let p: Protected;
        const layers = makeHead(widths, 'realistic', widths[0]! + 3);
        beforeAll(async () => {
          p = await protect(layers, 128, mode);
        });
        afterAll(() => p?.dispose());

        it('20 inputs match the reference and the float model', async () => {
          const referenceOf = referenceModel(layers, p.he.slots);
          for (const x of makeInputs(widths[0]!, 20, 'realistic', 11)) {
            await yieldToEventLoop();
            const float = floatEvaluate(layers, x);
            const got = p.decrypt(p.classifier.evaluate(x).result);
            expect(maxAbsDiff(got, referenceOf(x))).toBeLessThan(1e-3 * maxAbs(float));
            expect(argmax(got)).toBe(argmax(float));
          }
        });

        it('counts its products by kind, as planned', () => {
          const x = makeInputs(widths[0]!, 1, 'realistic', 12)[0]!;
          const { counts } = p.classifier.evaluate(x);
          expect(counts).toEqual(planClassifier(p.he, layers, mode).counts);
          if (mode.weights === 'plain') expect(counts.ctMults).toBe(widths.length > 2 ? 1 : 0);
        });
      });
    }

    it('an all-zero input still yields the bias (no transparent ciphertext)', async () => {
      const layers = makeHead([512, 10], 'realistic', 5);
      const p = await protect(layers, 128, mode);
      try {
        const x = new Float64Array(512);
        const got = p.decrypt(p.classifier.evaluate(x).result);
        expect(maxAbsDiff(got, floatEvaluate(layers, x))).toBeLessThan(1e-4);
      } finally {
        p.dispose();
      }
    });
  });
}
