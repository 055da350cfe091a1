import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeContext, HeError } from '../../src/he';
import { packSeeded, unpackSeeded } from '../../src/he/bitpack';
import { nodeSeal } from '../../src/node/seal';

describe('bit-packed seeded ciphertexts', () => {
  let he: HeContext;
  const seeded: Uint8Array[] = [];
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
      [serializable, plain].forEach((o) => o.delete());
    }
    [encryptor, publicKey, secret, generator].forEach((o) => o.delete());
  });
  afterAll(() => he?.dispose());

  it('restores the uncompressed serialization byte for byte, at every level, in ⌈log2 q⌉ bits per residue', () => {
    for (const [i, bytes] of seeded.entries()) {
      const packed = packSeeded(bytes, he.primes, 'weight');
      expect(unpackSeeded(packed, he.primes, 'weight')).toEqual(bytes);
      const primes = 2 - i;
      const words = 4096 * primes;
      // The residues of q_0 (35 bits) and q_1 (26 bits) instead of 64-bit words.
      const packedWords = (4096 * (35 + (primes === 2 ? 26 : 0))) / 8;
      expect(packed.length - packedWords).toBe(bytes.length - 8 * words + 8);
      const ct = he.seal.CipherText();
      ct.loadArray(he.context, unpackSeeded(packed, he.primes, 'weight'));
      expect(ct.coeffModulusSize).toBe(primes);
      ct.delete();
    }
  });

  it('refuses what is not a packed ciphertext, a truncated one and a residue wider than its prime', () => {
    const packed = packSeeded(seeded[0]!, he.primes, 'weight');
    const error = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e instanceof HeError ? `${e.code}: ${e.message}` : `not an HeError: ${String(e)}`;
      }
      return 'no error';
    };
    expect(error(() => unpackSeeded(new Uint8Array(50), he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3 is not a packed ciphertext/);
    expect(error(() => unpackSeeded(packed.subarray(0, packed.length - 1), he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3 has \d+ bytes, not the size its words need/);
    expect(error(() => unpackSeeded(packed, [he.primes[0]!], 'weight 3'))).toMatch(/E_CORRUPT: weight 3 holds 8192 words for N=4096/);
    expect(error(() => packSeeded(new Uint8Array(200), he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3 is not an uncompressed SEAL ciphertext/);
    const wide = seeded[0]!.slice();
    new DataView(wide.buffer).setBigUint64(113, 2n ** 40n, true);
    expect(error(() => packSeeded(wide, he.primes, 'weight 3'))).toMatch(/E_CORRUPT: weight 3: word 0 does not fit the 35 bits of its prime/);
  });
});
