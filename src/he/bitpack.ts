import { fail } from './errors';

/**
 * Compact form of a SEAL ciphertext: a seeded one (an owner-encrypted weight, whose c0 is
 * stored and c1 is its seed) or a whole one (a device's result). Its residues are uniformly
 * random, which SEAL's zstd shrinks only to ~75–88% of their 64-bit words; written with
 * exactly ⌈log2 q_i⌉ bits per residue mod q_i, they take ⌈log2 q_i⌉/64 (~58% for a weight's
 * chain, 77% for the MNIST head's result mod its 49-bit first prime).
 *
 * An uncompressed SEAL 4 ciphertext serialization is: a 16-byte SEAL header, the
 * ciphertext's fields (parms id, NTT flag, size, N, number of primes L, scale, correction
 * factor), then its data as a serialized array (a 16-byte SEAL header, a u64 count, the
 * words), and for a seeded ciphertext the seed after it. The packed form keeps every byte
 * but the words, which it bit-packs prime by prime:
 *
 *   u32 prefix length P | prefix (P bytes, up to the words) | u32 suffix length S | suffix
 *   | the words, each residue of prime i in bits(q_i) bits, little-endian bit order
 *
 * Unpacking restores the uncompressed serialization byte for byte.
 */

const SEAL_MAGIC = 0xa15e;
/** SEAL header, parms id, NTT flag, size, N, L, scale, correction factor. */
const FIELDS = 16 + 32 + 1 + 8 + 8 + 8 + 8 + 8;
const SIZE_AT = 16 + 32 + 1;
const N_AT = SIZE_AT + 8;
const L_AT = N_AT + 8;
/** Where the words start: the array's SEAL header and count follow the fields. */
const WORDS_AT = FIELDS + 16 + 8;

function bitsOf(q: number): number {
  return Math.ceil(Math.log2(q + 1));
}

/**
 * N, L and the word count from the fields of an uncompressed serialization (`head`, at
 * least WORDS_AT bytes): the words are `polys` polynomials of L residue rows of N (a
 * seeded ciphertext stores one of its two), row k mod L belonging to prime k mod L.
 */
function readFields(head: DataView, primes: readonly number[], what: string): { n: number; primesUsed: number; count: number } {
  const size = Number(head.getBigUint64(SIZE_AT, true));
  const n = Number(head.getBigUint64(N_AT, true));
  const primesUsed = Number(head.getBigUint64(L_AT, true));
  const count = Number(head.getBigUint64(FIELDS + 16, true));
  const polys = count / (n * primesUsed);
  if (n < 1 || n > 1 << 17 || primesUsed < 1 || primesUsed > primes.length || !Number.isInteger(polys) || polys < 1 || polys > size) {
    fail('E_CORRUPT', `${what} holds ${count} words for N=${n}, ${primesUsed} primes and ${size} polynomials`);
  }
  return { n, primesUsed, count };
}

/** Reads N, L and the word count of an uncompressed serialization, checking its structure. */
function layout(bytes: Uint8Array, primes: readonly number[], what: string): { n: number; primesUsed: number; count: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < WORDS_AT || view.getUint16(0, true) !== SEAL_MAGIC || view.getUint16(FIELDS, true) !== SEAL_MAGIC) {
    fail('E_CORRUPT', `${what} is not an uncompressed SEAL ciphertext`);
  }
  const fields = readFields(view, primes, what);
  if (bytes.length < WORDS_AT + 8 * fields.count) fail('E_CORRUPT', `${what} is shorter than its ${fields.count} words`);
  return fields;
}

/** Bits of the packed words: N residues per row, row k in the width of prime k mod L. */
function packedBits(n: number, primesUsed: number, count: number, primes: readonly number[]): number {
  let bits = 0;
  for (let k = 0; k < count / n; k++) bits += n * bitsOf(primes[k % primesUsed]!);
  return bits;
}

/** Packs the uncompressed serialization of a ciphertext over `primes` (q_0, q_1, …). */
export function packCiphertext(bytes: Uint8Array, primes: readonly number[], what: string): Uint8Array {
  const { n, primesUsed, count } = layout(bytes, primes, what);
  const suffix = bytes.subarray(WORDS_AT + 8 * count);
  const bits = packedBits(n, primesUsed, count, primes);
  const out = new Uint8Array(4 + WORDS_AT + 4 + suffix.length + Math.ceil(bits / 8));
  const view = new DataView(out.buffer);
  view.setUint32(0, WORDS_AT, true);
  out.set(bytes.subarray(0, WORDS_AT), 4);
  view.setUint32(4 + WORDS_AT, suffix.length, true);
  out.set(suffix, 8 + WORDS_AT);
  const source = new DataView(bytes.buffer, bytes.byteOffset + WORDS_AT, 8 * count);
  const writer = new BitWriter(out, 8 + WORDS_AT + suffix.length);
  for (let k = 0, i = 0; k < count / n; k++) {
    const width = bitsOf(primes[k % primesUsed]!);
    const low = Math.min(width, 32);
    for (const end = i + n; i < end; i++) {
      const lo = source.getUint32(8 * i, true);
      const hi = source.getUint32(8 * i + 4, true);
      if (width < 64 && (width <= 32 ? hi !== 0 || (width < 32 && lo >>> width !== 0) : hi >>> (width - 32) !== 0)) {
        fail('E_CORRUPT', `${what}: word ${i} does not fit the ${width} bits of its prime`);
      }
      writer.write(lo, low);
      if (width > 32) writer.write(hi, width - 32);
    }
  }
  return out;
}

/** Restores the uncompressed serialization from packCiphertext's output. */
export function unpackCiphertext(packed: Uint8Array, primes: readonly number[], what: string): Uint8Array {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  if (packed.length < 8 + WORDS_AT || view.getUint32(0, true) !== WORDS_AT) fail('E_CORRUPT', `${what} is not a packed ciphertext`);
  const prefix = packed.subarray(4, 4 + WORDS_AT);
  const suffixLength = view.getUint32(4 + WORDS_AT, true);
  if (8 + WORDS_AT + suffixLength > packed.length) fail('E_CORRUPT', `${what} is truncated`);
  const suffix = packed.subarray(8 + WORDS_AT, 8 + WORDS_AT + suffixLength);
  const { n, primesUsed, count } = readFields(new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength), primes, what);
  const bits = packedBits(n, primesUsed, count, primes);
  if (packed.length !== 8 + WORDS_AT + suffixLength + Math.ceil(bits / 8)) fail('E_CORRUPT', `${what} has ${packed.length} bytes, not the size its words need`);
  const out = new Uint8Array(WORDS_AT + 8 * count + suffixLength);
  out.set(prefix, 0);
  out.set(suffix, WORDS_AT + 8 * count);
  const words = new DataView(out.buffer, WORDS_AT, 8 * count);
  const reader = new BitReader(packed, 8 + WORDS_AT + suffixLength);
  for (let k = 0, i = 0; k < count / n; k++) {
    const width = bitsOf(primes[k % primesUsed]!);
    const low = Math.min(width, 32);
    for (const end = i + n; i < end; i++) {
      words.setUint32(8 * i, reader.read(low), true);
      if (width > 32) words.setUint32(8 * i + 4, reader.read(width - 32), true);
    }
  }
  return out;
}

/** Writes bit fields of at most 32 bits, least significant bit first, into zeroed bytes from byte `pos`. */
class BitWriter {
  private at: number;
  constructor(private readonly out: Uint8Array, pos: number) {
    this.at = pos * 8;
  }

  write(value: number, width: number): void {
    const out = this.out;
    let byte = this.at >>> 3;
    const shift = this.at & 7;
    // The field spans at most five bytes: the first takes 8 − shift of its bits.
    out[byte] = out[byte]! | ((value << shift) & 0xff);
    let rest = value >>> (8 - shift);
    for (let left = width - (8 - shift); left > 0; left -= 8) {
      out[++byte] = rest & 0xff;
      rest >>>= 8;
    }
    this.at += width;
  }
}

/** Reads the bit fields BitWriter wrote, from byte `pos`. */
class BitReader {
  private at: number;
  constructor(private readonly bytes: Uint8Array, pos: number) {
    this.at = pos * 8;
  }

  read(width: number): number {
    const b = this.bytes;
    const byte = this.at >>> 3;
    const shift = this.at & 7;
    // Past the end, a byte reads as undefined, which bit operations take as 0.
    let value = (b[byte]! | (b[byte + 1]! << 8) | (b[byte + 2]! << 16) | (b[byte + 3]! << 24)) >>> shift;
    if (shift + width > 32) value |= b[byte + 4]! << (32 - shift);
    this.at += width;
    return width === 32 ? value >>> 0 : (value & ((1 << width) - 1)) >>> 0;
  }
}
