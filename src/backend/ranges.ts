import type { RangeFlag } from '../store/types';

/**
 * How far beyond the calibrated range a decrypted CKKS score may lie before its result is
 * flagged instead of labelled: 4, the margin protect sizes the first prime with
 * (integerBitsFor: two bits above the largest calibrated value, ×4, and the sign).
 *
 * Up to 4 × calibratedScoreMax a score is inside the headroom the first prime was sized to
 * hold. Beyond it the margin promises nothing: either an input far from the calibration
 * data drove the scores there (and may have driven some slot past the prime), or the
 * result wrapped around and decrypted to garbage. Neither gives a label to trust. Garbage
 * from a wrap is typically far larger than the calibrated range (tests/backend: scores of
 * about 5·10⁴ that wrapped decrypt to about 10⁴ against a bound of 79); a wrap that landed
 * inside the bound would go unnoticed.
 */
export const RANGE_FACTOR = 4;

/** What the backend found when it compared a CKKS result with its model's calibrated range. */
export interface RangeCheck {
  /** 'out-of-range' when the largest |score| exceeds the bound; null when it does not. */
  readonly flag: RangeFlag | null;
  /** The largest |score| of the result. */
  readonly scoreMax: number;
  /** RANGE_FACTOR × calibratedScoreMax. */
  readonly bound: number;
}

/**
 * Compares the largest |score| of a decrypted CKKS result with RANGE_FACTOR × the largest
 * |score| protect saw on its calibration inputs (the model version's `calibratedScoreMax`
 * metric). Null when there is nothing to compare with: a version protected before
 * calibration existed has no such metric.
 */
export function checkScoreRange(scores: ArrayLike<number>, calibratedScoreMax: number | undefined): RangeCheck | null {
  if (calibratedScoreMax === undefined) return null;
  let scoreMax = 0;
  for (let i = 0; i < scores.length; i++) scoreMax = Math.max(scoreMax, Math.abs(scores[i]!));
  const bound = RANGE_FACTOR * calibratedScoreMax;
  return { flag: scoreMax > bound ? 'out-of-range' : null, scoreMax, bound };
}
