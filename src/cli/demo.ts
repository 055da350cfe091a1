import {
  classifierDepth,
  decryptResult,
  describeParameters,
  DeviceKeys,
  EncryptedClassifier,
  encryptClassifier,
  floatEvaluate,
  HeContext,
  type Layer,
  OwnerKeys,
  planClassifier,
  planParameters,
  type SecurityBits,
} from '../he';
import { nodeSeal } from '../node/seal';
import { UsageError } from './errors';

const HEADS: Record<string, number[]> = {
  mnist: [1600, 512, 10],
  small: [256, 64, 10],
  last: [512, 10],
};

/** xorshift32: the demo's weights and inputs are the same on every run. */
function generator(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

function demoHead(widths: number[]): Layer[] {
  const next = generator(2019);
  const layers: Layer[] = [];
  for (let i = 0; i + 1 < widths.length; i++) {
    const [n, m] = [widths[i]!, widths[i + 1]!];
    if (i > 0) layers.push({ kind: 'poly', coeffs: [0, 2, 1] });
    const weights = Float64Array.from({ length: n * m }, () => (2 * next() - 1) * Math.sqrt(3 / n));
    layers.push({ kind: 'dense', inputs: n, outputs: m, weights, bias: Float64Array.from({ length: m }, () => 0.1 * (next() - 0.5)) });
  }
  return layers;
}

const fmt = (v: ArrayLike<number>) => Array.from(v, (x) => x.toFixed(4).padStart(9)).join(' ');
const argmax = (v: ArrayLike<number>) => Array.from(v).reduce((best, x, i, a) => (x > a[best]! ? i : best), 0);

/**
 * The engine end to end in one process: the owner encrypts a head, the "device" encrypts
 * features and evaluates, the "backend" decrypts. Until the kiosk exists this is the demo.
 */
export async function runDemo(
  options: { head: string; security: SecurityBits; inputs: number },
  print: (line: string) => void,
): Promise<void> {
  const widths = HEADS[options.head];
  if (widths === undefined) throw new UsageError(`--head must be one of ${Object.keys(HEADS).join(', ')}, got '${options.head}'`);
  const layers = demoHead(widths);
  const runtime = await nodeSeal();
  const params = planParameters({ scheme: 'ckks', security: options.security, depth: classifierDepth(layers), precisionBits: 25 });
  const he = HeContext.create(runtime, params);
  print(`head ${widths.join('→')} with x²+2x, ${describeParameters(params)}`);
  const plan = planClassifier(he, layers);
  print(`plan: depth ${plan.depth}, ${plan.counts.ctMults} ct×ct multiplications (lower bound ${plan.lowerBoundMults}), ${plan.counts.rotations} rotations, Galois keys for steps ${plan.rotationSteps.join(',')}`);
  let t = performance.now();
  const owner = OwnerKeys.generate(he, plan.rotationSteps);
  const weights = await encryptClassifier(he, owner, layers);
  print(`owner: keys and encrypted weights in ${((performance.now() - t) / 1000).toFixed(1)} s; weights ${(weights.length / 1e6).toFixed(1)} MB, device keys ${(owner.deviceKeyBytes().length / 1e6).toFixed(1)} MB`);
  const keys = DeviceKeys.load(he, owner.deviceKeyBytes());
  const classifier = EncryptedClassifier.load(he, keys, weights);
  const next = generator(7);
  try {
    for (let i = 0; i < options.inputs; i++) {
      const x = Float64Array.from({ length: widths[0]! }, () => Math.max(0, 2 * next() - 0.8));
      t = performance.now();
      const { result } = classifier.evaluate(x);
      const ms = performance.now() - t;
      const decrypted = decryptResult(he, owner, result);
      const float = floatEvaluate(layers, x);
      print(`input ${i + 1}: device ${ms.toFixed(0)} ms, result ${(result.length / 1024).toFixed(0)} KiB of ciphertext`);
      print(`  decrypted ${fmt(decrypted)}  → class ${argmax(decrypted)}`);
      print(`  float     ${fmt(float)}  → class ${argmax(float)}`);
    }
  } finally {
    classifier.dispose();
    keys.dispose();
    owner.dispose();
    he.dispose();
  }
}
