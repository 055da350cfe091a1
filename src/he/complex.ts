import type { HeContext } from './context';
import { fail } from './errors';
import type { CipherText, Encryptor, PlainText } from './seal';

/**
 * Two real values per CKKS slot (complex packing, DESIGN.md 2b). node-seal's encoder takes
 * real vectors only; the imaginary unit comes from the monomial X^(N/2), which multiplies
 * slot j by (−1)^j·i exactly (no noise, and no scale change at scale 1). A complex vector
 * z = re + i·im is then enc(re) + X^(N/2)·enc((−1)^j·im).
 *
 * In the engine a complex slot vector is a Float64Array of 2·slots values: the real parts,
 * then the imaginary parts.
 */

/** Splits a complex vector (re | im) into its two halves. */
export function halves(z: Float64Array, slots: number): [Float64Array, Float64Array] {
  if (z.length !== 2 * slots) fail('E_SHAPE', `a complex slot vector has ${2 * slots} values (real parts, then imaginary parts), got ${z.length}`);
  return [z.subarray(0, slots), z.subarray(slots)];
}

/** The real vector that X^(N/2) turns into i·im: slot j holds (−1)^j·im_j. */
function alternated(im: Float64Array): Float64Array {
  return im.map((v, j) => (j % 2 === 0 ? v : -v));
}

/** A plaintext's coefficient data: the last coeffCount uint64 values of its uncompressed serialization. */
function dataOffset(bytes: Uint8Array, count: number, what: string): number {
  const offset = bytes.length - 8 * count;
  if (offset <= 0) fail('E_PARAMS', `${what}: the serialized plaintext (${bytes.length} bytes) is shorter than its ${count} coefficients`);
  return offset;
}

const pow = (base: bigint, exp: bigint, m: bigint): bigint => {
  let r = 1n;
  let b = base % m;
  for (let e = exp; e > 0n; e >>= 1n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
  }
  return r;
};

/**
 * ψ^(N/2) mod q, where ψ is the root of unity SEAL's NTT uses for q: the smallest
 * primitive 2N-th root (every primitive 2N-th root is an odd power of any one of them).
 */
export function nttUnit(q: bigint, n: number): bigint {
  const order = BigInt(2 * n);
  for (let x = 2n; x < q; x++) {
    const g = pow(x, (q - 1n) / order, q);
    if (pow(g, BigInt(n), q) !== q - 1n) continue;
    const step = (g * g) % q;
    let root = g;
    let smallest = g;
    for (let i = 1; i < n; i++) {
      root = (root * step) % q;
      if (root < smallest) smallest = root;
    }
    return pow(smallest, BigInt(n / 2), q);
  }
  fail('E_PARAMS', `${q} has no primitive ${2 * n}-th root of unity`);
}

/**
 * X^(N/2) as a CKKS plaintext in NTT form at `level`, scale 1. SEAL's NTT holds the
 * polynomial's values at ψ^(2·brev(k)+1) (brev: bit reversal of k), and X^(N/2) there is
 * ψ^(N/2)·(−1)^brev(k): +ψ^(N/2) in the first half of each prime's block, −ψ^(N/2) in the
 * second. node-seal cannot build a plaintext from its data, so these values replace the
 * coefficient data in the uncompressed serialization of an encoding of zeros at that
 * level and scale 1 (tests check them against SEAL's own transform of X^(N/2)).
 */
export function monomialPlain(he: HeContext, level: number): PlainText {
  const n = he.params.polyModulusDegree;
  const count = n * (level + 1);
  const plain = he.encode(new Float64Array(he.slots), 1, level);
  try {
    const bytes = plain.saveArray(he.seal.ComprModeType.none);
    const data = new DataView(bytes.buffer, bytes.byteOffset + dataOffset(bytes, count, 'X^(N/2)'), 8 * count);
    for (let p = 0; p <= level; p++) {
      const q = BigInt(he.primes[p]!);
      const unit = nttUnit(q, n);
      for (let k = 0; k < n; k++) data.setBigUint64(8 * (p * n + k), k < n / 2 ? unit : q - unit, true);
    }
    plain.loadArray(he.context, bytes);
    return plain;
  } catch (error) {
    plain.delete();
    throw error;
  }
}

/**
 * The device's side: encrypts the complex vector z (re | im) with the public key in one
 * encryption: enc((−1)^j·im)·X^(N/2) + re. `mono` is monomialPlain at the top level.
 */
export function encryptComplex(he: HeContext, encryptor: Encryptor, mono: PlainText, z: Float64Array, scale: number, out: CipherText, scratch: PlainText): void {
  const [re, im] = halves(z, he.slots);
  he.encode(alternated(im), scale, he.topLevel, scratch);
  encryptor.encrypt(scratch, out);
  he.evaluator.multiplyPlain(out, mono, out);
  he.encode(re, scale, he.topLevel, scratch);
  he.evaluator.addPlain(out, scratch, out);
}

/**
 * The owner's side: z (re | im) as one plaintext at `level` and `scale`, so that it can be
 * encrypted with the secret key as a seeded ciphertext (half the size of a product of a
 * ciphertext with X^(N/2)). The sum re + X^(N/2)·alt(im) is formed on the NTT data, prime
 * by prime; `mono` is monomialPlain at `level`.
 */
export function encodeComplex(he: HeContext, mono: PlainText, z: Float64Array, scale: number, level: number): PlainText {
  const { seal } = he;
  const [re, im] = halves(z, he.slots);
  const n = he.params.polyModulusDegree;
  const count = n * (level + 1);
  const plain = he.encode(re, scale, level);
  const imaginary = he.encode(alternated(im), scale, level);
  try {
    const sum = plain.saveArray(seal.ComprModeType.none);
    const b = imaginary.saveArray(seal.ComprModeType.none);
    const m = mono.saveArray(seal.ComprModeType.none);
    const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset + dataOffset(bytes, count, 'complex plaintext'), 8 * count);
    const [vs, vb, vm] = [view(sum), view(b), view(m)];
    for (let p = 0; p <= level; p++) {
      const q = BigInt(he.primes[p]!);
      for (let k = p * n; k < (p + 1) * n; k++) {
        const y = vb.getBigUint64(8 * k, true);
        if (y !== 0n) vs.setBigUint64(8 * k, (vs.getBigUint64(8 * k, true) + vm.getBigUint64(8 * k, true) * y) % q, true);
      }
    }
    plain.loadArray(he.context, sum);
    return plain;
  } catch (error) {
    plain.delete();
    throw error;
  } finally {
    imaginary.delete();
  }
}
