import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  classifierDepth,
  decryptResult,
  DEFAULT_MODE,
  DeviceKeys,
  EncryptedClassifier,
  encryptClassifier,
  floatEvaluate,
  HeContext,
  OwnerKeys,
  planClassifier,
  planParameters,
} from '../../src/he';
import { unpackCiphertext } from '../../src/he/bitpack';
import { readContainer, writeContainer } from '../../src/he/container';
import { encodeComplex, encryptComplex, halves, monomialPlain, nttUnit } from '../../src/he/complex';
import { ModulusChain } from '../../src/he/context';
import { nodeSeal } from '../../src/node/seal';
import { makeHead, makeInputs, maxAbs, maxAbsDiff } from './helpers';

/**
 * SEAL's own NTT of X^(N/2) at `level`: a BFV context on the same ring and primes lifts a
 * coefficient plaintext and transforms it (plainTransformToNtt); its data, prime by prime.
 */
function sealTransformOfMonomial(he: HeContext, level: number): BigUint64Array {
  const { seal } = he;
  const n = he.params.polyModulusDegree;
  const parms = seal.EncryptionParameters(seal.SchemeType.bfv);
  const bits = seal.CoeffModulus.Create(n, Int32Array.from(he.params.coeffModulusBits));
  const t = seal.Modulus(BigInt(65537));
  parms.setPolyModulusDegree(n);
  parms.setCoeffModulus(bits);
  parms.setPlainModulus(t);
  const context = seal.Context(parms, true, seal.SecurityLevel.none);
  const chain = new ModulusChain(context);
  const evaluator = seal.Evaluator(context);
  const coefficients = seal.PlainText({ coeffCount: n });
  const ntt = seal.PlainText();
  try {
    const zero = coefficients.saveArray(seal.ComprModeType.none);
    new DataView(zero.buffer, zero.byteOffset).setBigUint64(zero.length - 8 * n + 8 * (n / 2), 1n, true);
    coefficients.loadArray(context, zero);
    evaluator.plainTransformToNtt(coefficients, chain.parmsIdAt(level), ntt);
    const bytes = ntt.saveArray(seal.ComprModeType.none);
    const count = n * (level + 1);
    const view = new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 8 * count);
    return BigUint64Array.from({ length: count }, (_, k) => view.getBigUint64(8 * k, true));
  } finally {
    [ntt, coefficients, evaluator, chain, context, t, bits, parms].forEach((o) => o.delete());
  }
}

describe('complex packing: X^(N/2) and two values per slot', () => {
  let he: HeContext;
  let owner: OwnerKeys;
  beforeAll(async () => {
    he = HeContext.create(await nodeSeal(), { scheme: 'ckks', security: 128, polyModulusDegree: 4096, coeffModulusBits: [35, 26, 47], scaleBits: 26, depth: 1 });
    owner = OwnerKeys.generate(he, [0]);
  });
  afterAll(() => {
    owner?.dispose();
    he?.dispose();
  });

  it('builds X^(N/2) in NTT form at scale 1, equal to SEAL’s own transform of X^(N/2), at every level', () => {
    const n = 4096;
    for (const level of [1, 0]) {
      const mono = monomialPlain(he, level);
      try {
        expect(mono.isNttForm).toBe(true);
        expect(mono.scale).toBe(1);
        expect(mono.coeffCount).toBe(n * (level + 1));
        const bytes = mono.saveArray(he.seal.ComprModeType.none);
        const view = new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 8 * n * (level + 1));
        const data = BigUint64Array.from({ length: n * (level + 1) }, (_, k) => view.getBigUint64(8 * k, true));
        expect(data).toEqual(sealTransformOfMonomial(he, level));
        for (let p = 0; p <= level; p++) {
          const q = BigInt(he.primes[p]!);
          const unit = nttUnit(q, n);
          expect((unit * unit) % q).toBe(q - 1n);
          expect(data[p * n]).toBe(unit);
        }
      } finally {
        mono.delete();
      }
    }
  });

  it('multiplies slots by ±i exactly: X^(N/2) twice negates, and re + i·im times (a − i·b) has real part re·a + im·b', () => {
    const { seal } = he;
    const slots = he.slots;
    const scale = 2 ** 26;
    const mono = monomialPlain(he, he.topLevel);
    const encryptor = seal.Encryptor(he.context, owner.publicKey, owner.secretKey);
    const decryptor = seal.Decryptor(he.context, owner.secretKey);
    const [ct, weight, product, conjugate] = [seal.CipherText(), seal.CipherText(), seal.CipherText(), seal.CipherText()];
    const [scratch, out] = [seal.PlainText(), seal.PlainText()];
    // Step 0 of a key set is the conjugation.
    const device = DeviceKeys.load(he, owner.deviceKeyBytes());
    try {
      const re = Float64Array.from({ length: slots }, (_, j) => Math.sin(j));
      const im = Float64Array.from({ length: slots }, (_, j) => Math.cos(0.7 * j));
      he.encode(re, scale, he.topLevel, scratch);
      encryptor.encrypt(scratch, ct);
      he.evaluator.multiplyPlain(ct, mono, ct);
      he.evaluator.multiplyPlain(ct, mono, ct);
      decryptor.decrypt(ct, out);
      expect(ct.scale).toBe(scale);
      expect(maxAbsDiff(he.encoder.decode(out).subarray(0, slots), re.map((v) => -v))).toBeLessThan(1e-4);

      const z = new Float64Array(2 * slots);
      z.set(re);
      z.set(im, slots);
      encryptComplex(he, encryptor, mono, z, scale, ct, scratch);
      const a = Float64Array.from({ length: slots }, (_, j) => Math.sin(1.3 * j));
      const b = Float64Array.from({ length: slots }, (_, j) => Math.cos(0.3 * j));
      const w = new Float64Array(2 * slots);
      w.set(a);
      w.set(b.map((v) => -v), slots);
      const plainWeight = encodeComplex(he, mono, w, he.primes[he.topLevel]!, he.topLevel);
      encryptor.encryptSymmetric(plainWeight, weight);
      plainWeight.delete();
      he.evaluator.multiply(ct, weight, product);
      he.evaluator.relinearize(product, device.relin, product);
      he.evaluator.complexConjugate(product, device.galois, conjugate);
      he.evaluator.add(product, conjugate, product);
      he.evaluator.rescaleToNext(product, product);
      decryptor.decrypt(product, out);
      const expected = re.map((v, j) => 2 * (v * a[j]! + im[j]! * b[j]!));
      expect(maxAbsDiff(he.encoder.decode(out).subarray(0, slots), expected)).toBeLessThan(1e-3);
    } finally {
      [mono, encryptor, decryptor, ct, weight, product, conjugate, scratch, out].forEach((o) => o.delete());
      device.dispose();
    }
  });

  it('refuses a complex vector of the wrong length', () => {
    expect(() => halves(new Float64Array(10), 4)).toThrow(/a complex slot vector has 8 values/);
  });

  it('a classifier encrypted with real packing only, or before complex packing and bit-packed weights (no word of either in its header), loads and evaluates as such', async () => {
    const layers = makeHead([256, 64, 10], 'realistic', 31);
    const ctx = HeContext.create(he.runtime, planParameters({ scheme: 'ckks', security: 128, depth: classifierDepth(layers), precisionBits: 25 }));
    const steps = [...planClassifier(ctx, layers).rotationSteps, ...planClassifier(ctx, layers, DEFAULT_MODE, false).rotationSteps];
    const keyOwner = OwnerKeys.generate(ctx, steps);
    const keys = DeviceKeys.load(ctx, keyOwner.deviceKeyBytes());
    try {
      const x = makeInputs(256, 1, 'realistic', 32)[0]!;
      const float = floatEvaluate(layers, x);
      const real = await encryptClassifier(ctx, keyOwner, layers, DEFAULT_MODE, undefined, false);
      const { header, sections } = readContainer<Record<string, unknown>>(real, 'classifier');
      expect(header).toMatchObject({ complex: false, weightEncoding: 'bitpacked' });
      // As classifiers were written before complex packing and bit-packed weights: neither
      // word in the header, weights as SEAL's zstd serializations.
      const { complex: _, weightEncoding: __, ...before } = header;
      const zstd = sections.map((section) => {
        const ct = ctx.seal.CipherText();
        ct.loadArray(ctx.context, unpackCiphertext(section, ctx.primes, 'weight'));
        const bytes = ct.saveArray(ctx.seal.ComprModeType.zstd);
        ct.delete();
        return bytes;
      });
      const cases: [Uint8Array, boolean][] = [
        [real, false],
        [writeContainer('classifier', before, zstd), false],
        [await encryptClassifier(ctx, keyOwner, layers), true],
      ];
      for (const [bytes, complex] of cases) {
        const classifier = EncryptedClassifier.load(ctx, keys, bytes);
        try {
          expect(classifier.plan.plans[0]).toMatchObject({ kind: 'dense', complex });
          const got = decryptResult(ctx, keyOwner, classifier.evaluate(x).result);
          expect(maxAbsDiff(got, float)).toBeLessThan(1e-3 * maxAbs(float));
        } finally {
          classifier.dispose();
        }
      }
      expect(() => EncryptedClassifier.load(ctx, keys, writeContainer('classifier', { ...header, complex: 'yes' }, sections))).toThrow(/neither complex nor real packing/);
      expect(() => EncryptedClassifier.load(ctx, keys, writeContainer('classifier', { ...header, weightEncoding: 'gzip' }, sections))).toThrow(/unknown weight encoding "gzip"/);
      expect(() => EncryptedClassifier.load(ctx, keys, writeContainer('classifier', before, sections))).toThrow(/E_CORRUPT|weight section/);
    } finally {
      keys.dispose();
      keyOwner.dispose();
      ctx.dispose();
    }
  });
});
