/**
 * One step of the paper benchmark in its own Node process (WASM memory never shrinks, so
 * only a fresh process shows one step's memory): `protect` (the owner encrypts a model,
 * Table 1), `device` (the device evaluates it, Tables 2 and 3), `decrypt` (the backend
 * opens the results, Table 4), `stream` (one worker of the MNIST test-set run) and
 * `baseline` (SEAL loaded, nothing else).
 * Prints its result as one line of JSON.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BgvContext,
  bgvKeySetInfo,
  BgvOwnerKeys,
  containerScheme,
  decryptBgvResult,
  decryptResult,
  DeviceKeys,
  EncryptedClassifier,
  HeContext,
  keySetInfo,
  OwnerKeys,
  type SealRuntime,
  type Scheme,
  type SecurityBits,
} from '../src/he';
import { readContainer } from '../src/he/container';
import { loadSeal } from '../src/he/keys';
import { preprocessMnist } from '../src/model/idx';
import { importOnnx } from '../src/model/onnx';
import { loadBundleClassifier } from '../src/node/device-client';
import { nodeSeal } from '../src/node/seal';
import { loadBundleDir } from '../src/protect/bundle';
import { CALIBRATION_IMAGES } from '../src/protect/calibration';
import { secretKeyContext, unwrapSecret } from '../src/node/kek';
import { protectSplitModel, type ProtectMetrics } from '../src/protect/protect';
import { openWorkspace, SIGNING_PUBLIC_FILE } from '../src/protect/workspace';
import { argmax } from '../tests/he/helpers';
import { round, summary } from './machine';
import { MNIST_X2_MODEL, type ModelSpec, mnistTestSet, paperSplitModel, syntheticFeatures } from './paper-models';

export type Summary = ReturnType<typeof summary>;

/** Where a case's files live: the owner's data directory and the bundles under one root. */
export interface CaseDirs {
  readonly dataDir: string;
  readonly bundleRoot: string;
}

export interface ProtectSpec extends ModelSpec, CaseDirs {
  readonly phase: 'protect';
  readonly scheme: Scheme;
  readonly security: SecurityBits;
  readonly input: 'plain' | 'encrypted';
  readonly modelId: string;
}

export interface ProtectOutcome {
  readonly bundleDir: string;
  readonly keyId: string;
  /** For BGV also the calibration, planning and verification times and the predicted and verified noise budgets. */
  readonly metrics: ProtectMetrics;
  readonly polyModulusDegree: number;
  readonly coeffModulusBits: readonly number[];
  /** BGV: the sizes of the CRT plaintext moduli; null for CKKS. */
  readonly plainModulusBits: readonly number[] | null;
}

/** The features a device case evaluates and the float model's scores for them. */
export interface CaseInputs {
  readonly features: number[][];
  readonly expected: number[][];
}

export interface DeviceSpec {
  readonly phase: 'device';
  readonly bundleDir: string;
  readonly dataDir: string;
  readonly inputsFile: string;
  readonly resultsDir: string;
}

export interface DeviceOutcome {
  /** Per image: encrypt the features (if encrypted input), evaluate, serialize the scores. */
  readonly latencyMs: Summary;
  readonly stagesMs: { encrypt: number; evaluate: number; serialize: number };
  /** Loading the bundle into SEAL, once: creating the context(s) (one per CRT modulus for BGV), loading keys and weights. */
  readonly loadMs: number;
  readonly resultBytes: number;
  readonly wasmHeapMB: number;
  readonly peakRssMB: number;
}

export interface DecryptSpec {
  readonly phase: 'decrypt';
  readonly dataDir: string;
  readonly keyId: string;
  readonly inputsFile: string;
  readonly resultsDir: string;
  readonly results: number;
}

export interface DecryptOutcome {
  readonly ms: Summary;
  /** Unwrapping the secret key, creating the context and loading the key, once. */
  readonly openMs: number;
  readonly wasmHeapMB: number;
  readonly peakRssMB: number;
  /** Rescalings still possible on the result ciphertexts (CKKS); null for BGV. */
  readonly remainingLevels: number | null;
  /** BGV: the smallest noise budget left over every result and CRT component, in bits (SEAL's invariant noise budget); null for CKKS. */
  readonly noiseBudgetBits: number | null;
  readonly maxAbsError: number;
  /** −log2 of the largest |decrypted − float| score: bits of absolute precision (for BGV, what its fixed point keeps). */
  readonly precisionBits: number;
  readonly argmaxAgreement: number;
}

export interface StreamSpec {
  readonly phase: 'stream';
  /** Holds weights.bin, keys.bin and secret.bin of the encrypted MNIST head. */
  readonly dir: string;
  readonly from: number;
  readonly to: number;
}

export interface StreamOutcome {
  readonly images: number;
  readonly correct: number;
  readonly floatCorrect: number;
  readonly agree: number;
  /** Per image: extractor, encrypt + evaluate + serialize, decrypt. */
  readonly perImageMs: number[];
  readonly stageTotalsMs: { extract: number; he: number; decrypt: number };
  /** Epoch milliseconds around the images (loading excluded). */
  readonly startedAt: number;
  readonly endedAt: number;
}

/** A step that only loads SEAL: the memory every other step starts from. */
export interface BaselineSpec {
  readonly phase: 'baseline';
}

export interface BaselineOutcome {
  readonly peakRssMB: number;
  readonly wasmHeapMB: number;
}

export type CaseSpec = ProtectSpec | DeviceSpec | DecryptSpec | StreamSpec | BaselineSpec;

const peakRssMB = () => Math.round(process.resourceUsage().maxRSS / 1024);
const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
const readInputs = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as CaseInputs;

async function protect(spec: ProtectSpec): Promise<ProtectOutcome> {
  const ws = await openWorkspace(spec.dataDir);
  try {
    const model = paperSplitModel(spec);
    // BGV calibrates on real features: the MNIST extractor's, on training images (protect's
    // default); the CIFAR-10-shaped head has no extractor, so its synthetic features.
    const calibration =
      spec.scheme === 'bgv' && spec.head === 'cifar10-shaped' ? syntheticFeatures(model.extractorOutput.shape[1]!, CALIBRATION_IMAGES) : undefined;
    const report = await protectSplitModel(ws, await nodeSeal(), model, {
      modelId: spec.modelId,
      security: spec.security,
      input: spec.input,
      outDir: spec.bundleRoot,
      scheme: spec.scheme,
      calibration,
    });
    const { he } = report.manifest;
    return {
      bundleDir: report.bundleDir,
      keyId: report.keyId,
      metrics: report.metrics,
      polyModulusDegree: he.params.polyModulusDegree,
      coeffModulusBits: he.params.coeffModulusBits,
      plainModulusBits: he.scheme === 'bgv' ? he.params.plainModulusBits : null,
    };
  } finally {
    await ws.close();
  }
}

async function device(spec: DeviceSpec): Promise<DeviceOutcome> {
  const ownerKey = Buffer.from(readFileSync(join(spec.dataDir, SIGNING_PUBLIC_FILE), 'utf8').trim(), 'hex');
  const bundle = await loadBundleDir(spec.bundleDir, ownerKey);
  const { features } = readInputs(spec.inputsFile);
  const runtime = await nodeSeal();
  const t0 = performance.now();
  const classifier = loadBundleClassifier(runtime, bundle);
  const loadMs = performance.now() - t0;
  mkdirSync(spec.resultsDir, { recursive: true });
  const latencies: number[] = [];
  const stages = { encrypt: [] as number[], evaluate: [] as number[], serialize: [] as number[] };
  let resultBytes = 0;
  // The first input is a warm-up that grows the WASM heap to its working size: not timed.
  for (const [i, x] of features.entries()) {
    const t = performance.now();
    const { result, timings } = classifier.evaluate(x);
    const elapsed = performance.now() - t;
    writeFileSync(join(spec.resultsDir, `${i}.bin`), result);
    resultBytes = result.length;
    if (i === 0) continue;
    latencies.push(elapsed);
    stages.encrypt.push(timings.encryptMs);
    stages.evaluate.push(timings.evaluateMs);
    stages.serialize.push(timings.serializeMs);
  }
  const outcome: DeviceOutcome = {
    latencyMs: summary(latencies),
    stagesMs: { encrypt: summary(stages.encrypt).median, evaluate: summary(stages.evaluate).median, serialize: summary(stages.serialize).median },
    loadMs: round(loadMs),
    resultBytes,
    wasmHeapMB: mib(runtime.heapBytes()),
    peakRssMB: peakRssMB(),
  };
  classifier.dispose();
  return outcome;
}

/** A key pair opened for decryption, of either scheme. */
interface OpenedKey {
  decrypt(result: Uint8Array): { scores: Float64Array; noiseBudgetBits: number | null };
  /** CKKS: the rescalings left on the results; null for BGV (a modulus switch happens only where the plan has one). */
  remainingLevels(results: readonly Uint8Array[]): number | null;
  dispose(): void;
}

function openCkks(runtime: SealRuntime, secret: Uint8Array, deviceKeys: Uint8Array): OpenedKey {
  const he = HeContext.create(runtime, keySetInfo(deviceKeys).params);
  const owner = OwnerKeys.load(he, secret, deviceKeys);
  return {
    decrypt: (bytes) => ({ scores: decryptResult(he, owner, bytes), noiseBudgetBits: null }),
    remainingLevels: (results) =>
      Math.min(
        ...results.map((bytes) => {
          const ct = loadSeal(he, he.seal.CipherText(), readContainer(bytes, 'result').sections[0]!, 'result ciphertext');
          const level = he.levelOf(ct);
          ct.delete();
          return level;
        }),
      ),
    dispose: () => {
      owner.dispose();
      he.dispose();
    },
  };
}

function openBgv(runtime: SealRuntime, secret: Uint8Array, deviceKeys: Uint8Array): OpenedKey {
  const ctx = BgvContext.create(runtime, bgvKeySetInfo(deviceKeys).params);
  const owner = BgvOwnerKeys.load(ctx, secret, deviceKeys);
  return {
    decrypt: (bytes) => {
      const { scores, noiseBudgetBits } = decryptBgvResult(ctx, owner, bytes);
      return { scores, noiseBudgetBits };
    },
    remainingLevels: () => null,
    dispose: () => {
      owner.dispose();
      ctx.dispose();
    },
  };
}

/** The backend's side, as the Decryption Agent does it: unwrap the secret key, load it, decrypt. */
async function decrypt(spec: DecryptSpec): Promise<DecryptOutcome> {
  const { expected } = readInputs(spec.inputsFile);
  const results = Array.from({ length: spec.results }, (_, i) => new Uint8Array(readFileSync(join(spec.resultsDir, `${i}.bin`))));
  const runtime = await nodeSeal();
  const ws = await openWorkspace(spec.dataDir);
  const t0 = performance.now();
  const record = await ws.store.getKeyPair(spec.keyId);
  if (record === null) throw new Error(`no key pair ${spec.keyId}`);
  const secret = unwrapSecret(ws.kek, record.wrappedSecretKey, secretKeyContext(spec.keyId));
  const opened = (containerScheme(record.deviceKeys, 'deviceKeys') === 'bgv' ? openBgv : openCkks)(runtime, secret, record.deviceKeys);
  const openMs = performance.now() - t0;
  await ws.close();
  opened.decrypt(results[0]!); // warm-up
  const times: number[] = [];
  let maxAbsError = 0;
  let agree = 0;
  let budget: number | null = null;
  for (const [i, bytes] of results.entries()) {
    const t = performance.now();
    const { scores, noiseBudgetBits } = opened.decrypt(bytes);
    times.push(performance.now() - t);
    if (noiseBudgetBits !== null) budget = Math.min(budget ?? Infinity, noiseBudgetBits);
    const want = expected[i]!;
    scores.forEach((v, j) => (maxAbsError = Math.max(maxAbsError, Math.abs(v - want[j]!))));
    if (argmax(scores) === argmax(want)) agree++;
  }
  const outcome: DecryptOutcome = {
    ms: summary(times),
    openMs: round(openMs),
    wasmHeapMB: mib(runtime.heapBytes()),
    peakRssMB: peakRssMB(),
    remainingLevels: opened.remainingLevels(results),
    noiseBudgetBits: budget,
    maxAbsError,
    precisionBits: round(-Math.log2(maxAbsError), 1),
    argmaxAgreement: agree / results.length,
  };
  opened.dispose();
  return outcome;
}

/**
 * One worker of the test-set run: each image goes through the extractor (onnxruntime-node,
 * one thread), the encrypted classifier and decryption; the original float model, run
 * beside it untimed, gives the agreement.
 */
async function stream(spec: StreamSpec): Promise<StreamOutcome> {
  const { onnxSession, runOnnx } = await import('./paper-onnx');
  const { images, labels } = mnistTestSet();
  const modelBytes = readFileSync(MNIST_X2_MODEL);
  const extractor = await onnxSession(importOnnx(modelBytes, { source: MNIST_X2_MODEL }).extractor);
  const original = await onnxSession(modelBytes);
  const keyBytes = new Uint8Array(readFileSync(join(spec.dir, 'keys.bin')));
  const he = HeContext.create(await nodeSeal(), keySetInfo(keyBytes).params);
  const keys = DeviceKeys.load(he, keyBytes);
  const classifier = EncryptedClassifier.load(he, keys, new Uint8Array(readFileSync(join(spec.dir, 'weights.bin'))));
  const owner = OwnerKeys.load(he, new Uint8Array(readFileSync(join(spec.dir, 'secret.bin'))), keyBytes);
  const perImageMs: number[] = [];
  const totals = { extract: 0, he: 0, decrypt: 0 };
  let correct = 0;
  let floatCorrect = 0;
  let agree = 0;
  const startedAt = Date.now();
  for (let i = spec.from; i < spec.to; i++) {
    const x = preprocessMnist(images, i);
    const t0 = performance.now();
    const features = await runOnnx(extractor, x);
    const t1 = performance.now();
    const { result } = classifier.evaluate(features);
    const t2 = performance.now();
    const label = argmax(decryptResult(he, owner, result));
    const t3 = performance.now();
    totals.extract += t1 - t0;
    totals.he += t2 - t1;
    totals.decrypt += t3 - t2;
    perImageMs.push(round(t3 - t0));
    const floatLabel = argmax(await runOnnx(original, x));
    if (label === labels[i]) correct++;
    if (floatLabel === labels[i]) floatCorrect++;
    if (label === floatLabel) agree++;
    const done = i + 1 - spec.from;
    if (done % 500 === 0) process.stderr.write(`    worker ${spec.from}–${spec.to - 1}: ${done}/${spec.to - spec.from} images\n`);
  }
  const endedAt = Date.now();
  classifier.dispose();
  keys.dispose();
  owner.dispose();
  he.dispose();
  await Promise.all([extractor.release(), original.release()]);
  const stageTotalsMs = { extract: round(totals.extract), he: round(totals.he), decrypt: round(totals.decrypt) };
  return { images: spec.to - spec.from, correct, floatCorrect, agree, perImageMs, stageTotalsMs, startedAt, endedAt };
}

async function baseline(): Promise<BaselineOutcome> {
  const runtime = await nodeSeal();
  return { peakRssMB: peakRssMB(), wasmHeapMB: mib(runtime.heapBytes()) };
}

const PHASES = { protect, device, decrypt, stream, baseline } as const;

const spec = JSON.parse(process.argv[2] ?? '') as CaseSpec;
const run = PHASES[spec.phase] as (spec: CaseSpec) => Promise<unknown>;
process.stdout.write(`${JSON.stringify(await run(spec))}\n`);
