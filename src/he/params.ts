import { fail } from './errors';

export type Scheme = 'ckks' | 'bgv';
export type SecurityBits = 128 | 192 | 256;

/**
 * Largest total coefficient-modulus bit count SEAL accepts for each ring degree and
 * security level (HomomorphicEncryption.org standard, as enforced by SEAL's
 * CoeffModulus::MaxBitCount).
 */
export const MAX_MODULUS_BITS: Readonly<Record<SecurityBits, Readonly<Record<number, number>>>> = {
  128: { 1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881 },
  192: { 1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611 },
  256: { 1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476 },
};

const RING_DEGREES = [1024, 2048, 4096, 8192, 16384, 32768] as const;
/** The ring degrees the parameter planner chooses from, smallest first. */
export const MIN_RING_DEGREE = RING_DEGREES[0];
export const MAX_RING_DEGREE = RING_DEGREES[RING_DEGREES.length - 1]!;
/** SEAL's primes are at most 60 bits. */
const MAX_PRIME_BITS = 60;

export interface ParameterRequest {
  scheme: Scheme;
  security: SecurityBits;
  /** Number of rescalings the circuit performs (its multiplicative depth). */
  depth: number;
  /** Bits of precision wanted in the result, relative to 1.0. */
  precisionBits: number;
  /**
   * If set, precision may drop from `precisionBits` down to this many bits to keep the
   * smallest ring degree that fits at this precision (rings are 5–8× slower per step).
   */
  minPrecisionBits?: number;
  /** Bits above the binary point the final values may need (|value| < 2^integerBits). Default 14. */
  integerBits?: number;
  /** Slots the packing needs at least; raises the ring degree if set. */
  minSlots?: number;
}

/** A checked, immutable CKKS parameter set. */
export interface HeParameters {
  readonly scheme: Scheme;
  readonly security: SecurityBits;
  readonly polyModulusDegree: number;
  /** Bit sizes of the modulus chain: first (output) prime, one prime per level, special prime. */
  readonly coeffModulusBits: readonly number[];
  /** log2 of the encoding scale; every level prime has this many bits, so rescaling keeps the scale. */
  readonly scaleBits: number;
  readonly depth: number;
}

/**
 * Bits the CKKS scale must exceed the wanted precision by: encryption and key-switching
 * noise at N ≤ 32768 stays below 2^10 in the slots, so this margin keeps the requested
 * precision after a few levels.
 */
export const NOISE_MARGIN_BITS = 10;

/**
 * Bits the special prime exceeds the largest data prime by. Key switching (every rotation
 * and relinearization) adds noise in proportion to q_max / P: 12 bits keep it below the
 * encryption noise, and every bit beyond is a bit the data primes cannot have in a deep
 * circuit (depth 5 at N=8192 gets 2–3 more bits of scale than with a 60-bit special prime).
 */
const SPECIAL_MARGIN_BITS = 12;

/**
 * Chooses the smallest ring degree (the fastest parameters) whose modulus chain fits the
 * depth and precision within SEAL's bound for the security level.
 *
 * Chain: [scale + integer bits] + depth × [scale bits] + [special prime]. The special
 * prime is 12 bits above the first (at most 60): key-switching noise shrinks with it, and
 * rotations are most of the work here.
 */
export function planParameters(request: ParameterRequest): HeParameters {
  const { minPrecisionBits, ...exact } = request;
  if (minPrecisionBits === undefined) return planExact(exact);
  if (!Number.isInteger(minPrecisionBits) || minPrecisionBits < 1 || minPrecisionBits > request.precisionBits) {
    fail('E_PARAMS', `minPrecisionBits must be an integer from 1 to precisionBits (${request.precisionBits}), got ${minPrecisionBits}`);
  }
  const smallest = planExact({ ...exact, precisionBits: minPrecisionBits }).polyModulusDegree;
  for (let bits = request.precisionBits; bits > minPrecisionBits; bits--) {
    const params = tryPlan({ ...exact, precisionBits: bits });
    if (params?.polyModulusDegree === smallest) return params;
  }
  return planExact({ ...exact, precisionBits: minPrecisionBits });
}

function tryPlan(request: ParameterRequest): HeParameters | undefined {
  try {
    return planExact(request);
  } catch {
    return undefined;
  }
}

function planExact(request: ParameterRequest): HeParameters {
  const { scheme, security, depth, precisionBits } = request;
  const integerBits = request.integerBits ?? 14;
  if (scheme === 'bgv') {
    fail('E_UNSUPPORTED', "BGV parameters depend on the model's weights and calibration data: plan them with planBgv");
  }
  if (scheme !== 'ckks') fail('E_UNSUPPORTED', `unknown scheme '${String(scheme)}': use 'ckks' or 'bgv'`);
  if (!(security in MAX_MODULUS_BITS)) {
    fail('E_PARAMS', `security must be 128, 192 or 256 bits, got ${String(security)}`);
  }
  if (!Number.isInteger(depth) || depth < 0) fail('E_PARAMS', `depth must be a non-negative integer, got ${depth}`);
  if (!Number.isInteger(precisionBits) || precisionBits < 1) {
    fail('E_PARAMS', `precisionBits must be a positive integer, got ${precisionBits}`);
  }
  if (!Number.isInteger(integerBits) || integerBits < 1) {
    fail('E_PARAMS', `integerBits must be a positive integer, got ${integerBits}`);
  }
  const scaleBits = precisionBits + NOISE_MARGIN_BITS;
  const firstBits = scaleBits + integerBits;
  if (scaleBits > MAX_PRIME_BITS - 1 || firstBits > MAX_PRIME_BITS) {
    fail(
      'E_PARAMS',
      `precision ${precisionBits} bits with ${integerBits} integer bits needs ${firstBits}-bit primes; SEAL allows ${MAX_PRIME_BITS}`,
    );
  }
  const specialBits = Math.min(MAX_PRIME_BITS, firstBits + SPECIAL_MARGIN_BITS);
  const chain = [firstBits, ...Array<number>(depth).fill(scaleBits), specialBits];
  const total = chain.reduce((a, b) => a + b, 0);
  for (const n of RING_DEGREES) {
    if (request.minSlots !== undefined && n / 2 < request.minSlots) continue;
    if (total > MAX_MODULUS_BITS[security][n]!) continue;
    // Each prime must be ≡ 1 mod 2N and SEAL needs enough of them of each size; a prime
    // of b bits exists for 2N ≤ 2^(b-1) comfortably.
    if (Math.min(...chain) < Math.log2(2 * n) + 2) continue;
    return Object.freeze({
      scheme,
      security,
      polyModulusDegree: n,
      coeffModulusBits: Object.freeze(chain),
      scaleBits,
      depth,
    });
  }
  const largest = MAX_RING_DEGREE;
  fail(
    'E_PARAMS',
    `no parameters for depth ${depth} at ${precisionBits} precision bits and ${security}-bit security: ` +
      `the chain needs ${total} bits, N=${largest} allows ${MAX_MODULUS_BITS[security][largest as number]}` +
      (request.minSlots !== undefined ? ` (and at least ${request.minSlots} slots)` : ''),
  );
}

/** Validates parameters that come from outside (a file header) and returns them frozen. */
export function checkParameters(value: unknown): HeParameters {
  const p = value as Partial<HeParameters> | null;
  const ok =
    p !== null &&
    typeof p === 'object' &&
    p.scheme === 'ckks' &&
    (p.security === 128 || p.security === 192 || p.security === 256) &&
    typeof p.polyModulusDegree === 'number' &&
    (RING_DEGREES as readonly number[]).includes(p.polyModulusDegree) &&
    Array.isArray(p.coeffModulusBits) &&
    p.coeffModulusBits.length >= 2 &&
    p.coeffModulusBits.every((b) => Number.isInteger(b) && b >= 10 && b <= MAX_PRIME_BITS) &&
    Number.isInteger(p.scaleBits) &&
    Number.isInteger(p.depth) &&
    p.depth === p.coeffModulusBits.length - 2;
  if (!ok) fail('E_PARAMS', `invalid HE parameters: ${JSON.stringify(value)}`);
  const total = p.coeffModulusBits!.reduce((a, b) => a + b, 0);
  if (total > MAX_MODULUS_BITS[p.security!][p.polyModulusDegree as number]!) {
    fail('E_PARAMS', `parameters exceed the ${p.security}-bit security bound`);
  }
  return Object.freeze({ ...p, coeffModulusBits: Object.freeze([...p.coeffModulusBits!]) }) as HeParameters;
}

export function sameParameters(a: HeParameters, b: HeParameters): boolean {
  return (
    a.scheme === b.scheme &&
    a.security === b.security &&
    a.polyModulusDegree === b.polyModulusDegree &&
    a.scaleBits === b.scaleBits &&
    a.coeffModulusBits.length === b.coeffModulusBits.length &&
    a.coeffModulusBits.every((bits, i) => bits === b.coeffModulusBits[i])
  );
}

export function describeParameters(p: HeParameters): string {
  return `${p.scheme.toUpperCase()} N=${p.polyModulusDegree} chain [${p.coeffModulusBits.join(',')}] scale 2^${p.scaleBits}, ${p.security}-bit`;
}
