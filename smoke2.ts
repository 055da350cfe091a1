import { nodeSeal } from './src/node/seal';
import * as he from './src/he';
const rt = await nodeSeal();
function rnd(seed: number) { let s = seed; return () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 - 0.5; }; }
const r = rnd(7);
const heads: Record<string, number[]> = { mnist: [1600, 512, 10], cifar: [2304, 512, 10], last: [512, 10], small: [256, 64, 10] };
for (const sec of [128, 192] as const) for (const [name, shape] of Object.entries(heads)) for (const mode of [he.DEFAULT_MODE, {weights:'plain', input:'encrypted'} as he.Mode, {weights:'encrypted', input:'plain'} as he.Mode]) {
  if (sec === 192 && mode !== he.DEFAULT_MODE) continue;
  const layers: he.Layer[] = [];
  for (let i = 0; i + 1 < shape.length; i++) {
    if (i > 0) layers.push({ kind: 'poly', coeffs: [0, 2, 1] });
    const n = shape[i]!, m = shape[i+1]!;
    layers.push({ kind: 'dense', inputs: n, outputs: m, weights: Float64Array.from({length: n*m}, () => r() / Math.sqrt(n)), bias: Float64Array.from({length: m}, () => r()*0.1) });
  }
  const params = he.planParameters({ scheme: 'ckks', security: sec, depth: he.classifierDepth(layers), precisionBits: 25 });
  const ctx = he.HeContext.create(rt, params);
  const plan = he.planClassifier(ctx, layers, mode);
  const owner = he.OwnerKeys.generate(ctx, plan.rotationSteps);
  const bytes = he.encryptClassifier(ctx, owner, layers, mode);
  const keys = he.DeviceKeys.load(ctx, owner.deviceKeyBytes());
  const clf = he.EncryptedClassifier.load(ctx, keys, bytes);
  const ts: number[] = []; let maxErr = 0;
  for (let i = 0; i < 3; i++) {
    const x = Float64Array.from({length: shape[0]!}, () => r() * 2);
    const t = performance.now();
    const ev = clf.evaluate(x);
    ts.push(performance.now() - t);
    const got = he.decryptResult(ctx, owner, ev.result);
    const ref = he.referenceEvaluate(layers, ctx.slots, x);
    const mx = Math.max(...ref.map(Math.abs));
    maxErr = Math.max(maxErr, ...got.map((v, j) => Math.abs(v - ref[j]!) / mx));
  }
  console.log(sec, name, mode.weights, mode.input, 'N', params.polyModulusDegree, 'ms', ts.map(t => t.toFixed(0)).join(' '), 'relErr', maxErr.toExponential(2), 'W MB', (bytes.length/1e6).toFixed(1), 'K MB', (owner.deviceKeyBytes().length/1e6).toFixed(1), 'mults', plan.counts.ctMults, plan.counts.plainMults, 'lb', plan.lowerBoundMults, 'rot', plan.counts.rotations, 'heap', (rt.heapBytes()/2**20).toFixed(0));
  clf.dispose(); keys.dispose(); owner.dispose(); ctx.dispose();
}
