import { fail } from '../errors';
import { MAX_MODULUS_BITS, type SecurityBits } from '../params';

/**
 * A checked, immutable BGV parameter set: one ring and modulus chain shared by every CRT
 * component, and one batching plaintext prime per component. Each component is its own
 * SEAL context with its own keys and its own encrypted weights; the backend recombines the
 * components' results by CRT.
 */
export interface BgvParameters {
  readonly scheme: 'bgv';
  readonly security: SecurityBits;
  readonly polyModulusDegree: number;
  /**
   * Bit sizes of the coefficient modulus in SEAL's order: the data primes, of which a
   * modulus switch drops the last ones first, then the special prime (key switching).
   */
  readonly coeffModulusBits: readonly number[];
  /** Bit size of each component's batching prime t_i (t_i ≡ 1 mod 2N). */
  readonly plainModulusBits: readonly number[];
  /**
   * How many primes (at least one) each of the circuit's modulus switches drops, in order:
   * one switch per rescaling point of the plan, so its depth is this list's length. A
   * switch brings the noise back to its floor, which can take more than one 60-bit prime.
   */
  readonly switchPrimes: readonly number[];
}

/** Data primes left when the circuit ends. */
export function finalPrimes(p: BgvParameters): number {
  return p.coeffModulusBits.length - 1 - p.switchPrimes.reduce((a, b) => a + b, 0);
}

/** Chain level (data primes − 1) of the values after each switch: index 0 is the top. */
export function switchLevels(p: BgvParameters): number[] {
  const levels = [p.coeffModulusBits.length - 2];
  for (const k of p.switchPrimes) levels.push(levels[levels.length - 1]! - k);
  return levels;
}

export const BGV_RING_DEGREES = [4096, 8192, 16384, 32768] as const;
/** SEAL's primes are at most 60 bits. */
export const MAX_PRIME_BITS = 60;
/** The most CRT components a plan may use: each one is a whole evaluation. */
export const MAX_MODULI = 8;

/** The smallest batching prime this engine uses for ring degree N: a few bits above 2N. */
export function minPlainBits(polyModulusDegree: number): number {
  return Math.log2(2 * polyModulusDegree) + 4;
}

/** The smallest coefficient prime: SEAL finds enough primes ≡ 1 mod 2N of this size. */
export function minCoeffBits(polyModulusDegree: number): number {
  return Math.max(20, Math.log2(2 * polyModulusDegree) + 6);
}

/** Bits a data prime needs above 2N·t to have enough candidates ≡ 1 mod 2N·t. */
const DATA_PRIME_SPARE_BITS = 8;

/**
 * The smallest data prime for plaintext primes of `plainBits` bits: data primes are
 * ≡ 1 mod 2N·t (see realizeBgvPrimes), and this size leaves enough candidates to find them.
 */
export function minDataBits(polyModulusDegree: number, plainBits: number): number {
  return Math.max(minCoeffBits(polyModulusDegree), plainBits + Math.log2(2 * polyModulusDegree) + DATA_PRIME_SPARE_BITS);
}

/** The largest plaintext prime for ring degree N: its data primes must still fit 60 bits. */
export function maxPlainBits(polyModulusDegree: number): number {
  return MAX_PRIME_BITS - Math.log2(2 * polyModulusDegree) - DATA_PRIME_SPARE_BITS;
}

export function isBgvParameters(value: unknown): boolean {
  return (value as { scheme?: unknown } | null)?.scheme === 'bgv';
}

/** Validates BGV parameters that come from outside (a file header) and returns them frozen. */
export function checkBgvParameters(value: unknown): BgvParameters {
  const p = value as Partial<BgvParameters> | null;
  const n = p?.polyModulusDegree;
  const ok =
    p !== null &&
    typeof p === 'object' &&
    p.scheme === 'bgv' &&
    (p.security === 128 || p.security === 192 || p.security === 256) &&
    typeof n === 'number' &&
    (BGV_RING_DEGREES as readonly number[]).includes(n) &&
    Array.isArray(p.coeffModulusBits) &&
    p.coeffModulusBits.every((b) => Number.isInteger(b) && b >= minCoeffBits(n) && b <= MAX_PRIME_BITS) &&
    Array.isArray(p.switchPrimes) &&
    p.switchPrimes.every((k) => Number.isInteger(k) && k >= 1) &&
    p.coeffModulusBits.length >= p.switchPrimes.reduce((a, b) => a + b, 0) + 2 &&
    Array.isArray(p.plainModulusBits) &&
    p.plainModulusBits.length >= 1 &&
    p.plainModulusBits.length <= MAX_MODULI &&
    p.plainModulusBits.every((b) => Number.isInteger(b) && b >= minPlainBits(n) && b <= MAX_PRIME_BITS);
  if (!ok) fail('E_PARAMS', `invalid BGV parameters: ${JSON.stringify(value)}`);
  const total = p.coeffModulusBits!.reduce((a, b) => a + b, 0);
  const bound = MAX_MODULUS_BITS[p.security!][n as number]!;
  if (total > bound) fail('E_PARAMS', `BGV parameters need ${total} coefficient bits, the ${p.security}-bit bound at N=${n} is ${bound}`);
  return Object.freeze({
    scheme: 'bgv',
    security: p.security!,
    polyModulusDegree: n as number,
    coeffModulusBits: Object.freeze([...p.coeffModulusBits!]),
    plainModulusBits: Object.freeze([...p.plainModulusBits!]),
    switchPrimes: Object.freeze([...p.switchPrimes!]),
  });
}

export function sameBgvParameters(a: BgvParameters, b: BgvParameters): boolean {
  const same = (x: readonly number[], y: readonly number[]) => x.length === y.length && x.every((v, i) => v === y[i]);
  return (
    a.scheme === b.scheme &&
    a.security === b.security &&
    a.polyModulusDegree === b.polyModulusDegree &&
    same(a.switchPrimes, b.switchPrimes) &&
    same(a.coeffModulusBits, b.coeffModulusBits) &&
    same(a.plainModulusBits, b.plainModulusBits)
  );
}

export function describeBgvParameters(p: BgvParameters): string {
  return (
    `BGV N=${p.polyModulusDegree} chain [${p.coeffModulusBits.join(',')}] ` +
    `t ${p.plainModulusBits.map((b) => `${b}-bit`).join(' × ')}, switches dropping [${p.switchPrimes.join(',')}] primes, ${p.security}-bit`
  );
}
