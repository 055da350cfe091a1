/**
 * Polynomial approximations of activation functions on a symmetric interval [-l, l], so a
 * CNN trained with them can run under homomorphic encryption, which only adds and
 * multiplies. The coefficients come out in the power basis (coeffs[i] multiplies x^i),
 * ready for the engine's `{ kind: 'poly', coeffs }` layer.
 *
 * Every fit works in the normalized variable t = x/l ∈ [-1, 1], where the Chebyshev basis
 * is well conditioned, and only at the end rescales coefficient i by l^-i. Pure TypeScript:
 * no DOM, no `node:` imports.
 */

export const ACTIVATIONS = ['relu', 'sigmoid', 'tanh'] as const;
export type Activation = (typeof ACTIVATIONS)[number];

export const APPROX_METHODS = ['taylor', 'chebyshev', 'least-squares', 'cryptodl'] as const;
export type ApproxMethod = (typeof APPROX_METHODS)[number];

export const MIN_DEGREE = 2;
export const MAX_DEGREE = 8;

/**
 * Bounds on the half-width l. Coefficient i scales as l^-i, so at degree 8 and these bounds
 * the coefficients already span about 50 decades; far beyond them, l^8 and the squared
 * errors leave the range of doubles.
 */
export const MIN_HALF_WIDTH = 1e-6;
export const MAX_HALF_WIDTH = 1e6;

/** Points of the uniform grid on [-l, l] that the errors are measured on (and least squares fits). */
export const ERROR_SAMPLES = 10_001;

/** Gauss–Chebyshev nodes for the Chebyshev projection; see chebyshevProjection for the accuracy this buys. */
const CHEBYSHEV_NODES = 1 << 15;

/** Stable codes for every refused request; callers branch on `code`, people read `message`. */
export type ApproxErrorCode =
  | 'E_FN' // not one of ACTIVATIONS
  | 'E_METHOD' // not one of APPROX_METHODS
  | 'E_DEGREE' // not an integer in MIN_DEGREE..MAX_DEGREE
  | 'E_INTERVAL'; // not [-l, l] with MIN_HALF_WIDTH ≤ l ≤ MAX_HALF_WIDTH

export class ApproxError extends Error {
  readonly code: ApproxErrorCode;
  constructor(code: ApproxErrorCode, message: string) {
    super(message);
    this.name = 'ApproxError';
    this.code = code;
  }
}

export interface ApproxRequest {
  readonly fn: Activation;
  readonly method: ApproxMethod;
  readonly degree: number;
  readonly interval: readonly [number, number];
}

export interface Approximation {
  readonly fn: Activation;
  readonly method: ApproxMethod;
  readonly degree: number;
  readonly interval: [number, number];
  /**
   * degree + 1 power-basis coefficients. The top ones can be exactly 0 where the function's
   * symmetry forces it (tanh is odd, so its even-degree fits end in 0).
   */
  readonly coeffs: number[];
  /** max |p(x) − f(x)| over ERROR_SAMPLES uniform points of the interval, ends included. */
  readonly maxError: number;
  /** Root mean square of p(x) − f(x) over the same points. */
  readonly l2Error: number;
}

/** p(x) = Σ coeffs[i]·x^i, by Horner's rule. */
export function evaluatePolynomial(coeffs: readonly number[], x: number): number {
  let y = 0;
  for (let i = coeffs.length - 1; i >= 0; i--) y = y * x + coeffs[i]!;
  return y;
}

/**
 * A function split as f(x) = exact(x) + rest(x): `exact` is a polynomial of degree ≤ 1,
 * which every method reproduces exactly anyway, and `rest` is even or odd. Fitting only
 * `rest`, with only the basis functions of its parity, is mathematically the same fit (the
 * grid, the nodes and the weights are all symmetric) but makes the coefficients that must
 * vanish exactly 0 rather than round-off: the engine scales its input by |a_d|^(-1/d), so a
 * leading 1e-18 where 0 belongs would wreck the encrypted evaluation.
 */
interface Split {
  readonly exact: readonly number[];
  readonly rest: (x: number) => number;
  readonly parity: 0 | 1;
}

interface ActivationSpec {
  readonly value: (x: number) => number;
  readonly split: Split;
  /** The same split for the derivative, which the cryptodl method fits. */
  readonly slope: Split;
  /** Taylor polynomial of `split.rest` up to x^degree, power basis in x. */
  readonly taylorRest: (degree: number, l: number) => number[];
}

function sigmoid(x: number): number {
  // Two branches so that exp never overflows for large |x|.
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/**
 * Taylor coefficients of tanh at 0 up to x^degree, from the ODE tanh' = 1 − tanh²:
 * (k+1)·a_{k+1} = [k = 0] − Σ_{i+j=k} a_i·a_j. Even coefficients come out exactly 0.
 */
function tanhTaylor(degree: number): number[] {
  const a = [0];
  for (let k = 0; k < degree; k++) {
    let square = 0;
    for (let i = 0; i <= k; i++) square += a[i]! * a[k - i]!;
    a.push(((k === 0 ? 1 : 0) - square) / (k + 1));
  }
  return a;
}

/**
 * ReLU is not differentiable at 0, so it has no Taylor series there. Refusing it would
 * leave the method without a ReLU row, and the series of a smooth surrogate such as
 * softplus at 0 diverges beyond |x| = π, well inside intervals like [-6, 6]. Instead ReLU(x) =
 * x/2 + |x|/2 with |x| = √u, u = x², and √u is expanded in u around u0 = l²/2, the middle
 * of u's range [0, l²]: √u = √u0·Σ_k C(1/2, k)·z^k with z = u/u0 − 1 = 2t² − 1. That
 * binomial series converges absolutely on all of |z| ≤ 1, i.e. on the whole interval, and
 * its terms z^k have degree 2k in x, so degree d keeps the terms k ≤ ⌊d/2⌋.
 * It is still a truncated Taylor series, with the Taylor method's weakness: the error piles
 * up where the series converges slowest, at x = 0 (|z| = 1).
 */
function absHalfTaylor(degree: number, l: number): number[] {
  const t = new Array<number>(degree + 1).fill(0);
  let zPower = [1];
  let binomial = 1;
  for (let k = 0; 2 * k <= degree; k++) {
    zPower.forEach((c, i) => (t[i] = t[i]! + binomial * c));
    zPower = multiply(zPower, [-1, 0, 2]);
    binomial *= (0.5 - k) / (k + 1);
  }
  const sqrtU0 = l / Math.SQRT2;
  return fromNormalized(t.map((c) => (c * sqrtU0) / 2), l);
}

const SPECS: Record<Activation, ActivationSpec> = {
  relu: {
    value: (x) => Math.max(0, x),
    split: { exact: [0, 0.5], rest: (x) => Math.abs(x) / 2, parity: 0 },
    // ReLU' is the unit step, taken as 1/2 at 0: 1/2 + sign(x)/2.
    slope: { exact: [0.5], rest: (x) => Math.sign(x) / 2, parity: 1 },
    taylorRest: absHalfTaylor,
  },
  sigmoid: {
    value: sigmoid,
    split: { exact: [0.5], rest: (x) => Math.tanh(x / 2) / 2, parity: 1 },
    slope: { exact: [], rest: (x) => sigmoid(x) * (1 - sigmoid(x)), parity: 0 },
    // σ(x) = 1/2 + tanh(x/2)/2, so its Taylor coefficients are tanh's scaled by 2^-(k+1).
    taylorRest: (degree) => tanhTaylor(degree).map((a, k) => a / 2 ** (k + 1)),
  },
  tanh: {
    value: Math.tanh,
    split: { exact: [], rest: Math.tanh, parity: 1 },
    slope: { exact: [], rest: (x) => 1 - Math.tanh(x) ** 2, parity: 0 },
    taylorRest: (degree) => tanhTaylor(degree),
  },
};

function multiply(p: readonly number[], q: readonly number[]): number[] {
  const r = new Array<number>(p.length + q.length - 1).fill(0);
  p.forEach((a, i) => q.forEach((b, j) => (r[i + j] = r[i + j]! + a * b)));
  return r;
}

function add(p: readonly number[], q: readonly number[], length: number): number[] {
  return Array.from({ length }, (_, i) => (p[i] ?? 0) + (q[i] ?? 0));
}

/** Power-basis coefficients in t = x/l → coefficients in x. */
function fromNormalized(t: readonly number[], l: number): number[] {
  return t.map((c, i) => c / l ** i);
}

/** Power-basis coefficients of T_0..T_n, from T_{k+1} = 2t·T_k − T_{k−1}; small integers, exact. */
function chebyshevPolynomials(n: number): number[][] {
  const T = [[1], [0, 1]];
  for (let k = 1; k < n; k++) {
    T.push(add(multiply([0, 2], T[k]!), T[k - 1]!.map((c) => -c), k + 2));
  }
  return T.slice(0, n + 1);
}

/** Σ c_k·T_k(t), with c given for k = 0..n, in the power basis of t. */
function chebyshevToPower(c: readonly number[]): number[] {
  const T = chebyshevPolynomials(c.length - 1);
  return c.reduce<number[]>((sum, ck, k) => add(sum, T[k]!.map((a) => ck * a), c.length), []);
}

/** The degrees 0..n of one parity. */
function degreesOf(parity: 0 | 1, n: number): number[] {
  const ks: number[] = [];
  for (let k = parity; k <= n; k += 2) ks.push(k);
  return ks;
}

/** T_k(t) by the recurrence, stable on [-1, 1]. */
function chebyshevValue(k: number, t: number): number {
  let previous = 1;
  let current = t;
  if (k === 0) return previous;
  for (let j = 1; j < k; j++) [previous, current] = [current, 2 * t * current - previous];
  return current;
}

/** The error grid in t: t_j = −1 + 2j/(N−1), so t = −1, 0 and 1 are grid points. */
function normalizedGrid(): Float64Array {
  const t = new Float64Array(ERROR_SAMPLES);
  for (let j = 0; j < ERROR_SAMPLES; j++) t[j] = -1 + (2 * j) / (ERROR_SAMPLES - 1);
  return t;
}

/**
 * Solves min ‖A·c − y‖₂ by Householder QR (A given by columns, which are overwritten), so the
 * conditioning is that of A, not its square as with the normal equations.
 */
function solveLeastSquares(columns: Float64Array[], y: Float64Array): number[] {
  const m = y.length;
  const n = columns.length;
  for (let j = 0; j < n; j++) {
    const a = columns[j]!;
    let norm = 0;
    for (let i = j; i < m; i++) norm += a[i]! * a[i]!;
    norm = Math.sqrt(norm);
    // The reflection maps a[j..] to ∓‖a[j..]‖·e_j; the sign opposite to a[j] avoids cancellation.
    const alpha = a[j]! > 0 ? -norm : norm;
    const v = a.slice();
    v[j] = v[j]! - alpha;
    let vv = 0;
    for (let i = j; i < m; i++) vv += v[i]! * v[i]!;
    const reflect = (w: Float64Array) => {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i]! * w[i]!;
      const s = (2 * dot) / vv;
      for (let i = j; i < m; i++) w[i] = w[i]! - s * v[i]!;
    };
    if (vv > 0) {
      for (let k = j; k < n; k++) reflect(columns[k]!);
      reflect(y);
    }
  }
  const c = new Array<number>(n).fill(0);
  for (let j = n - 1; j >= 0; j--) {
    let s = y[j]!;
    for (let k = j + 1; k < n; k++) s -= columns[k]![j]! * c[k]!;
    c[j] = s / columns[j]![j]!;
  }
  return c;
}

/**
 * Dense-sample least squares of `rest` on the error grid, in the Chebyshev basis of its
 * parity. Because it minimizes the very sum the RMS error is computed from, no other
 * polynomial of the same degree has a smaller reported l2Error.
 */
function leastSquaresRest(split: Split, degree: number, l: number): number[] {
  const t = normalizedGrid();
  const ks = degreesOf(split.parity, degree);
  const columns = ks.map((k) => t.map((tj) => chebyshevValue(k, tj)));
  const y = t.map((tj) => split.rest(l * tj));
  const c = new Array<number>(degree + 1).fill(0);
  solveLeastSquares(columns, y).forEach((ck, i) => (c[ks[i]!] = ck));
  return fromNormalized(chebyshevToPower(c), l);
}

/**
 * Truncated Chebyshev series of `rest` on [-l, l], i.e. the least squares fit under the
 * stretched Chebyshev measure dx / (l·√(1 − (x/l)²)), the first measure CryptoDL uses for
 * sigmoid and tanh: c_k = (2/π)∫₀^π f(l·cos θ)·cos kθ dθ, by the midpoint rule in θ
 * (Gauss–Chebyshev quadrature). That rule is exact for polynomials of degree < 2·M and
 * spectrally accurate for the smooth functions; for ReLU's |x|, whose kink sits on a cell
 * boundary (M is even), its error is O((π/M)²) ≈ 1e-8 with M = 2^15.
 */
function chebyshevRest(split: Split, degree: number, l: number): number[] {
  const M = CHEBYSHEV_NODES;
  const c = new Array<number>(degree + 1).fill(0);
  const ks = degreesOf(split.parity, degree);
  for (let j = 0; j < M; j++) {
    const theta = (Math.PI * (j + 0.5)) / M;
    const f = split.rest(l * Math.cos(theta));
    for (const k of ks) c[k] = c[k]! + f * Math.cos(k * theta);
  }
  const series = c.map((ck, k) => ((k === 0 ? 1 : 2) * ck) / M);
  return fromNormalized(chebyshevToPower(series), l);
}

/** The whole fit of `split` with one of the projection methods, exact part added back. */
function fitSplit(split: Split, degree: number, l: number, project: typeof leastSquaresRest): number[] {
  return add(split.exact, project(split, degree, l), degree + 1);
}

/**
 * CryptoDL's ReLU method (its "method 5"): the derivative matters more to training than
 * the function's shape, and a smooth-looking derivative is easier to approximate, so fit
 * the derivative with a polynomial of degree d − 1 and integrate it, the constant making
 * p(0) = f(0). The paper fits a sigmoid as a stand-in for ReLU's step; here the step itself
 * is fitted, as it is the actual derivative and the least squares fit handles the jump.
 * The paper uses the method for ReLU only; applying it to σ' = σ(1 − σ) and
 * tanh' = 1 − tanh² is this module's extension. The derivative fit is the same dense-sample
 * least squares as the `least-squares` method.
 */
function cryptodl(spec: ActivationSpec, degree: number, l: number): number[] {
  const q = fitSplit(spec.slope, degree - 1, l, leastSquaresRest);
  return [spec.value(0), ...q.map((c, i) => c / (i + 1))];
}

function fit(spec: ActivationSpec, method: ApproxMethod, degree: number, l: number): number[] {
  switch (method) {
    case 'taylor':
      return add(spec.split.exact, spec.taylorRest(degree, l), degree + 1);
    case 'chebyshev':
      return fitSplit(spec.split, degree, l, chebyshevRest);
    case 'least-squares':
      return fitSplit(spec.split, degree, l, leastSquaresRest);
    case 'cryptodl':
      return cryptodl(spec, degree, l);
  }
}

function validate(request: ApproxRequest): number {
  const { fn, method, degree, interval } = request as { fn: unknown; method: unknown; degree: unknown; interval: unknown };
  if (typeof fn !== 'string' || !(ACTIVATIONS as readonly string[]).includes(fn)) {
    throw new ApproxError('E_FN', `unknown activation '${String(fn)}': expected one of ${ACTIVATIONS.join(', ')}`);
  }
  if (typeof method !== 'string' || !(APPROX_METHODS as readonly string[]).includes(method)) {
    throw new ApproxError('E_METHOD', `unknown method '${String(method)}': expected one of ${APPROX_METHODS.join(', ')}`);
  }
  if (typeof degree !== 'number' || !Number.isInteger(degree) || degree < MIN_DEGREE || degree > MAX_DEGREE) {
    throw new ApproxError('E_DEGREE', `degree must be an integer from ${MIN_DEGREE} to ${MAX_DEGREE}, got ${String(degree)}`);
  }
  if (!Array.isArray(interval) || interval.length !== 2 || !interval.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw new ApproxError('E_INTERVAL', `the interval must be two finite numbers [-l, l], got ${JSON.stringify(interval)}`);
  }
  const [lo, hi] = interval as [number, number];
  if (!(hi > 0) || lo !== -hi) {
    throw new ApproxError('E_INTERVAL', `the interval must be symmetric, [-l, l] with l > 0, got [${lo}, ${hi}]`);
  }
  if (hi < MIN_HALF_WIDTH || hi > MAX_HALF_WIDTH) {
    throw new ApproxError('E_INTERVAL', `l must be from ${MIN_HALF_WIDTH} to ${MAX_HALF_WIDTH}, got [${lo}, ${hi}]`);
  }
  return hi;
}

/** Fits `fn` on `interval` with a polynomial of `degree` by `method` and measures the error. */
export function approximate(request: ApproxRequest): Approximation {
  const l = validate(request);
  const { fn, method, degree } = request;
  const spec = SPECS[fn];
  const coeffs = fit(spec, method, degree, l);
  let worst = 0;
  let squares = 0;
  for (const t of normalizedGrid()) {
    const x = l * t;
    const e = Math.abs(evaluatePolynomial(coeffs, x) - spec.value(x));
    worst = Math.max(worst, e);
    squares += e * e;
  }
  return { fn, method, degree, interval: [-l, l], coeffs, maxError: worst, l2Error: Math.sqrt(squares / ERROR_SAMPLES) };
}
