import { fail } from '../errors';
import type { BgvParameters } from './params';

function powMod(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
    e >>= 1n;
  }
  return result;
}

/** Deterministic Miller–Rabin: these bases decide primality for every n < 2^64. */
const WITNESSES = [2n, 3n, 5n, 7n, 11n, 13n, 17n, 19n, 23n, 29n, 31n, 37n];

export function isPrime(n: bigint): boolean {
  if (n < 2n) return false;
  for (const p of WITNESSES) {
    if (n === p) return true;
    if (n % p === 0n) return false;
  }
  let d = n - 1n;
  let s = 0;
  while ((d & 1n) === 0n) {
    d >>= 1n;
    s++;
  }
  return WITNESSES.every((a) => {
    let x = powMod(a, d, n);
    if (x === 1n || x === n - 1n) return true;
    for (let r = 1; r < s; r++) {
      x = (x * x) % n;
      if (x === n - 1n) return true;
    }
    return false;
  });
}

/**
 * The largest primes of exactly `bits` bits that are ≡ 1 mod `step`, not in `taken`,
 * largest first; null when there are fewer than `count`.
 */
export function primesOfSize(bits: number, step: bigint, count: number, taken: ReadonlySet<bigint> = new Set()): bigint[] | null {
  const top = 1n << BigInt(bits);
  const floor = top >> 1n;
  const found: bigint[] = [];
  for (let q = ((top - 1n) / step) * step + 1n; q > floor && found.length < count; q -= step) {
    if (!taken.has(q) && isPrime(q)) found.push(q);
  }
  return found.length === count ? found : null;
}

/**
 * Distinct batching primes (≡ 1 mod 2N) of the given sizes, in the same order: for each
 * size the largest ones, the larger to the earlier component. Null when a size has too few.
 */
export function plainPrimes(polyModulusDegree: number, sizes: readonly number[]): bigint[] | null {
  const twoN = BigInt(2 * polyModulusDegree);
  const bySize = new Map<number, bigint[]>();
  for (const bits of new Set(sizes)) {
    const found = primesOfSize(bits, twoN, sizes.filter((b) => b === bits).length);
    if (found === null) return null;
    bySize.set(bits, found);
  }
  return sizes.map((bits) => bySize.get(bits)!.shift()!);
}

/** The primes one CRT component's SEAL context is made of. */
export interface ComponentPrimes {
  /** The batching plaintext prime t ≡ 1 mod 2N. */
  readonly plain: bigint;
  /** The coefficient modulus in SEAL's order: data primes ≡ 1 mod 2N·t, then the special prime ≡ 1 mod 2N. */
  readonly coeff: readonly bigint[];
}

/**
 * Realizes BGV parameters as primes, deterministically (owner and device derive the same):
 * the plaintext primes are the largest batching primes of their sizes, and each
 * component's data primes are also ≡ 1 mod its t. Then q ≡ 1 (mod t) for every prime a
 * modulus switch drops, so SEAL's BGV correction factor stays 1: sums of values that went
 * through different switches need no rebalancing, which would cost about log2(t)/2 bits of
 * noise budget per addition. Throws E_PARAMS when a size has too few such primes.
 */
export function realizeBgvPrimes(params: Pick<BgvParameters, 'polyModulusDegree' | 'coeffModulusBits' | 'plainModulusBits'>): ComponentPrimes[] {
  const twoN = BigInt(2 * params.polyModulusDegree);
  const plains = plainPrimes(params.polyModulusDegree, params.plainModulusBits);
  if (plains === null) fail('E_PARAMS', `there are not enough batching primes of [${params.plainModulusBits.join(', ')}] bits for N=${params.polyModulusDegree}`);
  const data = params.coeffModulusBits.slice(0, -1);
  const specialBits = params.coeffModulusBits[params.coeffModulusBits.length - 1]!;
  return plains.map((plain) => {
    const taken = new Set<bigint>(plains);
    const coeff: bigint[] = [];
    for (const size of data) {
      const q = primesOfSize(size, twoN * plain, 1, taken);
      if (q === null) fail('E_PARAMS', `no ${size}-bit prime ≡ 1 mod 2N·t for t = ${plain} (N=${params.polyModulusDegree}): data primes need more bits`);
      taken.add(q[0]!);
      coeff.push(q[0]!);
    }
    const special = primesOfSize(specialBits, twoN, 1, taken);
    if (special === null) fail('E_PARAMS', `no ${specialBits}-bit special prime for N=${params.polyModulusDegree}`);
    return { plain, coeff: [...coeff, special[0]!] };
  });
}
