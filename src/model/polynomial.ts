/**
 * Elementwise polynomials with per-element coefficients: value_j = Σ_i coeffs[i][j]·x_j^i.
 * The head's elementwise subgraphs (x²+2x written as Mul/Add, Pow, a bias Add, a folded
 * batch norm) are expanded symbolically in this form, then recognized as a dense layer's
 * affine part or as one polynomial activation.
 */

/** The highest degree any element's polynomial may reach: the engine's limit. */
export const MAX_POLY_DEGREE = 32;

export class VecPoly {
  private constructor(
    readonly width: number,
    /** coeffs[i] multiplies x^i; never empty, no all-zero leading coefficient beyond the constant. */
    readonly coeffs: readonly Float64Array[],
  ) {}

  static of(width: number, coeffs: readonly Float64Array[]): VecPoly {
    const trimmed = [...coeffs];
    while (trimmed.length > 1 && trimmed[trimmed.length - 1]!.every((c) => c === 0)) trimmed.pop();
    if (trimmed.length === 0) trimmed.push(new Float64Array(width));
    return new VecPoly(width, trimmed);
  }

  /** x itself. */
  static identity(width: number): VecPoly {
    return VecPoly.of(width, [new Float64Array(width), new Float64Array(width).fill(1)]);
  }

  static constant(c: Float64Array): VecPoly {
    return VecPoly.of(c.length, [c]);
  }

  get degree(): number {
    return this.coeffs.length - 1;
  }

  coeff(i: number): Float64Array {
    return this.coeffs[i] ?? new Float64Array(this.width);
  }

  add(other: VecPoly): VecPoly {
    const n = Math.max(this.coeffs.length, other.coeffs.length);
    return VecPoly.of(this.width, Array.from({ length: n }, (_, i) => {
      const theirs = other.coeff(i);
      return this.coeff(i).map((c, j) => c + theirs[j]!);
    }));
  }

  /** Multiplies every coefficient by c elementwise (c·p). */
  scale(c: Float64Array): VecPoly {
    return VecPoly.of(this.width, this.coeffs.map((a) => a.map((v, j) => v * c[j]!)));
  }

  mul(other: VecPoly): VecPoly {
    const out = Array.from({ length: this.coeffs.length + other.coeffs.length - 1 }, () => new Float64Array(this.width));
    this.coeffs.forEach((a, i) =>
      other.coeffs.forEach((b, k) => {
        const target = out[i + k]!;
        for (let j = 0; j < this.width; j++) target[j]! += a[j]! * b[j]!;
      }),
    );
    return VecPoly.of(this.width, out);
  }

  pow(k: number): VecPoly {
    let result = VecPoly.constant(new Float64Array(this.width).fill(1));
    for (let i = 0; i < k; i++) result = result.mul(this);
    return result;
  }

  /** p(this) for a polynomial p with scalar coefficients (p[i] multiplies y^i). */
  compose(p: readonly number[]): VecPoly {
    let result = VecPoly.constant(new Float64Array(this.width));
    for (let i = p.length - 1; i >= 0; i--) {
      result = result.mul(this).add(VecPoly.constant(new Float64Array(this.width).fill(p[i]!)));
    }
    return result;
  }

  /** The coefficients as scalars if every element has the same polynomial, else undefined. */
  uniform(): number[] | undefined {
    const scalars: number[] = [];
    for (const c of this.coeffs) {
      if (!isUniform(c)) return undefined;
      scalars.push(c[0]!);
    }
    return scalars;
  }
}

export function isUniform(c: Float64Array): boolean {
  return c.every((v) => v === c[0]);
}
