import { ACTIVATIONS, type Activation, APPROX_METHODS, ApproxError, type ApproxMethod, approximate } from '../model/approx';
import { UsageError } from './errors';

/** The interval approximations are fitted on, the same as training/ uses for its `--activation` names. */
const APPROX_INTERVAL: [number, number] = [-6, 6];

const SPEC = new RegExp(`^(${APPROX_METHODS.join('|')})-(${ACTIVATIONS.join('|')})-(\\d+)$`);

/** `--activation cryptodl-relu-3` → { relu: coefficients }; one spec per activation function. */
export function parseActivations(specs: readonly string[]): Partial<Record<Activation, number[]>> {
  const approximations: Partial<Record<Activation, number[]>> = {};
  for (const spec of specs) {
    const match = SPEC.exec(spec);
    if (match === null) {
      throw new UsageError(`--activation must be METHOD-FN-DEGREE with METHOD one of ${APPROX_METHODS.join(', ')} and FN one of ${ACTIVATIONS.join(', ')} (e.g. cryptodl-relu-3), got '${spec}'`);
    }
    const [, method, fn, degree] = match as unknown as [string, ApproxMethod, Activation, string];
    if (approximations[fn] !== undefined) throw new UsageError(`--activation: ${fn} is approximated twice`);
    try {
      approximations[fn] = approximate({ fn, method, degree: Number(degree), interval: APPROX_INTERVAL }).coeffs;
    } catch (error) {
      if (error instanceof ApproxError) throw new UsageError(`--activation ${spec}: ${error.message}`);
      throw error;
    }
  }
  return approximations;
}

