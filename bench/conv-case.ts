/**
 * One step of the convolution benchmark in its own Node process (WASM memory never
 * shrinks): `protect` (the owner protects a model from its split point into a bundle and
 * keeps the secret key beside it, for the benchmark only) and `stream` (one device worker:
 * each test image preprocessed, through the extractor if the bundle has one, encrypted,
 * evaluated, then decrypted and compared with the original float model). Prints its
 * result as one line of JSON.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decryptResult, HeContext, layerNames, keySetInfo, OwnerKeys, planClassifier, type SecurityBits } from '../src/he';
import { preprocessMnist } from '../src/model/idx';
import { MNIST_SPEC } from '../src/model/input-spec';
import { importOnnx } from '../src/model/onnx';
import { decodeModel } from '../src/model/proto';
import { loadBundleClassifier } from '../src/node/device-client';
import { nodeSeal } from '../src/node/seal';
import { loadBundleDir } from '../src/protect/bundle';
import { secretKeyContext, unwrapSecret } from '../src/node/kek';
import { protectSplitModel } from '../src/protect/protect';
import { openWorkspace, SIGNING_PUBLIC_FILE } from '../src/protect/workspace';
import { argmax } from '../tests/he/helpers';
import { mnistTestSet } from './paper-models';
import { round } from './machine';

export interface ConvProtectSpec {
  readonly phase: 'protect';
  readonly model: string;
  readonly split: string;
  readonly security: SecurityBits;
  readonly input: 'encrypted' | 'plain';
  readonly dataDir: string;
  readonly outDir: string;
  readonly id: string;
}

export interface ConvProtectOutcome {
  readonly bundleDir: string;
  readonly bundleBytes: number;
  readonly weightsBytes: number;
  readonly keysBytes: number;
  readonly extractorBytes: number;
  readonly encryptedLayers: string[];
  readonly plaintextLayers: number;
  readonly ctMults: number;
  readonly plainMults: number;
  readonly rotations: number;
  readonly lowerBoundMults: number;
  readonly coeffModulusBits: readonly number[];
  readonly polyModulusDegree: number;
  readonly precisionBitsPlanned: number;
  readonly protectMs: number;
}

export interface ConvStreamSpec {
  readonly phase: 'stream';
  readonly model: string;
  readonly dataDir: string;
  readonly bundleDir: string;
  readonly from: number;
  readonly to: number;
}

export interface ConvStreamOutcome {
  readonly images: number;
  readonly correct: number;
  readonly floatCorrect: number;
  readonly agree: number;
  /** Encrypt + evaluate + serialize per image, ms (the device's encrypted part; no extractor, no decryption). */
  readonly heMs: number[];
  readonly extractMs: number[];
  /** Smallest log2(max|float score| / max|decrypted − float|) over the images. */
  readonly precisionBits: number;
  readonly wasmHeapMB: number;
}

const mib = (bytes: number) => round(bytes / 2 ** 20, 1);

/** The layers with weights (Conv, Gemm, MatMul) an extractor keeps in plaintext. */
function weightedLayers(extractor: Uint8Array): number {
  return decodeModel(extractor, 'the extractor').graph!.node!.filter((n) => ['Conv', 'Gemm', 'MatMul'].includes(n.opType ?? '')).length;
}

async function protect(spec: ConvProtectSpec): Promise<ConvProtectOutcome> {
  const bytes = new Uint8Array(readFileSync(spec.model));
  const model = importOnnx(bytes, { split: spec.split, source: spec.model });
  const input = model.input.shape!.map(Number);
  const ws = await openWorkspace(spec.dataDir);
  try {
    const t0 = performance.now();
    const report = await protectSplitModel(
      ws,
      await nodeSeal(),
      {
        head: model.head,
        extractor: model.extractor,
        extractorInput: { name: model.input.name, shape: [1, ...input.slice(1)] },
        extractorOutput: { name: model.features.name, shape: [1, ...model.features.shape!.slice(1).map(Number)] },
        preprocessing: MNIST_SPEC,
      },
      { modelId: spec.id, security: spec.security, input: spec.input, outDir: spec.outDir },
    );
    const protectMs = performance.now() - t0;
    const { he: bundleHe } = report.manifest;
    if (bundleHe.scheme !== 'ckks') throw new Error('the convolution benchmark protects with CKKS');
    const he = HeContext.create(await nodeSeal(), bundleHe.params);
    const plan = planClassifier(he, model.head, bundleHe.mode);
    he.dispose();
    return {
      bundleDir: report.bundleDir,
      bundleBytes: report.metrics.bundleBytes,
      weightsBytes: report.metrics.weightsBytes,
      keysBytes: report.metrics.keysBytes,
      extractorBytes: model.extractor?.length ?? 0,
      encryptedLayers: layerNames(plan.layers),
      plaintextLayers: model.extractor === null ? 0 : weightedLayers(model.extractor),
      ctMults: plan.counts.ctMults,
      plainMults: plan.counts.plainMults,
      rotations: plan.counts.rotations,
      lowerBoundMults: plan.lowerBoundMults,
      coeffModulusBits: plan.params.coeffModulusBits,
      polyModulusDegree: plan.params.polyModulusDegree,
      precisionBitsPlanned: report.ckks?.precisionBits ?? 0,
      protectMs: round(protectMs),
    };
  } finally {
    await ws.close();
  }
}

async function stream(spec: ConvStreamSpec): Promise<ConvStreamOutcome> {
  const { onnxSession, runOnnx } = await import('./paper-onnx');
  const { images, labels } = mnistTestSet();
  const runtime = await nodeSeal();
  const ws = await openWorkspace(spec.dataDir);
  const ownerKey = Buffer.from(readFileSync(join(spec.dataDir, SIGNING_PUBLIC_FILE), 'utf8').trim(), 'hex');
  const bundle = await loadBundleDir(spec.bundleDir, ownerKey);
  const record = await ws.store.getKeyPair(bundle.manifest.keyId);
  await ws.close();
  if (record === null) throw new Error(`no key pair ${bundle.manifest.keyId}`);
  const secret = unwrapSecret(ws.kek, record.wrappedSecretKey, secretKeyContext(bundle.manifest.keyId));
  const original = await onnxSession(readFileSync(spec.model));
  const onnx = bundle.files['extractor.onnx'];
  const extractor = onnx === undefined ? null : await onnxSession(onnx);
  const classifier = loadBundleClassifier(runtime, bundle);
  const he = HeContext.create(runtime, keySetInfo(record.deviceKeys).params);
  const owner = OwnerKeys.load(he, secret, record.deviceKeys);
  const heMs: number[] = [];
  const extractMs: number[] = [];
  let correct = 0;
  let floatCorrect = 0;
  let agree = 0;
  let precisionBits = Infinity;
  for (let i = spec.from; i < spec.to; i++) {
    const x = preprocessMnist(images, i);
    const t0 = performance.now();
    const features = extractor === null ? x : await runOnnx(extractor, x);
    const t1 = performance.now();
    const { result } = classifier.evaluate(features);
    const t2 = performance.now();
    extractMs.push(round(t1 - t0));
    heMs.push(round(t2 - t1));
    const scores = decryptResult(he, owner, result);
    const float = await runOnnx(original, x);
    const label = argmax(scores);
    const floatLabel = argmax(float);
    if (label === labels[i]) correct++;
    if (floatLabel === labels[i]) floatCorrect++;
    if (label === floatLabel) agree++;
    let err = 0;
    let top = 0;
    float.forEach((v, j) => {
      err = Math.max(err, Math.abs(v - scores[j]!));
      top = Math.max(top, Math.abs(v));
    });
    precisionBits = Math.min(precisionBits, Math.log2(top / err));
    const done = i + 1 - spec.from;
    if (done % 500 === 0) process.stderr.write(`    worker ${spec.from}–${spec.to - 1}: ${done}/${spec.to - spec.from} images\n`);
  }
  const wasmHeapMB = mib(runtime.heapBytes());
  classifier.dispose();
  owner.dispose();
  he.dispose();
  await Promise.all([original.release(), extractor?.release()]);
  return { images: spec.to - spec.from, correct, floatCorrect, agree, heMs, extractMs, precisionBits: round(precisionBits, 1), wasmHeapMB };
}

export type ConvCaseSpec = ConvProtectSpec | ConvStreamSpec;

if (process.argv[1]?.endsWith('conv-case.ts')) {
  const spec = JSON.parse(process.argv[2] ?? '') as ConvCaseSpec;
  const outcome = spec.phase === 'protect' ? await protect(spec) : await stream(spec);
  if (process.argv[3] !== undefined) writeFileSync(process.argv[3], JSON.stringify(outcome));
  else process.stdout.write(`${JSON.stringify(outcome)}\n`);
}
