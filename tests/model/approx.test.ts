import { describe, expect, it } from 'vitest';
import {
  ACTIVATIONS,
  APPROX_METHODS,
  ApproxError,
  type ApproxRequest,
  approximate,
  ERROR_SAMPLES,
  evaluatePolynomial,
  MAX_DEGREE,
  MIN_DEGREE,
} from '../../src/model/approx';

const DEGREES = Array.from({ length: MAX_DEGREE - MIN_DEGREE + 1 }, (_, i) => MIN_DEGREE + i);
const relu = (x: number) => Math.max(0, x);

/** max and RMS of |p − f| on n uniform points of [-l, l], computed apart from the module. */
function measure(coeffs: readonly number[], f: (x: number) => number, l: number, n: number) {
  let max = 0;
  let squares = 0;
  for (let j = 0; j < n; j++) {
    const x = -l + (2 * l * j) / (n - 1);
    const e = Math.abs(evaluatePolynomial(coeffs, x) - f(x));
    max = Math.max(max, e);
    squares += e * e;
  }
  return { max, rms: Math.sqrt(squares / n) };
}

describe('evaluatePolynomial', () => {
  it('evaluates the power basis, coefficient i on x^i', () => {
    expect(evaluatePolynomial([1, -2, 3], 2)).toBe(1 - 4 + 12);
    expect(evaluatePolynomial([0.5], 7)).toBe(0.5);
    expect(evaluatePolynomial([], 3)).toBe(0);
  });
});

describe('taylor', () => {
  it('gives the known series of tanh and sigmoid at 0', () => {
    const tanh = approximate({ fn: 'tanh', method: 'taylor', degree: 8, interval: [-1, 1] }).coeffs;
    [0, 1, 0, -1 / 3, 0, 2 / 15, 0, -17 / 315, 0].forEach((c, i) => expect(tanh[i]).toBeCloseTo(c, 15));
    const sigmoid = approximate({ fn: 'sigmoid', method: 'taylor', degree: 7, interval: [-1, 1] }).coeffs;
    [1 / 2, 1 / 4, 0, -1 / 48, 0, 1 / 480, 0, -17 / 80640].forEach((c, i) => expect(sigmoid[i]).toBeCloseTo(c, 15));
  });

  it('expands ReLU as x/2 + √(x²)/2 around x² = l²/2', () => {
    // √u ≈ √u0·(1 + (u − u0)/(2·u0)) with u0 = l²/2 gives l/(4√2) + x/2 + x²/(2√2·l).
    const l = 6;
    const { coeffs } = approximate({ fn: 'relu', method: 'taylor', degree: 2, interval: [-l, l] });
    expect(coeffs[0]).toBeCloseTo(l / (4 * Math.SQRT2), 14);
    expect(coeffs[1]).toBe(0.5);
    expect(coeffs[2]).toBeCloseTo(1 / (2 * Math.SQRT2 * l), 14);
  });

  it('improves with degree inside the radius of convergence and blows up outside it', () => {
    const errors = (fn: ApproxRequest['fn'], l: number) =>
      [2, 4, 6, 8].map((degree) => approximate({ fn, method: 'taylor', degree, interval: [-l, l] }).maxError);
    const decreasing = (e: number[]) => e.slice(1).every((v, i) => v < e[i]!);
    // The ReLU series converges on the whole interval, tanh's up to π/2 and sigmoid's up to π.
    expect(decreasing(errors('relu', 6))).toBe(true);
    expect(decreasing(errors('tanh', 1))).toBe(true);
    expect(decreasing(errors('sigmoid', 1))).toBe(true);
    const tanh6 = errors('tanh', 6);
    expect(tanh6.slice(1).every((v, i) => v > 10 * tanh6[i]!)).toBe(true);
    expect(decreasing(errors('sigmoid', 6))).toBe(false);
  });
});

describe('chebyshev and least squares', () => {
  it('tanh on [-1, 1] at degree 7 is within the Bernstein-ellipse bound', () => {
    // For f analytic with |f| ≤ M inside the ellipse with foci ±1 and axis-sum ρ, the
    // truncated Chebyshev series of degree n is within 2Mρ^-n/(ρ − 1) of f (Trefethen,
    // ATAP, Thm 8.2). tanh's poles are at ±iπ/2; ρ = 3 gives semi-axes a = 5/3 and
    // b = 4/3 < π/2, and on the rectangle |x| ≤ a, |y| ≤ b,
    // |tanh(x + iy)|² = (cosh 2x − cos 2y)/(cosh 2x + cos 2y) ≤ cosh²a / cos²b.
    const rho = 3;
    const a = (rho + 1 / rho) / 2;
    const b = (rho - 1 / rho) / 2;
    expect(b).toBeLessThan(Math.PI / 2);
    const M = Math.cosh(a) / Math.cos(b);
    const bound = (2 * M * rho ** -7) / (rho - 1);
    expect(bound).toBeCloseTo(5.35e-3, 4);

    const cheb = approximate({ fn: 'tanh', method: 'chebyshev', degree: 7, interval: [-1, 1] });
    expect(cheb.maxError).toBeLessThan(bound);
    // Least squares minimizes the RMS error, which is below any polynomial's max error.
    const ls = approximate({ fn: 'tanh', method: 'least-squares', degree: 7, interval: [-1, 1] });
    expect(ls.l2Error).toBeLessThan(cheb.maxError);
    // The bound is loose; the actual errors, pinned.
    expect(cheb.maxError).toBeCloseTo(3.5247e-5, 8);
    expect(cheb.l2Error).toBeCloseTo(2.3627e-5, 8);
    expect(ls.maxError).toBeCloseTo(8.3153e-5, 8);
    expect(ls.l2Error).toBeCloseTo(2.1030e-5, 8);
  });

  it('matches the closed forms for ReLU at degree 2', () => {
    // |t| ≈ 2/π + (4/3π)·T2(t) (Chebyshev) and 3/16 + (15/16)·t² (Legendre, continuous least
    // squares), with ReLU(x) = x/2 + (l/2)·|x/l|.
    const l = 6;
    const cheb = approximate({ fn: 'relu', method: 'chebyshev', degree: 2, interval: [-l, l] });
    expect(cheb.coeffs[0]).toBeCloseTo(l / (3 * Math.PI), 7);
    expect(cheb.coeffs[1]).toBe(0.5);
    expect(cheb.coeffs[2]).toBeCloseTo(4 / (3 * Math.PI * l), 8);
    expect(cheb.maxError).toBeCloseTo(l / (3 * Math.PI), 7); // at x = 0
    // Dense-sample least squares approaches the continuous fit as the grid fills in.
    const ls = approximate({ fn: 'relu', method: 'least-squares', degree: 2, interval: [-l, l] });
    expect(ls.coeffs[0]).toBeCloseTo((3 * l) / 32, 3);
    expect(ls.coeffs[2]).toBeCloseTo(15 / (32 * l), 4);
  });
});

describe('cryptodl', () => {
  it('ReLU at degree 2 on [-6, 6] is x/2 + ≈(3/8l)·x², the integral of the step fitted by a line', () => {
    // The least squares line of the step on [-l, l] is 1/2 + (3/4l)·x; its integral from 0
    // is x/2 + (3/8l)·x² and ReLU(0) = 0 makes the constant 0.
    const l = 6;
    const r = approximate({ fn: 'relu', method: 'cryptodl', degree: 2, interval: [-l, l] });
    expect(r.coeffs[0]).toBe(0);
    expect(r.coeffs[1]).toBe(0.5);
    expect(r.coeffs[2]).toBeCloseTo(3 / (8 * l), 4);
    expect(r.coeffs[2]).toBeCloseTo(0.0624938, 7);
    // |a2·x² − x/2| on [0, l] peaks at x = 1/(4·a2) with 1/(16·a2), or at x = l.
    const a2 = r.coeffs[2]!;
    const analytic = Math.max(1 / (16 * a2), Math.abs(a2 * l * l - l / 2));
    expect(r.maxError).toBeCloseTo(analytic, 6);
    expect(r.maxError).toBeCloseTo(1.0001, 4);
    const dense = measure(r.coeffs, relu, l, 1_000_001);
    expect(r.maxError).toBeCloseTo(dense.max, 6);
    expect(r.l2Error).toBeCloseTo(dense.rms, 4);
  });

  it('matches f(0) at the origin', () => {
    const f0 = { relu: 0, sigmoid: 0.5, tanh: 0 };
    for (const fn of ACTIVATIONS) {
      for (const degree of DEGREES) {
        const { coeffs } = approximate({ fn, method: 'cryptodl', degree, interval: [-6, 6] });
        expect(coeffs[0]).toBe(f0[fn]);
      }
    }
  });
});

describe('every method', () => {
  const intervals: [number, number][] = [
    [-1, 1],
    [-6, 6],
    [-20, 20],
  ];

  it('reports the errors an independent evaluation finds', () => {
    const f = { relu, sigmoid: (x: number) => 1 / (1 + Math.exp(-x)), tanh: Math.tanh };
    for (const fn of ACTIVATIONS) {
      for (const method of APPROX_METHODS) {
        const r = approximate({ fn, method, degree: 5, interval: [-6, 6] });
        const same = measure(r.coeffs, f[fn], 6, ERROR_SAMPLES);
        expect(r.maxError).toBeCloseTo(same.max, 12);
        expect(r.l2Error).toBeCloseTo(same.rms, 12);
      }
    }
  });

  it('chebyshev, least squares and cryptodl improve with degree', () => {
    for (const [lo, hi] of intervals) {
      for (const fn of ACTIVATIONS) {
        for (const method of ['chebyshev', 'least-squares', 'cryptodl'] as const) {
          const r = DEGREES.map((degree) => approximate({ fn, method, degree, interval: [lo, hi] }));
          r.slice(1).forEach((next, i) => {
            // One more degree never hurts; for ReLU's even and tanh's odd part it can leave
            // the fit unchanged, so two more degrees must help.
            expect(next.maxError).toBeLessThanOrEqual(r[i]!.maxError * (1 + 1e-9));
            expect(next.l2Error).toBeLessThanOrEqual(r[i]!.l2Error * (1 + 1e-9));
          });
          r.slice(2).forEach((next, i) => expect(next.l2Error).toBeLessThan(r[i]!.l2Error * 0.99));
        }
      }
    }
  });

  it('least squares has the smallest RMS error of the four at every degree', () => {
    for (const [lo, hi] of intervals) {
      for (const fn of ACTIVATIONS) {
        for (const degree of DEGREES) {
          const ls = approximate({ fn, method: 'least-squares', degree, interval: [lo, hi] }).l2Error;
          for (const method of APPROX_METHODS) {
            expect(ls).toBeLessThanOrEqual(approximate({ fn, method, degree, interval: [lo, hi] }).l2Error * (1 + 1e-12));
          }
        }
      }
    }
  });

  it('keeps the zeros symmetry forces exactly 0, which the engine needs to trim them', () => {
    // tanh is odd, sigmoid − 1/2 is odd, ReLU − x/2 is even; and cryptodl's constant is
    // ReLU(0) = 0.
    const mustVanish = { relu: (i: number) => i % 2 === 1 && i > 1, sigmoid: (i: number) => i % 2 === 0 && i > 0, tanh: (i: number) => i % 2 === 0 };
    for (const fn of ACTIVATIONS) {
      for (const method of APPROX_METHODS) {
        for (const degree of DEGREES) {
          const { coeffs } = approximate({ fn, method, degree, interval: [-6, 6] });
          expect(coeffs).toHaveLength(degree + 1);
          coeffs.forEach((c, i) => {
            expect(Number.isFinite(c)).toBe(true);
            if (mustVanish[fn](i) || (fn === 'relu' && method === 'cryptodl' && i === 0)) expect(c).toBe(0);
            else expect(c).not.toBe(0);
          });
        }
      }
    }
  });

  it('scales with l for ReLU, which is positively homogeneous', () => {
    for (const method of APPROX_METHODS) {
      const unit = approximate({ fn: 'relu', method, degree: 6, interval: [-1, 1] });
      for (const l of [1e-6, 255, 1e6]) {
        const r = approximate({ fn: 'relu', method, degree: 6, interval: [-l, l] });
        expect(r.maxError / l).toBeCloseTo(unit.maxError, 10);
        expect(r.l2Error / l).toBeCloseTo(unit.l2Error, 10);
        r.coeffs.forEach((c, i) => expect(c * l ** (i - 1)).toBeCloseTo(unit.coeffs[i]!, 10));
      }
    }
  });
});

describe('refusals', () => {
  const ok: ApproxRequest = { fn: 'relu', method: 'cryptodl', degree: 3, interval: [-6, 6] };
  const refusal = (request: unknown) => {
    try {
      approximate(request as ApproxRequest);
    } catch (error) {
      expect(error).toBeInstanceOf(ApproxError);
      return { code: (error as ApproxError).code, message: (error as Error).message };
    }
    throw new Error(`accepted ${JSON.stringify(request)}`);
  };

  it('names the field and what it accepts', () => {
    expect(refusal({ ...ok, fn: 'swish' })).toEqual({ code: 'E_FN', message: "unknown activation 'swish': expected one of relu, sigmoid, tanh" });
    expect(refusal({ ...ok, method: 'remez' })).toEqual({
      code: 'E_METHOD',
      message: "unknown method 'remez': expected one of taylor, chebyshev, least-squares, cryptodl",
    });
    expect(refusal({ ...ok, degree: 9 })).toEqual({ code: 'E_DEGREE', message: 'degree must be an integer from 2 to 8, got 9' });
    expect(refusal({ ...ok, interval: [-2, 6] })).toEqual({
      code: 'E_INTERVAL',
      message: 'the interval must be symmetric, [-l, l] with l > 0, got [-2, 6]',
    });
  });

  it('refuses every malformed field', () => {
    for (const fn of ['', 'ReLU', undefined, 3]) expect(refusal({ ...ok, fn }).code).toBe('E_FN');
    for (const method of ['', 'Chebyshev', 'least_squares', null]) expect(refusal({ ...ok, method }).code).toBe('E_METHOD');
    for (const degree of [1, 0, -2, 9, 2.5, Number.NaN, Number.POSITIVE_INFINITY, '3']) expect(refusal({ ...ok, degree }).code).toBe('E_DEGREE');
    const intervals = [[6, -6], [0, 0], [-0, 0], [-1, 2], [Number.NaN, Number.NaN], [-Infinity, Infinity], [-6], [-6, 0, 6], '-6,6', [-1e7, 1e7], [-1e-7, 1e-7]];
    for (const interval of intervals) expect(refusal({ ...ok, interval }).code).toBe('E_INTERVAL');
  });
});
