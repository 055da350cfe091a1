import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  classifierDepth,
  encryptClassifier,
  HeContext,
  type Layer,
  type Mode,
  OwnerKeys,
  outputCount,
  planClassifier,
  planParameters,
  type Progress,
  type SealRuntime,
  type SecurityBits,
} from '../he';
import { secretKeyContext } from '../backend/decrypt';
import { BUNDLE_FORMAT, type BundleManifest, isModelId, type Preprocessing } from '../model/bundle';
import { sha256Hex, writeBundle } from './bundle';
import { wrapSecret } from './kek';
import { signingKey, type Workspace } from './workspace';

/** A model split for protection: the plaintext extractor and the head to encrypt. */
export interface SplitModel {
  readonly head: Layer[];
  /** The extractor as ONNX bytes; its output is the head's input. */
  readonly extractor: Uint8Array;
  readonly extractorInput: { name: string; shape: number[] };
  readonly extractorOutput: { name: string; shape: number[] };
  readonly preprocessing: Preprocessing;
}

export interface ProtectOptions {
  readonly modelId: string;
  readonly security: SecurityBits;
  readonly input: Mode['input'];
  /** Root the bundles are published under: `<outDir>/<modelId>/v<version>/`. */
  readonly outDir: string;
  readonly precisionBits?: number;
  readonly onProgress?: Progress;
}

/** The paper's Table 1 figures for one protection run. */
export interface ProtectMetrics {
  keygenMs: number;
  encryptMs: number;
  bundleBytes: number;
  weightsBytes: number;
  keysBytes: number;
  peakRssMB: number;
  wasmHeapMB: number;
}

export interface ProtectReport {
  readonly modelId: string;
  readonly version: number;
  readonly keyId: string;
  readonly bundleDir: string;
  readonly manifest: BundleManifest;
  readonly metrics: ProtectMetrics;
}

/** Where a model's current version is announced: `<outDir>/<modelId>/latest.json`. */
export function latestPointer(outDir: string, modelId: string): string {
  return join(outDir, modelId, 'latest.json');
}

/**
 * The Key Generator, Protection Agent and Deployment Agent in one step: plans parameters
 * for the head, generates a key pair, encrypts the head's weights, publishes the signed
 * bundle as a new version and records version and (wrapped) key pair in the database.
 */
export async function protectSplitModel(ws: Workspace, runtime: SealRuntime, model: SplitModel, options: ProtectOptions): Promise<ProtectReport> {
  const { modelId, security } = options;
  if (!isModelId(modelId)) throw new Error(`model id '${modelId}' must be 1–64 characters of a–z, 0–9, ".", "_", "-"`);
  const mode: Mode = { weights: 'encrypted', input: options.input };
  const params = planParameters({ scheme: 'ckks', security, depth: classifierDepth(model.head), precisionBits: options.precisionBits ?? 25 });
  const he = HeContext.create(runtime, params);
  try {
    const plan = planClassifier(he, model.head, mode);
    let t = performance.now();
    const owner = OwnerKeys.generate(he, plan.rotationSteps);
    const keygenMs = performance.now() - t;
    try {
      t = performance.now();
      const weights = await encryptClassifier(he, owner, model.head, mode, options.onProgress);
      const encryptMs = performance.now() - t;
      const version = ((await ws.store.latestModelVersion(modelId))?.version ?? 0) + 1;
      const signer = await signingKey(ws);
      const bundleDir = join(options.outDir, modelId, `v${version}`);
      const { manifest, manifestBytes, totalBytes } = writeBundle(
        bundleDir,
        {
          format: BUNDLE_FORMAT,
          modelId,
          version,
          keyId: owner.keyId,
          createdAt: new Date().toISOString(),
          he: { params, mode, layers: plan.layers, rotationSteps: plan.rotationSteps, depth: plan.depth },
          extractor: { input: model.extractorInput, output: model.extractorOutput, preprocessing: model.preprocessing },
          classes: outputCount(model.head),
        },
        { 'extractor.onnx': model.extractor, 'weights.bin': weights, 'keys.bin': owner.deviceKeyBytes() },
        signer.privateKey,
      );
      const metrics: ProtectMetrics = {
        keygenMs: Math.round(keygenMs),
        encryptMs: Math.round(encryptMs),
        bundleBytes: totalBytes,
        weightsBytes: weights.length,
        keysBytes: owner.deviceKeyBytes().length,
        peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
        wasmHeapMB: Math.round(runtime.heapBytes() / 2 ** 20),
      };
      const recorded = await ws.store.addModelVersion(
        {
          modelId,
          keyId: owner.keyId,
          bundleDir,
          manifestSha256: sha256Hex(manifestBytes),
          outputs: manifest.classes,
          protectMetrics: { ...metrics },
        },
        { keyId: owner.keyId, wrappedSecretKey: wrapSecret(ws.kek, owner.secretKeyBytes(), secretKeyContext(owner.keyId)), deviceKeys: owner.deviceKeyBytes() },
      );
      if (recorded.version !== version) throw new Error(`model ${modelId} was protected concurrently: version ${recorded.version}, bundle v${version}`);
      mkdirSync(join(options.outDir, modelId), { recursive: true });
      writeFileSync(latestPointer(options.outDir, modelId), `${JSON.stringify({ modelId, version, path: `v${version}/` })}\n`);
      await ws.store.audit('owner', 'model.protected', { modelId, version, keyId: owner.keyId, security, input: options.input });
      return { modelId, version, keyId: owner.keyId, bundleDir, manifest, metrics };
    } finally {
      owner.dispose();
    }
  } finally {
    he.dispose();
  }
}
