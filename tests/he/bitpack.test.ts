import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptResult, floatEvaluate, HeContext, HeError } from '../../src/he';
import { packCiphertext, unpackCiphertext } from '../../src/he/bitpack';
import { readContainer, writeContainer } from '../../src/he/container';
import { nodeSeal } from '../../src/node/seal';
import { codeOf, makeHead, makeInputs, maxAbs, maxAbsDiff, messageOf, protect, type Protected } from './helpers';

describe('bit-packed ciphertexts', () => {
  let he: HeContext;
  const seeded: Uint8Array[] = [];
  const whole: Uint8Array[] = [];
  beforeAll(async () => {
    he = HeContext.create(await nodeSeal(), { scheme: 'ckks', security: 128, polyModulusDegree: 4096, coeffModulusBits: [35, 26, 47], scaleBits: 26, depth: 1 });
    const { seal } = he;
    const generator = seal.KeyGenerator(he.context);
    const secret = generator.secretKey();
    const publicKey = generator.createPublicKey();
    const encryptor = seal.Encryptor(he.context, publicKey, secret);
    for (const level of [1, 0]) {
      const plain = he.encode(Float64Array.from({ length: he.slots }, (_, i) => Math.sin(i)), 2 ** 26, level);
      const serializable = encryptor.encryptSymmetricSerializable(plain);
      seeded.push(serializable.saveArray(seal.ComprModeType.none));
      const ct = seal.CipherText();
      encryptor.encrypt(plain, ct);
      whole.push(ct.saveArray(seal.ComprModeType.none));
      [serializable, plain, ct].forEach((o) => o.delete());
    }
    [encryptor, publicKey, secret, generator].forEach((o) => o.delete());
  });
  afterAll(() => he?.dispose());

  it('restores the uncompressed serialization byte for byte, at every level, in ⌈log2 q⌉ bits per residue', () => {
    for (const [i, bytes] of seeded.entries()) {
      const packed = packCiphertext(bytes, he.primes, 'weight');
      expect(unpackCiphertext(packed, he.primes, 'weight')).toEqual(bytes);
      const primes = 2 - i;
      const words = 4096 * primes;
      // The residues of q_0 (35 bits) and q_1 (26 bits) instead of 64-bit words.
      const packedWords = (4096 * (35 + (primes === 2 ? 26 : 0))) / 8;
      expect(packed.length - packedWords).toBe(bytes.length - 8 * words + 8);
      const ct = he.seal.CipherText();
      ct.loadArray(he.context, unpackCiphertext(packed, he.primes, 'weight'));
      expect(ct.coeffModulusSize).toBe(primes);
      ct.delete();
    }
  });

  it('packs a whole ciphertext (both polynomials, each row in its prime\'s width) byte for byte', () => {
    for (const [i, bytes] of whole.entries()) {
      const packed = packCiphertext(bytes, he.primes, 'result');
      expect(unpackCiphertext(packed, he.primes, 'result')).toEqual(bytes);
      const primes = 2 - i;
      const packedWords = (2 * 4096 * (35 + (primes === 2 ? 26 : 0))) / 8;
      expect(packed.length - packedWords).toBe(bytes.length - 8 * 2 * 4096 * primes + 8);
    }
  });

  it('refuses what is not a packed ciphertext, a truncated one and a residue wider than its prime', () => {
    const packed = packCiphertext(seeded[0]!, he.primes, 'weight');
    const error = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e instanceof HeError ? `${e.code}: ${e.message}` : `not an HeError: ${String(e)}`;
      }
      return 'no error';
    };
    expect(error(() => unpackCiphertext(new Uint8Array(50), he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3 is not a packed ciphertext/);
    expect(error(() => unpackCiphertext(packed.subarray(0, packed.length - 1), he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3 has \d+ bytes, not the size its words need/);
    expect(error(() => unpackCiphertext(packed, [he.primes[0]!], 'weight 3'))).toMatch(/E_CORRUPT: weight 3 holds 8192 words for N=4096, 2 primes and 2 polynomials/);
    const extra = packed.slice();
    new DataView(extra.buffer).setBigUint64(4 + 16 + 32 + 1 + 8 + 8 + 8 + 8 + 8 + 16, 3n * 8192n, true);
    expect(error(() => unpackCiphertext(extra, he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3 holds 24576 words for N=4096, 2 primes and 2 polynomials/);
    expect(error(() => packCiphertext(new Uint8Array(200), he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3 is not an uncompressed SEAL ciphertext/);
    const wide = seeded[0]!.slice();
    new DataView(wide.buffer).setBigUint64(113, 2n ** 40n, true);
    expect(error(() => packCiphertext(wide, he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3: word 0 does not fit the 35 bits of its prime/);
  });
});

describe('results travel bit-packed', () => {
  const layers = makeHead([256, 64, 10], 'realistic', 41);
  const x = makeInputs(256, 1, 'realistic', 42)[0]!;
  let p: Protected;
  beforeAll(async () => {
    p = await protect(layers);
  });
  afterAll(() => p?.dispose());

  it('a result is its ciphertext in ⌈log2 q⌉ bits per residue, and decrypts to the float model', () => {
    const result = p.classifier.evaluate(x).result;
    const { header, sections } = readContainer<{ encoding?: string }>(result, 'result');
    expect(header.encoding).toBe('bitpacked');
    const bits = Math.ceil(Math.log2(p.he.primes[0]! + 1));
    // The scores come back at the last level: one prime, two polynomials of N residues.
    expect(sections[0]!.length).toBe(4 + 16 + 32 + 1 + 8 + 8 + 8 + 8 + 8 + 16 + 8 + 4 + (2 * p.he.params.polyModulusDegree * bits) / 8);
    const float = floatEvaluate(layers, x);
    expect(maxAbsDiff(p.decrypt(result), float)).toBeLessThan(1e-3 * maxAbs(float));
  });

  it('a result written before (SEAL zstd, no encoding word) still decrypts to the same scores', () => {
    const result = p.classifier.evaluate(x).result;
    const { header, sections } = readContainer<{ encoding?: string; sections?: unknown }>(result, 'result');
    const ct = p.he.seal.CipherText();
    ct.loadArray(p.he.context, unpackCiphertext(sections[0]!, p.he.primes, 'result'));
    const zstd = ct.saveArray(p.he.seal.ComprModeType.zstd);
    ct.delete();
    delete header.encoding;
    delete header.sections;
    const old = writeContainer('result', header, [zstd]);
    expect(Array.from(decryptResult(p.he, p.owner, old))).toEqual(Array.from(p.decrypt(result)));
  });

  it('refuses an unknown encoding and a packed section cut short', () => {
    const result = p.classifier.evaluate(x).result;
    const { header, sections } = readContainer<{ encoding?: string; sections?: unknown }>(result, 'result');
    delete header.sections;
    expect(messageOf(() => decryptResult(p.he, p.owner, writeContainer('result', { ...header, encoding: 'zip' }, sections)))).toMatch(/unknown result encoding "zip"/);
    expect(codeOf(() => decryptResult(p.he, p.owner, writeContainer('result', header, [sections[0]!.subarray(0, sections[0]!.length - 1)])))).toBe('E_CORRUPT');
    // The old reader of a packed section (no encoding word): SEAL refuses it, typed.
    const { encoding: _, ...unmarked } = header;
    expect(codeOf(() => decryptResult(p.he, p.owner, writeContainer('result', unmarked, sections)))).toBe('E_CORRUPT');
  });
});
