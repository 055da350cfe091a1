import { parseArgs } from 'node:util';
import {
  ACTIVATIONS,
  APPROX_METHODS,
  ApproxError,
  type ApproxErrorCode,
  type Approximation,
  approximate,
  ERROR_SAMPLES,
  MAX_DEGREE,
  MIN_DEGREE,
} from '../model/approx';
import { UsageError } from './errors';

const FLAG_OF: Record<ApproxErrorCode, string> = {
  E_FN: '--fn',
  E_METHOD: '--method',
  E_DEGREE: '--degree',
  E_INTERVAL: '--interval',
};

const REQUIRED = {
  fn: ACTIVATIONS.join('|'),
  method: APPROX_METHODS.join('|'),
  degree: `${MIN_DEGREE}..${MAX_DEGREE}`,
  interval: 'lo,hi such as -6,6',
} as const;

/**
 * parseArgs refuses an option value starting with '-' as ambiguous, and every symmetric
 * interval starts with one ("-6,6"). --interval always takes a value, so the next argument
 * is joined to it (`--interval=-6,6`) before parsing; arguments after `--` are left alone.
 */
function joinIntervalValue(args: readonly string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') return [...joined, ...args.slice(i)];
    if (args[i] === '--interval' && i + 1 < args.length) joined.push(`--interval=${args[++i]}`);
    else joined.push(args[i]!);
  }
  return joined;
}

function parseInterval(raw: string): [number, number] {
  const parts = raw.split(',').map((s) => s.trim());
  if (parts.length !== 2 || parts.some((s) => s === '' || !Number.isFinite(Number(s)))) {
    throw new UsageError(`--interval must be two numbers 'lo,hi' such as -6,6, got '${raw}'`);
  }
  return [Number(parts[0]), Number(parts[1])];
}

function parseDegree(raw: string): number {
  if (!/^\d+$/.test(raw)) {
    throw new UsageError(`--degree must be an integer from ${MIN_DEGREE} to ${MAX_DEGREE}, got '${raw}'`);
  }
  return Number(raw);
}

function formatPolynomial(coeffs: readonly number[]): string {
  const terms = coeffs.flatMap((c, i) => {
    if (c === 0) return [];
    const power = i === 0 ? '' : i === 1 ? '·x' : `·x^${i}`;
    return [{ negative: c < 0, text: `${Number(Math.abs(c).toPrecision(6))}${power}` }];
  });
  if (terms.length === 0) return '0';
  return terms
    .map((t, k) => (k === 0 ? `${t.negative ? '−' : ''}${t.text}` : `${t.negative ? ' − ' : ' + '}${t.text}`))
    .join('');
}

function summary(r: Approximation): string[] {
  return [
    `${r.fn} on [${r.interval[0]}, ${r.interval[1]}], degree ${r.degree}, method ${r.method}`,
    `  p(x) = ${formatPolynomial(r.coeffs)}`,
    `  max |p(x) − f(x)| = ${r.maxError.toExponential(4)}, RMS error = ${r.l2Error.toExponential(4)} (${ERROR_SAMPLES} points)`,
    `  coeffs (x^0 first): ${JSON.stringify(r.coeffs)}`,
  ];
}

/** `sealed-edge approx`: fits a polynomial to an activation and prints it with its errors. */
export async function approxCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args: joinIntervalValue(args),
    options: {
      fn: { type: 'string' },
      method: { type: 'string' },
      degree: { type: 'string' },
      interval: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  for (const [name, expected] of Object.entries(REQUIRED)) {
    if (values[name as keyof typeof REQUIRED] === undefined) throw new UsageError(`--${name} is required (${expected})`);
  }
  let result: Approximation;
  try {
    result = approximate({
      fn: values.fn as Approximation['fn'],
      method: values.method as Approximation['method'],
      degree: parseDegree(values.degree!),
      interval: parseInterval(values.interval!),
    });
  } catch (error) {
    if (error instanceof ApproxError) throw new UsageError(`${FLAG_OF[error.code]}: ${error.message}`);
    throw error;
  }
  const lines = values.json ? [JSON.stringify(result)] : summary(result);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
