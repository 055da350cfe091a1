import { spawnSync } from 'node:child_process';
import {
  BgvContext,
  BgvDeviceKeys,
  BgvOwnerKeys,
  bgvReferenceModel,
  classifierDepth,
  decryptBgvResult,
  decryptResult,
  EncryptedBgvClassifier,
  encryptBgvClassifier,
  DeviceKeys,
  EncryptedClassifier,
  encryptClassifier,
  floatEvaluate,
  HeContext,
  isComplex,
  type Layer,
  lowerBoundMults,
  type Mode,
  OwnerKeys,
  planBgv,
  planClassifier,
  planParameters,
  type SecurityBits,
} from '../src/he';
import { clampInput } from '../src/he/bgv/fixed-point';
import { nodeSeal } from '../src/node/seal';
import { mnistHead } from '../tests/he/bgv-helpers';
import { makeHead, makeInputs } from '../tests/he/helpers';
import { machine, round, summary, table } from './machine';

/** The heads of issue 2, with He-initialized weights and ReLU-like features. */
const HEADS: { name: string; shape: number[] }[] = [
  { name: 'mnist-head', shape: [1600, 512, 10] },
  { name: 'cifar10-head', shape: [2304, 512, 10] },
  { name: 'last-layer', shape: [512, 10] },
  { name: 'small-head', shape: [256, 64, 10] },
];

const MODES: Mode[] = [
  { weights: 'encrypted', input: 'encrypted' },
  { weights: 'encrypted', input: 'plain' },
  { weights: 'plain', input: 'encrypted' },
];

/** BGV runs the paper's own trained MNIST head on real features: its quantization depends on them. */
const BGV_HEAD = 'mnist-paper';
const BGV_MODES: Mode[] = [
  { weights: 'encrypted', input: 'encrypted' },
  { weights: 'encrypted', input: 'plain' },
];
/** Training images whose features calibrate the BGV input range and quantization. */
const CALIBRATION_IMAGES = 300;

export interface HeCase {
  head: string;
  security: SecurityBits;
  mode: Mode;
  runs: number;
  /** Default 'ckks'. */
  scheme?: 'ckks' | 'bgv';
  /** 'real': no complex packing (the before of a comparison); default: the planner's choice. */
  packing?: 'real';
}

/** Measures one head in one mode at one security level (in a fresh process: see benchHe). */
export async function benchCase(spec: HeCase): Promise<Record<string, unknown>> {
  return spec.scheme === 'bgv' ? benchBgvCase(spec) : benchCkksCase(spec);
}

async function benchCkksCase({ head: name, security, mode, runs, packing }: HeCase): Promise<Record<string, unknown>> {
  const head = HEADS.find((h) => h.name === name);
  if (head === undefined) throw new Error(`unknown head '${name}'`);
  const runtime = await nodeSeal();
  const layers: Layer[] = makeHead(head.shape, 'realistic', head.shape[0]!);
  const params = planParameters({ scheme: 'ckks', security, depth: classifierDepth(layers), precisionBits: 25 });
  const he = HeContext.create(runtime, params);
  const complex = packing !== 'real';
  const plan = planClassifier(he, layers, mode, complex);
  const owner = OwnerKeys.generate(he, plan.rotationSteps);
  const t0 = performance.now();
  const weights = await encryptClassifier(he, owner, layers, mode, undefined, complex);
  const encryptMs = performance.now() - t0;
  const keys = DeviceKeys.load(he, owner.deviceKeyBytes());
  const classifier = EncryptedClassifier.load(he, keys, weights);
  const latencies: number[] = [];
  const stages = { encryptMs: [] as number[], evaluateMs: [] as number[], serializeMs: [] as number[] };
  let maxAbsError = 0;
  // One warm-up run grows the WASM heap to its working size; it is not timed.
  const inputs = makeInputs(head.shape[0]!, runs + 1, 'realistic', 1);
  for (const [i, x] of inputs.entries()) {
    const t = performance.now();
    const evaluation = classifier.evaluate(x);
    const elapsed = performance.now() - t;
    const got = decryptResult(he, owner, evaluation.result);
    const float = floatEvaluate(layers, x);
    got.forEach((v, j) => (maxAbsError = Math.max(maxAbsError, Math.abs(v - float[j]!))));
    if (i === 0) continue;
    latencies.push(elapsed);
    stages.encryptMs.push(evaluation.timings.encryptMs);
    stages.evaluateMs.push(evaluation.timings.evaluateMs);
    stages.serializeMs.push(evaluation.timings.serializeMs);
  }
  const first = plan.plans.find((p) => p.kind === 'dense')!;
  const row = {
    case: head.name,
    scheme: 'ckks',
    shape: head.shape,
    activation: head.shape.length > 2 ? 'x^2+2x' : 'none',
    security,
    input: mode.input,
    weights: mode.weights,
    packing: plan.plans.some(isComplex) ? 'complex' : 'real',
    polyModulusDegree: params.polyModulusDegree,
    coeffModulusBits: params.coeffModulusBits,
    latencyMs: summary(latencies),
    stagesMs: {
      encrypt: summary(stages.encryptMs).median,
      evaluate: summary(stages.evaluateMs).median,
      serialize: summary(stages.serializeMs).median,
    },
    ctMults: plan.counts.ctMults,
    plainMults: plan.counts.plainMults,
    rotations: plan.counts.rotations,
    relins: plan.counts.relins,
    lowerBoundMults: plan.lowerBoundMults,
    firstLayer: { diagonals: first.kind === 'dense' ? first.diagonals : 0, lowerBoundMults: lowerBoundMults(head.shape[1]!, head.shape[0]!, he.slots) },
    rotationKeys: plan.rotationSteps.length,
    weightsBytes: weights.length,
    keysBytes: owner.deviceKeyBytes().length,
    modelEncryptMs: round(encryptMs),
    wasmHeapMB: round(runtime.heapBytes() / 2 ** 20, 1),
    maxAbsError,
    runs,
  };
  classifier.dispose();
  keys.dispose();
  owner.dispose();
  he.dispose();
  return row;
}

/**
 * The paper's MNIST head (1600→512→x²+2x→10, trained, imported from ONNX) under BGV on
 * real MNIST test features: planned from the features of 300 training images, every run
 * decrypted, checked against the integer reference and against the float model.
 */
async function benchBgvCase({ head: name, security, mode, runs }: HeCase): Promise<Record<string, unknown>> {
  if (name !== BGV_HEAD) throw new Error(`BGV cases run the '${BGV_HEAD}' head, not '${name}'`);
  const runtime = await nodeSeal();
  const { head, calibration, test } = await mnistHead(CALIBRATION_IMAGES, runs + 1);
  let t = performance.now();
  const planned = planBgv(head, { security, calibration, mode });
  const planMs = performance.now() - t;
  const { params, classifier: plan } = planned;
  const ctx = BgvContext.create(runtime, params);
  t = performance.now();
  const owner = BgvOwnerKeys.generate(ctx, plan);
  const keygenMs = performance.now() - t;
  t = performance.now();
  const weights = await encryptBgvClassifier(ctx, owner, head, plan);
  const encryptMs = performance.now() - t;
  const keys = BgvDeviceKeys.load(ctx, owner.deviceKeyBytes());
  const classifier = EncryptedBgvClassifier.load(ctx, keys, weights);
  const reference = bgvReferenceModel(plan, head);
  const latencies: number[] = [];
  const decrypts: number[] = [];
  const stages = { encryptMs: [] as number[], evaluateMs: [] as number[], serializeMs: [] as number[] };
  let maxAbsError = 0;
  let noiseBudgetBits = Infinity;
  let exact = true;
  let agree = 0;
  // One warm-up run grows the WASM heap to its working size; it is not timed.
  for (const [i, x] of test.entries()) {
    t = performance.now();
    const evaluation = classifier.evaluate(x);
    const elapsed = performance.now() - t;
    t = performance.now();
    const got = decryptBgvResult(ctx, owner, evaluation.result);
    const decryptMs = performance.now() - t;
    const float = floatEvaluate(head, clampInput(plan.fixedPoint, x));
    got.scores.forEach((v, j) => (maxAbsError = Math.max(maxAbsError, Math.abs(v - float[j]!))));
    const want = reference(x);
    exact &&= got.integers.every((v, j) => v === want[j]);
    noiseBudgetBits = Math.min(noiseBudgetBits, got.noiseBudgetBits);
    if (got.scores.indexOf(Math.max(...got.scores)) === float.indexOf(Math.max(...float))) agree++;
    if (i === 0) continue;
    latencies.push(elapsed);
    decrypts.push(decryptMs);
    stages.encryptMs.push(evaluation.timings.encryptMs);
    stages.evaluateMs.push(evaluation.timings.evaluateMs);
    stages.serializeMs.push(evaluation.timings.serializeMs);
  }
  const moduli = params.plainModulusBits.length;
  const first = plan.plans[0]!;
  const row = {
    case: BGV_HEAD,
    scheme: 'bgv',
    shape: [1600, 512, 10],
    activation: 'x^2+2x',
    security,
    input: mode.input,
    weights: mode.weights,
    polyModulusDegree: params.polyModulusDegree,
    coeffModulusBits: params.coeffModulusBits,
    plainModulusBits: params.plainModulusBits,
    latencyMs: summary(latencies),
    stagesMs: {
      encrypt: summary(stages.encryptMs).median,
      evaluate: summary(stages.evaluateMs).median,
      serialize: summary(stages.serializeMs).median,
      decrypt: summary(decrypts).median,
    },
    // Operations of one image: every CRT component evaluates the whole plan.
    ctMults: plan.counts.ctMults * moduli,
    plainMults: plan.counts.plainMults * moduli,
    rotations: plan.counts.rotations * moduli,
    relins: plan.counts.relins * moduli,
    lowerBoundMults: plan.lowerBoundMults,
    firstLayer: { diagonals: first.kind === 'dense' ? first.diagonals : 0, lowerBoundMults: lowerBoundMults(512, 1600, ctx.slots) },
    rotationKeys: plan.rotationSteps.length * moduli,
    weightsBytes: weights.length,
    keysBytes: owner.deviceKeyBytes().length,
    modelEncryptMs: round(encryptMs),
    keygenMs: round(keygenMs),
    planMs: round(planMs),
    wasmHeapMB: round(runtime.heapBytes() / 2 ** 20, 1),
    maxAbsError,
    noiseBudgetBits,
    predictedBudgetBits: plan.predictedBudgetBits,
    boundBits: round(planned.boundBits, 1),
    quantizationError: planned.quantizationError,
    exact,
    labelsAgree: `${agree}/${test.length}`,
    runs,
  };
  classifier.dispose();
  keys.dispose();
  owner.dispose();
  ctx.dispose();
  return row;
}

/**
 * Every head × security level × mode, each case in a fresh Node process: WASM memory never
 * shrinks, so only a fresh process shows one case's heap.
 */
export async function benchHe(options: { quick: boolean }): Promise<Record<string, unknown>> {
  const levels: SecurityBits[] = options.quick ? [128] : [128, 192, 256];
  const runs = options.quick ? 5 : 9;
  const specs: HeCase[] = [];
  for (const security of levels) {
    for (const head of HEADS) for (const mode of MODES) specs.push({ head: head.name, security, mode, runs });
  }
  // The MNIST head without complex packing, for the before/after of issue 15.
  specs.push({ head: 'mnist-head', security: 128, mode: MODES[0]!, runs, packing: 'real' });
  for (const security of levels) for (const mode of BGV_MODES) specs.push({ head: BGV_HEAD, security, mode, runs, scheme: 'bgv' });
  const results: Record<string, unknown>[] = [];
  for (const spec of specs) {
    const child = spawnSync(process.execPath, ['--import', 'tsx', 'bench/he-case.ts', JSON.stringify(spec)], {
      encoding: 'utf8',
      maxBuffer: 1 << 20,
    });
    if (child.status !== 0) throw new Error(`benchmark case ${JSON.stringify(spec)} failed:\n${child.stderr}`);
    const row = JSON.parse(child.stdout) as Record<string, unknown>;
    results.push(row);
    const { head, security, mode, scheme = 'ckks' } = spec;
    process.stderr.write(`  ${scheme} ${head} ${security}-bit W:${mode.weights} x:${mode.input} ${row.packing ?? ''}: ${(row.latencyMs as { median: number }).median} ms\n`);
  }
  return { machine: machine(), results };
}

export function heTable(report: { results: Record<string, unknown>[] }): string {
  const mb = (b: unknown) => ((b as number) / 1e6).toFixed(1);
  const latency = (r: Record<string, unknown>) => {
    const l = r.latencyMs as { median: number; min: number; max: number };
    return [l.median, l.min, l.max];
  };
  const ckks = report.results.filter((r) => r.scheme !== 'bgv');
  const bgv = report.results.filter((r) => r.scheme === 'bgv');
  const tables = [
    table(
      ['case', 'bits', 'N', 'weights', 'input', 'packing', 'median ms', 'min', 'max', 'ct×ct', 'ct×pt', 'lower bound', 'rot', 'relin', 'weights MB', 'keys MB', 'heap MB', 'max |err|'],
      ckks.map((r) => [
        r.case as string,
        r.security as number,
        r.polyModulusDegree as number,
        r.weights as string,
        r.input as string,
        (r.packing as string | undefined) ?? 'real',
        ...latency(r),
        r.ctMults as number,
        r.plainMults as number,
        r.lowerBoundMults as number,
        r.rotations as number,
        r.relins as number,
        mb(r.weightsBytes),
        mb(r.keysBytes),
        r.wasmHeapMB as number,
        (r.maxAbsError as number).toExponential(1),
      ]),
    ),
  ];
  if (bgv.length > 0) {
    tables.push(
      table(
        ['BGV case', 'bits', 'N', 't bits', 'input', 'median ms', 'min', 'max', 'ct×ct', 'ct×pt', 'rot', 'relin', 'weights MB', 'keys MB', 'heap MB', 'budget', 'exact', 'labels', 'max |err|'],
        bgv.map((r) => [
          r.case as string,
          r.security as number,
          r.polyModulusDegree as number,
          (r.plainModulusBits as number[]).join('+'),
          r.input as string,
          ...latency(r),
          r.ctMults as number,
          r.plainMults as number,
          r.rotations as number,
          r.relins as number,
          mb(r.weightsBytes),
          mb(r.keysBytes),
          r.wasmHeapMB as number,
          r.noiseBudgetBits as number,
          String(r.exact),
          r.labelsAgree as string,
          (r.maxAbsError as number).toExponential(1),
        ]),
      ),
    );
  }
  return tables.join('\n\n');
}
