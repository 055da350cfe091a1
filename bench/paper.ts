import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  classifierDepth,
  describeLayers,
  encryptClassifier,
  floatEvaluate,
  HeContext,
  type Mode,
  OwnerKeys,
  planClassifier,
  planParameters,
  type Scheme,
  type SecurityBits,
} from '../src/he';
import { preprocessMnist } from '../src/model/idx';
import { nodeSeal } from '../src/node/seal';
import { benchBrowser } from './browser';
import { machine, round, runCase, summary } from './machine';
import type { BaselineOutcome, CaseInputs, CaseSpec, DecryptOutcome, DeviceOutcome, ProtectOutcome, StreamOutcome } from './paper-case';
import { PAPER_MODELS, PEERS } from './paper-figures';
import { HEADS, type ModelSpec, MNIST_X2_MODEL, mnistTestSet, paperSplitModel, syntheticFeatures, weightsUsed } from './paper-models';
import { type BgvFigures, type BrowserRow, type EncryptionFigures, paperCells, paperCharts, paperMarkdown, type PaperReport, type PaperRow, rowRatios, type TestSetReport, type TestSetRow } from './paper-report';

/** The schemes the engine implements; each gets every row, the kiosk in Chromium included. */
const SCHEMES: readonly Scheme[] = ['ckks', 'bgv'];
const INPUTS = ['plain', 'encrypted'] as const;
/** The precision protectSplitModel plans for by default: the test-set run uses the same. */
const PRECISION_BITS = 25;
const TEST_IMAGES = 10_000;
const QUICK_TEST_IMAGES = 200;
const WORKERS = 2;
const TEST_SET_MODES: readonly { label: string; mode: Mode }[] = [
  { label: 'encrypted weights', mode: { weights: 'encrypted', input: 'encrypted' } },
  { label: 'plaintext weights', mode: { weights: 'plain', input: 'encrypted' } },
];

/** Runs one step in a fresh Node process and returns what it printed. */
function runStep<T>(spec: CaseSpec, env: NodeJS.ProcessEnv): Promise<T> {
  return runCase<T>('bench/paper-case.ts', spec, env, spec.phase === 'stream');
}

/** The first `count` MNIST test images through an extractor, as the device computes them. */
async function mnistFeatures(extractor: Uint8Array, count: number): Promise<number[][]> {
  const { onnxSession, runOnnx } = await import('./paper-onnx');
  const { images } = mnistTestSet();
  const session = await onnxSession(extractor);
  const features: number[][] = [];
  for (let i = 0; i < count; i++) features.push(Array.from(await runOnnx(session, preprocessMnist(images, i))));
  await session.release();
  return features;
}

/** One model variant of one head at every security level and input: protect, evaluate, decrypt. */
async function benchModel(
  spec: ModelSpec,
  scheme: Scheme,
  levels: readonly SecurityBits[],
  runs: number,
  root: string,
  env: NodeJS.ProcessEnv,
  browser: BrowserRow[],
): Promise<PaperRow[]> {
  const split = paperSplitModel(spec);
  const { extractor } = split;
  if (extractor === null) throw new Error(`${spec.model}: the paper's cases split at the classifier, after an extractor`);
  const features =
    spec.head === 'mnist' ? await mnistFeatures(extractor, runs + 1) : syntheticFeatures(split.extractorOutput.shape[1]!, runs + 1).map((x) => Array.from(x));
  const caseInputs: CaseInputs = { features, expected: features.map((x) => Array.from(floatEvaluate(split.head, x))) };
  const name = `${scheme}-${spec.head}-${spec.model.replace('+', '-')}`;
  const inputsFile = join(root, `${name}.inputs.json`);
  writeFileSync(inputsFile, JSON.stringify(caseInputs));
  const dirs = { dataDir: join(root, 'data'), bundleRoot: join(root, 'public') };
  const rows: PaperRow[] = [];
  for (const security of levels) {
    for (const input of INPUTS) {
      const modelId = `${name}-${security}-${input}`;
      const resultsDir = join(root, 'results', modelId);
      const protectedModel = await runStep<ProtectOutcome>({ phase: 'protect', ...spec, ...dirs, scheme, security, input, modelId }, env);
      const device = await runStep<DeviceOutcome>({ phase: 'device', bundleDir: protectedModel.bundleDir, dataDir: dirs.dataDir, inputsFile, resultsDir }, env);
      const decryption = await runStep<DecryptOutcome>({ phase: 'decrypt', dataDir: dirs.dataDir, keyId: protectedModel.keyId, inputsFile, resultsDir, results: runs + 1 }, env);
      if (spec.head === 'mnist' && spec.model === 'x2+2x' && input === 'encrypted') {
        process.stderr.write(`  ${modelId} in Chromium…\n`);
        const kiosk = await benchBrowser({ model: { dataDir: dirs.dataDir, modelDir: dirname(protectedModel.bundleDir), env }, workers: [1, 2], frames: runs * 4 });
        browser.push({
          scheme,
          security,
          browser: `Chromium ${kiosk.browser.version}, headless`,
          bundleLoadMs: kiosk.bundleLoadMs,
          wasmHeapMB: kiosk.wasmHeapMB,
          runs: kiosk.runs.map((r) => ({ workers: r.workers, frames: r.frames, frameMs: r.frameMs, evaluateMs: r.stagesMs.evaluate })),
        });
      }
      const m = protectedModel.metrics;
      const encryption: EncryptionFigures = {
        keygenMs: m.keygenMs,
        encryptMs: m.encryptMs,
        totalMs: m.keygenMs + m.encryptMs,
        weightsBytes: m.weightsBytes,
        keysBytes: m.keysBytes,
        bundleBytes: m.bundleBytes,
        peakRssMB: m.peakRssMB,
        wasmHeapMB: m.wasmHeapMB,
      };
      const paper = paperCells(spec.model, security, input);
      rows.push({
        scheme,
        head: spec.head,
        model: spec.model,
        security,
        input,
        weights: weightsUsed(spec),
        layers: describeLayers(split.head),
        polyModulusDegree: protectedModel.polyModulusDegree,
        coeffModulusBits: protectedModel.coeffModulusBits,
        bgv: bgvFigures(protectedModel),
        encryption,
        processing: device,
        decryption,
        paper,
        ratios: rowRatios(paper, { encryption, processing: device, decryption }),
      });
      const budget = decryption.noiseBudgetBits === null ? '' : `, noise budget left ${decryption.noiseBudgetBits} bits`;
      process.stderr.write(
        `  ${modelId}: encrypt ${encryption.totalMs} ms, device ${device.latencyMs.median} ms, decrypt ${decryption.ms.median} ms, ${decryption.precisionBits} bits${budget}\n`,
      );
    }
  }
  return rows;
}

/** What a BGV protection chose and measured (null for CKKS). */
function bgvFigures(outcome: ProtectOutcome): BgvFigures | null {
  const m = outcome.metrics;
  if (outcome.plainModulusBits === null) return null;
  const need = (value: number | undefined, what: string) => {
    if (value === undefined) throw new Error(`a BGV protection reported no ${what}`);
    return value;
  };
  return {
    plainModulusBits: outcome.plainModulusBits,
    calibrateMs: need(m.calibrateMs, 'calibration time'),
    planMs: need(m.planMs, 'planning time'),
    verifyMs: need(m.verifyMs, 'verification time'),
    predictedNoiseBudgetBits: need(m.predictedNoiseBudgetBits, 'predicted noise budget'),
    verifiedNoiseBudgetBits: need(m.noiseBudgetBits, 'verified noise budget'),
  };
}

/** Encrypts the MNIST x²+2x head for the test-set run: weights.bin, keys.bin, secret.bin in `dir`. */
async function encryptForTestSet(dir: string, mode: Mode, security: SecurityBits): Promise<{ weightsBytes: number; keysBytes: number }> {
  const { head } = paperSplitModel({ head: 'mnist', model: 'x2+2x' });
  const he = HeContext.create(await nodeSeal(), planParameters({ scheme: 'ckks', security, depth: classifierDepth(head), precisionBits: PRECISION_BITS }));
  const owner = OwnerKeys.generate(he, planClassifier(he, head, mode).rotationSteps);
  const weights = await encryptClassifier(he, owner, head, mode);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'weights.bin'), weights);
  writeFileSync(join(dir, 'keys.bin'), owner.deviceKeyBytes());
  writeFileSync(join(dir, 'secret.bin'), owner.secretKeyBytes());
  const sizes = { weightsBytes: weights.length, keysBytes: owner.deviceKeyBytes().length };
  owner.dispose();
  he.dispose();
  return sizes;
}

/** The MNIST test set through the encrypted path, split between worker processes. */
async function benchTestSet(images: number, root: string, env: NodeJS.ProcessEnv): Promise<TestSetReport> {
  const security = 128;
  const rows: TestSetRow[] = [];
  for (const { label, mode } of TEST_SET_MODES) {
    const dir = join(root, `test-set-${mode.weights}-weights`);
    const sizes = await encryptForTestSet(dir, mode, security);
    process.stderr.write(`  MNIST test set, ${label}: ${images} images, ${WORKERS} workers\n`);
    const per = Math.ceil(images / WORKERS);
    const outcomes = await Promise.all(
      Array.from({ length: WORKERS }, (_, w) => runStep<StreamOutcome>({ phase: 'stream', dir, from: w * per, to: Math.min(images, (w + 1) * per) }, env)),
    );
    const total = (f: (o: StreamOutcome) => number) => outcomes.reduce((n, o) => n + f(o), 0);
    const perImage = outcomes.flatMap((o) => o.perImageMs);
    const meanMs = perImage.reduce((a, b) => a + b, 0) / perImage.length;
    const wallMs = Math.max(...outcomes.map((o) => o.endedAt)) - Math.min(...outcomes.map((o) => o.startedAt));
    rows.push({
      label,
      mode,
      images,
      accuracy: total((o) => o.correct) / images,
      floatAccuracy: total((o) => o.floatCorrect) / images,
      agreement: total((o) => o.agree) / images,
      perImageMs: summary(perImage),
      stageMsPerImage: {
        extract: round(total((o) => o.stageTotalsMs.extract) / images),
        he: round(total((o) => o.stageTotalsMs.he) / images),
        decrypt: round(total((o) => o.stageTotalsMs.decrypt) / images),
      },
      perHourPerCore: Math.round(3_600_000 / meanMs),
      workers: WORKERS,
      perHourWorkers: Math.round((images / wallMs) * 3_600_000),
      wallS: round(wallMs / 1000, 1),
      ...sizes,
    });
  }
  return { model: `${MNIST_X2_MODEL}, head 1600→512→x²+2x→10`, scheme: 'ckks', security, images, ofImages: TEST_IMAGES, rows, peers: PEERS };
}

/**
 * The seed paper's Tables 1–4 (its three encrypted variants × security × plaintext or
 * encrypted input, for the trained MNIST model and the CIFAR-10-shaped head) and
 * CryptoDL's headline figures (the MNIST test set through the encrypted path), beside the
 * published figures. Writes docs/benchmarks.md and its charts; returns the JSON report.
 */
export async function benchPaper(options: { quick: boolean }): Promise<PaperReport> {
  const levels: SecurityBits[] = options.quick ? [128] : [128, 192, 256];
  const runs = options.quick ? 5 : 9;
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-paper-'));
  // The owner's workspace for the run: a throwaway key-encryption key wraps its secret keys.
  const env = { ...process.env, SEALED_EDGE_KEK: 'ab'.repeat(32) };
  try {
    const results: PaperRow[] = [];
    const browser: BrowserRow[] = [];
    for (const scheme of SCHEMES) {
      for (const head of HEADS) {
        for (const model of PAPER_MODELS) results.push(...(await benchModel({ head, model }, scheme, levels, runs, root, env, browser)));
      }
    }
    const testSet = await benchTestSet(options.quick ? QUICK_TEST_IMAGES : TEST_IMAGES, root, env);
    const report: PaperReport = {
      machine: machine(),
      baseline: await runStep<BaselineOutcome>({ phase: 'baseline' }, env),
      schemes: SCHEMES,
      securityLevels: levels,
      runs,
      results,
      testSet,
      browser,
    };
    const charts = paperCharts(report);
    mkdirSync('docs', { recursive: true });
    for (const chart of charts) writeFileSync(join('docs', chart.file), chart.svg);
    writeFileSync('docs/benchmarks.md', paperMarkdown(report, charts, options.quick));
    return report;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
