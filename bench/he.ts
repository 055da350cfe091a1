import { spawnSync } from 'node:child_process';
import {
  classifierDepth,
  decryptResult,
  DeviceKeys,
  EncryptedClassifier,
  encryptClassifier,
  floatEvaluate,
  HeContext,
  type Layer,
  lowerBoundMults,
  type Mode,
  OwnerKeys,
  planClassifier,
  planParameters,
  type SecurityBits,
} from '../src/he';
import { nodeSeal } from '../src/node/seal';
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

export interface HeCase {
  head: string;
  security: SecurityBits;
  mode: Mode;
  runs: number;
}

/** Measures one head in one mode at one security level (in a fresh process: see benchHe). */
export async function benchCase({ head: name, security, mode, runs }: HeCase): Promise<Record<string, unknown>> {
  const head = HEADS.find((h) => h.name === name);
  if (head === undefined) throw new Error(`unknown head '${name}'`);
  const runtime = await nodeSeal();
  const layers: Layer[] = makeHead(head.shape, 'realistic', head.shape[0]!);
  const params = planParameters({ scheme: 'ckks', security, depth: classifierDepth(layers), precisionBits: 25 });
  const he = HeContext.create(runtime, params);
  const plan = planClassifier(he, layers, mode);
  const owner = OwnerKeys.generate(he, plan.rotationSteps);
  const t0 = performance.now();
  const weights = await encryptClassifier(he, owner, layers, mode);
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
    shape: head.shape,
    activation: head.shape.length > 2 ? 'x^2+2x' : 'none',
    security,
    input: mode.input,
    weights: mode.weights,
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
 * Every head × security level × mode, each case in a fresh Node process: WASM memory never
 * shrinks, so only a fresh process shows one case's heap.
 */
export async function benchHe(options: { quick: boolean }): Promise<Record<string, unknown>> {
  const levels: SecurityBits[] = options.quick ? [128] : [128, 192, 256];
  const runs = options.quick ? 5 : 9;
  const results: Record<string, unknown>[] = [];
  for (const security of levels) {
    for (const head of HEADS) {
      for (const mode of MODES) {
        const spec: HeCase = { head: head.name, security, mode, runs };
        const child = spawnSync(process.execPath, ['--import', 'tsx', 'bench/he-case.ts', JSON.stringify(spec)], {
          encoding: 'utf8',
          maxBuffer: 1 << 20,
        });
        if (child.status !== 0) throw new Error(`benchmark case ${JSON.stringify(spec)} failed:\n${child.stderr}`);
        const row = JSON.parse(child.stdout) as Record<string, unknown>;
        results.push(row);
        process.stderr.write(`  ${head.name} ${security}-bit W:${mode.weights} x:${mode.input}: ${(row.latencyMs as { median: number }).median} ms\n`);
      }
    }
  }
  return { machine: machine(), results };
}

export function heTable(report: { results: Record<string, unknown>[] }): string {
  const mb = (b: unknown) => ((b as number) / 1e6).toFixed(1);
  return table(
    ['case', 'bits', 'N', 'weights', 'input', 'median ms', 'min', 'max', 'ct×ct', 'ct×pt', 'lower bound', 'rot', 'relin', 'weights MB', 'keys MB', 'heap MB', 'max |err|'],
    report.results.map((r) => {
      const l = r.latencyMs as { median: number; min: number; max: number };
      return [
        r.case as string,
        r.security as number,
        r.polyModulusDegree as number,
        r.weights as string,
        r.input as string,
        l.median,
        l.min,
        l.max,
        r.ctMults as number,
        r.plainMults as number,
        r.lowerBoundMults as number,
        r.rotations as number,
        r.relins as number,
        mb(r.weightsBytes),
        mb(r.keysBytes),
        r.wasmHeapMB as number,
        (r.maxAbsError as number).toExponential(1),
      ];
    }),
  );
}
