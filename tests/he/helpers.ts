import {
  classifierDepth,
  type ConvLayer,
  type ConvShape,
  convGeometry,
  decryptResult,
  DeviceKeys,
  EncryptedClassifier,
  encryptClassifier,
  HeContext,
  HeError,
  type HeErrorCode,
  type Layer,
  type Mode,
  OwnerKeys,
  planClassifier,
  planParameters,
  type SecurityBits,
} from '../../src/he';
import { nodeSeal } from '../../src/node/seal';

/** Deterministic generator (mulberry32), so every run sees the same weights and inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gaussian(next: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

/** A convolution with Gaussian weights scaled by 1/√fan-in (times `gain`) and small biases. */
export function makeConv(g: Omit<ConvShape, 'kind'> & { kind?: 'conv' }, seed: number, gain = 1): ConvLayer {
  const n = gaussian(rng(seed));
  const fanIn = g.inChannels * g.kernel[0] * g.kernel[1];
  return {
    ...g,
    kind: 'conv',
    weights: Float64Array.from({ length: g.outChannels * fanIn }, () => gain * n() * Math.sqrt(1 / fanIn)),
    bias: Float64Array.from({ length: g.outChannels }, () => 0.1 * n()),
  };
}

/** A dense layer with Gaussian weights scaled by 1/√inputs and small biases. */
export function makeDense(inputs: number, outputs: number, seed: number): Layer {
  const n = gaussian(rng(seed));
  return {
    kind: 'dense',
    inputs,
    outputs,
    weights: Float64Array.from({ length: inputs * outputs }, () => n() * Math.sqrt(1 / inputs)),
    bias: Float64Array.from({ length: outputs }, () => 0.1 * n()),
  };
}

/** Images with pixels uniform in [0, 1): `shape` is the pixel count or the C×H×W a convolution reads. */
/** Convolutions one after another (each reading the one before), an activation after each, then a dense layer to 10 scores. */
export function convChain(geometries: readonly ConvShape[], seed: number, activation: readonly number[]): Layer[] {
  const layers: Layer[] = [];
  geometries.forEach((g, i) => layers.push(makeConv(g, seed + i), { kind: 'poly', coeffs: [...activation] }));
  layers.push(makeDense(convGeometry(geometries.at(-1)!).outputs, 10, seed + 99));
  return layers;
}

/** conv 1→8 5×5 stride 2 pad 1, x², conv 8→16 3×3, x², dense: the deeper HE-friendly CNN's shape (its pool folds into the dense layer). */
export const DEEP_CNN: readonly ConvShape[] = [
  { kind: 'conv', inChannels: 1, inHeight: 28, inWidth: 28, outChannels: 8, kernel: [5, 5], stride: [2, 2], pads: [1, 1, 1, 1] },
  { kind: 'conv', inChannels: 8, inHeight: 13, inWidth: 13, outChannels: 16, kernel: [3, 3], stride: [1, 1], pads: [0, 0, 0, 0] },
];

export function makeImages(shape: number | { inChannels: number; inHeight: number; inWidth: number }, count: number, seed: number): Float64Array[] {
  const pixels = typeof shape === 'number' ? shape : shape.inChannels * shape.inHeight * shape.inWidth;
  const u = rng(seed);
  return Array.from({ length: count }, () => Float64Array.from({ length: pixels }, () => u()));
}

export type WeightKind = 'random' | 'realistic';

/**
 * A classifier head of the given widths with x²+2x between dense layers.
 * random: uniform weights in ±1/√n. realistic: He-initialized Gaussian weights (the
 * statistics of a trained CNN's head) with small biases.
 */
export function makeHead(widths: readonly number[], kind: WeightKind, seed: number, activation = [0, 2, 1]): Layer[] {
  const u = rng(seed);
  const g = gaussian(u);
  const layers: Layer[] = [];
  for (let i = 0; i + 1 < widths.length; i++) {
    const n = widths[i]!;
    const m = widths[i + 1]!;
    if (i > 0) layers.push({ kind: 'poly', coeffs: activation });
    const w =
      kind === 'random'
        ? Float64Array.from({ length: n * m }, () => (2 * u() - 1) / Math.sqrt(n))
        : Float64Array.from({ length: n * m }, () => g() * Math.sqrt(2 / n));
    const b = Float64Array.from({ length: m }, () => (kind === 'random' ? 2 * u() - 1 : 0.05 * g()));
    layers.push({ kind: 'dense', inputs: n, outputs: m, weights: w, bias: b });
  }
  return layers;
}

/**
 * Inputs like the head sees them. random: uniform in [−1, 1]. realistic: CNN features
 * after ReLU and pooling, non-negative and about half zeros.
 */
export function makeInputs(n: number, count: number, kind: WeightKind, seed: number): Float64Array[] {
  const u = rng(seed);
  const g = gaussian(u);
  return Array.from({ length: count }, () =>
    Float64Array.from({ length: n }, () => (kind === 'random' ? 2 * u() - 1 : Math.max(0, g()))),
  );
}

/**
 * Lets the event loop run between long synchronous evaluations, so the test runner's
 * worker keeps answering its parent (Vitest gives up on a worker silent for minutes).
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

export function maxAbs(v: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]!));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Everything one protected head needs: context, owner keys, device keys, loaded classifier. */
export interface Protected {
  he: HeContext;
  owner: OwnerKeys;
  keys: DeviceKeys;
  classifier: EncryptedClassifier;
  classifierBytes: Uint8Array;
  decrypt(result: Uint8Array): Float64Array;
  dispose(): void;
}

export async function protect(
  layers: Layer[],
  security: SecurityBits = 128,
  mode?: Mode,
  precisionBits = 25,
  integerBits?: number,
): Promise<Protected> {
  const runtime = await nodeSeal();
  const params = planParameters({ scheme: 'ckks', security, depth: classifierDepth(layers), precisionBits, integerBits });
  const he = HeContext.create(runtime, params);
  const plan = planClassifier(he, layers, mode);
  const owner = OwnerKeys.generate(he, plan.rotationSteps);
  const classifierBytes = await encryptClassifier(he, owner, layers, mode);
  const keys = DeviceKeys.load(he, owner.deviceKeyBytes());
  const classifier = EncryptedClassifier.load(he, keys, classifierBytes);
  return {
    he,
    owner,
    keys,
    classifier,
    classifierBytes,
    decrypt: (result) => decryptResult(he, owner, result),
    dispose() {
      classifier.dispose();
      keys.dispose();
      owner.dispose();
      he.dispose();
    },
  };
}

/** The HeError code `f` throws (anything else, or nothing thrown, fails the test). */
export function codeOf(f: () => unknown): HeErrorCode {
  try {
    f();
  } catch (error) {
    if (error instanceof HeError) return error.code;
    throw new Error(`expected an HeError, got ${String(error)}`);
  }
  throw new Error('expected an HeError, nothing was thrown');
}

/** The message of what `f` throws ('' when it throws nothing). */
export function messageOf(f: () => unknown): string {
  try {
    f();
  } catch (error) {
    return (error as Error).message;
  }
  return '';
}
