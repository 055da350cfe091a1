import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BgvContext,
  BgvOwnerKeys,
  classifierDepth,
  encryptBgvClassifier,
  encryptClassifier,
  HeContext,
  type Layer,
  type Mode,
  OwnerKeys,
  HeError,
  type HeParameters,
  integerBitsFor,
  isComplex,
  layerParts,
  layerNames,
  NOISE_MARGIN_BITS,
  outputCount,
  planBgv,
  planClassifier,
  planParameters,
  type Progress,
  type Scheme,
  type SealRuntime,
  type SecurityBits,
  verifyBgvClassifier,
  calibrateRanges,
  type CalibratedRanges,
  layoutSlots,
} from '../he';
import { BUNDLE_FORMAT, type BundleHe, type BundleManifest, isModelId, type Preprocessing } from '../model/bundle';
import { sha256Hex, writeBundle } from './bundle';
import { type CalibrationImages, defaultCalibrationImages, extractorFeatures } from './calibration';
import { secretKeyContext, wrapSecret } from '../node/kek';
import { signingKey, type Workspace } from './workspace';

/** A model split for protection: the plaintext extractor and the head to encrypt. */
export interface SplitModel {
  readonly head: Layer[];
  /**
   * The extractor as ONNX bytes; its output is the head's input. null when the head starts
   * at the model's input (`--split input`): the preprocessed image is the head's input.
   */
  readonly extractor: Uint8Array | null;
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
  /** The scheme: 'ckks' (default) or 'bgv', the paper's (integer fixed point, CRT, noise budget). */
  readonly scheme?: Scheme;
  /**
   * CKKS: the bits of precision the parameters are planned for. Default: up to 25, less
   * (down to 12) where that keeps the smallest ring degree the circuit fits.
   */
  readonly precisionBits?: number;
  /**
   * The inputs of the encrypted part the ranges (CKKS) or the fixed-point encoding (BGV)
   * are calibrated on (a few hundred real inputs). Default: `calibrationImages` through the
   * extractor.
   */
  readonly calibration?: readonly ArrayLike<number>[];
  /** The images that calibrate, when `calibration` is not given (default: the first 300 MNIST training images). */
  readonly calibrationImages?: CalibrationImages;
  readonly onProgress?: Progress;
}

/**
 * The paper's Table 1 figures for one protection run, and for BGV the planning steps and
 * the noise budget (every value a number: the database keeps them as they are).
 */
export interface ProtectMetrics {
  keygenMs: number;
  encryptMs: number;
  bundleBytes: number;
  weightsBytes: number;
  keysBytes: number;
  peakRssMB: number;
  wasmHeapMB: number;
  /** Computing the calibration inputs (the extractor on the calibration images) and, for CKKS, their ranges. */
  calibrateMs?: number;
  /** CKKS: the largest |score| on the calibration inputs; a decrypted result far beyond it is suspect. */
  calibratedScoreMax?: number;
  /** BGV: planning the fixed point, the CRT moduli and the chain. */
  planMs?: number;
  /** BGV: the owner's check, one real evaluation decrypted and compared with the integer reference. */
  verifyMs?: number;
  /** BGV: CRT components (plaintext moduli), each a whole evaluation. */
  crtModuli?: number;
  /** BGV: the remaining noise budget the planner predicts, in bits. */
  predictedNoiseBudgetBits?: number;
  /** BGV: the remaining noise budget of the verifying evaluation, in bits. */
  noiseBudgetBits?: number;
}

/** What a CKKS protection measured on real inputs and chose from it. */
export interface CkksProtectDetails {
  readonly calibrationVectors: number;
  readonly calibrationSource: string;
  /** Largest |score| on the calibration inputs. */
  readonly outputMax: number;
  /** Largest |value| in any slot of the result: what the first prime holds. */
  readonly resultMax: number;
  /** Bits above the scale the first prime holds: the range with a ×4 margin and the sign. */
  readonly integerBits: number;
  readonly precisionBits: number;
  /**
   * Each layer of the encrypted part: what it is, its products and rotations, the bound its
   * products are measured against, whether it packs two values per slot (complex packing,
   * chosen by the planner) and how many ciphertexts its output spans.
   */
  readonly layers: readonly { name: string; ctMults: number; plainMults: number; rotations: number; lowerBoundMults: number; complex: boolean; ciphertexts: number }[];
}

/** What a BGV protection chose, beside its metrics. */
export interface BgvProtectDetails {
  /** The CRT plaintext moduli t_i, in decimal (primes ≡ 1 mod 2N). */
  readonly plainModuli: readonly string[];
  readonly plainModulusBits: readonly number[];
  readonly coeffModulusBits: readonly number[];
  /** How many feature vectors calibrated, and where they came from. */
  readonly calibrationVectors: number;
  readonly calibrationSource: string;
  /** The calibrated feature range the device clamps to. */
  readonly inputRange: readonly [number, number];
  /** log2 of the largest |integer| any layer can reach. */
  readonly boundBits: number;
  /** Largest error of the quantized scores on the calibration data, relative to the largest |score|. */
  readonly quantizationError: number;
}

export interface ProtectReport {
  readonly modelId: string;
  readonly version: number;
  readonly keyId: string;
  readonly scheme: Scheme;
  readonly bundleDir: string;
  readonly manifest: BundleManifest;
  readonly metrics: ProtectMetrics;
  /** BGV only. */
  readonly bgv?: BgvProtectDetails;
  /** CKKS only. */
  readonly ckks?: CkksProtectDetails;
}

/** A head encrypted under a fresh key pair: what the bundle and the database need. */
interface EncryptedHead {
  readonly he: BundleHe;
  readonly keyId: string;
  readonly weights: Uint8Array;
  readonly deviceKeys: Uint8Array;
  /** The secret key container, to be wrapped before it is stored. */
  readonly secretKey: Uint8Array;
  readonly metrics: Pick<ProtectMetrics, 'keygenMs' | 'encryptMs' | 'calibrateMs' | 'calibratedScoreMax' | 'planMs' | 'verifyMs' | 'crtModuli' | 'predictedNoiseBudgetBits' | 'noiseBudgetBits'>;
  readonly bgv?: BgvProtectDetails;
  readonly ckks?: CkksProtectDetails;
}

/** The inputs of the encrypted part to calibrate on: given ones, or calibration images through the extractor. */
async function calibrationInputs(model: SplitModel, options: ProtectOptions): Promise<{ inputs: readonly ArrayLike<number>[]; source: string }> {
  if (options.calibration !== undefined) return { inputs: options.calibration, source: 'feature vectors given' };
  const spec = model.preprocessing;
  if (options.calibrationImages === undefined && (spec.channels !== 1 || spec.height !== 28 || spec.width !== 28)) {
    throw new Error(`the default calibration images (MNIST's training set) are 1×28×28 grey digits, the model takes ${spec.channels}×${spec.height}×${spec.width}: give calibrationImages like its inputs`);
  }
  const images = options.calibrationImages ?? defaultCalibrationImages();
  const inputs = await extractorFeatures(model, images);
  const through = model.extractor === null ? 'preprocessed (the model has no extractor)' : 'through the extractor';
  return { inputs, source: `the first ${inputs.length} images of ${images.source}, ${through}` };
}

/** CKKS precision when none is asked for: the most up to this, down to the floor, in the smallest ring. */
const CKKS_PRECISION_BITS = 25;
const CKKS_MIN_PRECISION_BITS = 12;

/**
 * CKKS parameters for the head's depth, with a first prime sized from the ranges the head
 * reaches on real inputs (CKKS wraps around silently past it). The ranges depend on the
 * packing and so on the ring degree: measured again until the ring settles (it only grows,
 * so at most once per ring degree).
 */
function ckksParameters(model: SplitModel, options: ProtectOptions, mode: Mode, inputs: readonly ArrayLike<number>[]): { params: HeParameters; ranges: CalibratedRanges; integerBits: number } {
  const request = {
    scheme: 'ckks' as const,
    security: options.security,
    depth: classifierDepth(model.head),
    precisionBits: options.precisionBits ?? CKKS_PRECISION_BITS,
    ...(options.precisionBits === undefined ? { minPrecisionBits: CKKS_MIN_PRECISION_BITS } : {}),
  };
  // The smallest ring the layout plans at (activations may span ciphertexts), or a larger one for depth and precision.
  let params = planParameters({ ...request, minSlots: layoutSlots(model.head, mode) });
  for (;;) {
    const ranges = calibrateRanges(model.head, params.polyModulusDegree / 2, inputs);
    const integerBits = integerBitsFor(ranges.resultMax);
    let next: HeParameters;
    try {
      // Never a smaller ring than the one just measured: the ring only grows, so this settles.
      next = planParameters({ ...request, integerBits, minSlots: params.polyModulusDegree / 2 });
    } catch (error) {
      throw new HeError(
        'E_RANGE',
        `the encrypted part reaches |values| up to ${ranges.resultMax.toPrecision(3)} on the calibration inputs (scores up to ${ranges.outputMax.toPrecision(3)}): ` +
          `${integerBits} integer bits above the scale do not fit (${(error as Error).message}); rescale the model's last layer or ask for less precision`,
      );
    }
    if (next.polyModulusDegree === params.polyModulusDegree && next.coeffModulusBits[0]! - next.scaleBits >= integerBits) return { params: next, ranges, integerBits };
    params = next;
  }
}

async function encryptCkks(runtime: SealRuntime, model: SplitModel, options: ProtectOptions, mode: Mode): Promise<EncryptedHead> {
  let t = performance.now();
  const { inputs, source } = await calibrationInputs(model, options);
  const { params, ranges, integerBits } = ckksParameters(model, options, mode, inputs);
  const calibrateMs = performance.now() - t;
  const he = HeContext.create(runtime, params);
  try {
    const plan = planClassifier(he, model.head, mode);
    const parts = layerParts(plan.plans);
    t = performance.now();
    const owner = OwnerKeys.generate(he, plan.rotationSteps);
    const keygenMs = performance.now() - t;
    try {
      t = performance.now();
      const weights = await encryptClassifier(he, owner, model.head, mode, options.onProgress);
      const encryptMs = performance.now() - t;
      return {
        he: { scheme: 'ckks', params, mode, layers: plan.layers, rotationSteps: plan.rotationSteps, depth: plan.depth },
        keyId: owner.keyId,
        weights,
        deviceKeys: owner.deviceKeyBytes(),
        secretKey: owner.secretKeyBytes(),
        metrics: { keygenMs: Math.round(keygenMs), encryptMs: Math.round(encryptMs), calibrateMs: Math.round(calibrateMs), calibratedScoreMax: ranges.outputMax },
        ckks: {
          calibrationVectors: ranges.inputs,
          calibrationSource: source,
          outputMax: ranges.outputMax,
          resultMax: ranges.resultMax,
          integerBits,
          precisionBits: params.scaleBits - NOISE_MARGIN_BITS,
          layers: layerNames(plan.layers).map((name, i) => ({
            name,
            ctMults: plan.layerCounts[i]!.ctMults,
            plainMults: plan.layerCounts[i]!.plainMults,
            rotations: plan.layerCounts[i]!.rotations,
            lowerBoundMults: plan.layerLowerBounds[i]!,
            complex: isComplex(plan.plans[i]!),
            ciphertexts: parts[i]!,
          })),
        },
      };
    } finally {
      owner.dispose();
    }
  } finally {
    he.dispose();
  }
}

/**
 * BGV: calibrates on real features, plans fixed point, CRT moduli and chain (refusing an
 * overflowing configuration before anything is encrypted), generates one key pair per CRT
 * component, encrypts, then checks one real evaluation exactly against the integer
 * reference and measures the noise budget it leaves.
 */
async function encryptBgv(runtime: SealRuntime, model: SplitModel, options: ProtectOptions, mode: Mode): Promise<EncryptedHead> {
  let t = performance.now();
  const { inputs: calibration, source: calibrationSource } = await calibrationInputs(model, options);
  const calibrateMs = performance.now() - t;
  t = performance.now();
  const plan = planBgv(model.head, { security: options.security, calibration: [...calibration], mode });
  const planMs = performance.now() - t;
  const ctx = BgvContext.create(runtime, plan.params);
  try {
    t = performance.now();
    const owner = BgvOwnerKeys.generate(ctx, plan.classifier);
    const keygenMs = performance.now() - t;
    try {
      t = performance.now();
      const weights = await encryptBgvClassifier(ctx, owner, model.head, plan.classifier, options.onProgress);
      const encryptMs = performance.now() - t;
      t = performance.now();
      const { noiseBudgetBits } = verifyBgvClassifier(ctx, owner, weights, model.head, calibration.slice(0, 1));
      const verifyMs = performance.now() - t;
      const { classifier } = plan;
      return {
        he: { scheme: 'bgv', params: plan.params, mode: classifier.mode, layers: classifier.layers, rotationSteps: classifier.rotationSteps, depth: classifier.depth },
        keyId: owner.keyId,
        weights,
        deviceKeys: owner.deviceKeyBytes(),
        secretKey: owner.secretKeyBytes(),
        metrics: {
          keygenMs: Math.round(keygenMs),
          encryptMs: Math.round(encryptMs),
          calibrateMs: Math.round(calibrateMs),
          planMs: Math.round(planMs),
          verifyMs: Math.round(verifyMs),
          crtModuli: plan.params.plainModulusBits.length,
          predictedNoiseBudgetBits: classifier.predictedBudgetBits,
          noiseBudgetBits,
        },
        bgv: {
          plainModuli: ctx.plainModuli.map(String),
          plainModulusBits: plan.params.plainModulusBits,
          coeffModulusBits: plan.params.coeffModulusBits,
          calibrationVectors: calibration.length,
          calibrationSource,
          inputRange: plan.fixedPoint.inputRange,
          boundBits: plan.boundBits,
          quantizationError: plan.quantizationError,
        },
      };
    } finally {
      owner.dispose();
    }
  } finally {
    ctx.dispose();
  }
}

/** Where a model's current version is announced: `<outDir>/<modelId>/latest.json`. */
export function latestPointer(outDir: string, modelId: string): string {
  return join(outDir, modelId, 'latest.json');
}

/**
 * The Key Generator, Protection Agent and Deployment Agent in one step: plans parameters
 * for the head (CKKS, or BGV calibrated on real features), generates a key pair, encrypts
 * the head's weights, publishes the signed bundle as a new version and records version and
 * (wrapped) key pair in the database.
 */
export async function protectSplitModel(ws: Workspace, runtime: SealRuntime, model: SplitModel, options: ProtectOptions): Promise<ProtectReport> {
  const { modelId, security } = options;
  const scheme = options.scheme ?? 'ckks';
  if (!isModelId(modelId)) throw new Error(`model id '${modelId}' must be 1–64 characters of a–z, 0–9, ".", "_", "-"`);
  if (scheme !== 'ckks' && scheme !== 'bgv') throw new Error(`scheme must be 'ckks' or 'bgv', got '${String(scheme)}'`);
  if (scheme === 'bgv' && options.precisionBits !== undefined) throw new Error('precisionBits is for CKKS: BGV plans its fixed point from calibration data');
  if (options.calibration !== undefined && options.calibrationImages !== undefined) throw new Error('give calibration feature vectors or calibration images, not both');
  const mode: Mode = { weights: 'encrypted', input: options.input };
  const head = scheme === 'bgv' ? await encryptBgv(runtime, model, options, mode) : await encryptCkks(runtime, model, options, mode);
  const version = ((await ws.store.latestModelVersion(modelId))?.version ?? 0) + 1;
  const signer = await signingKey(ws);
  const bundleDir = join(options.outDir, modelId, `v${version}`);
  const { manifest, manifestBytes, totalBytes } = writeBundle(
    bundleDir,
    {
      format: BUNDLE_FORMAT,
      modelId,
      version,
      keyId: head.keyId,
      createdAt: new Date().toISOString(),
      he: head.he,
      extractor: { input: model.extractorInput, output: model.extractorOutput, preprocessing: model.preprocessing },
      classes: outputCount(model.head),
    },
    { ...(model.extractor === null ? {} : { 'extractor.onnx': model.extractor }), 'weights.bin': head.weights, 'keys.bin': head.deviceKeys },
    signer.privateKey,
  );
  const metrics: ProtectMetrics = {
    ...head.metrics,
    bundleBytes: totalBytes,
    weightsBytes: head.weights.length,
    keysBytes: head.deviceKeys.length,
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    wasmHeapMB: Math.round(runtime.heapBytes() / 2 ** 20),
  };
  const recorded = await ws.store.addModelVersion(
    {
      modelId,
      keyId: head.keyId,
      bundleDir,
      manifestSha256: sha256Hex(manifestBytes),
      outputs: manifest.classes,
      protectMetrics: { ...metrics },
    },
    { keyId: head.keyId, wrappedSecretKey: wrapSecret(ws.kek, head.secretKey, secretKeyContext(head.keyId)), deviceKeys: head.deviceKeys },
  );
  if (recorded.version !== version) throw new Error(`model ${modelId} was protected concurrently: version ${recorded.version}, bundle v${version}`);
  mkdirSync(join(options.outDir, modelId), { recursive: true });
  writeFileSync(latestPointer(options.outDir, modelId), `${JSON.stringify({ modelId, version, path: `v${version}/` })}\n`);
  await ws.store.audit('owner', 'model.protected', { modelId, version, keyId: head.keyId, scheme, security, input: options.input });
  return {
    modelId,
    version,
    keyId: head.keyId,
    scheme,
    bundleDir,
    manifest,
    metrics,
    ...(head.bgv === undefined ? {} : { bgv: head.bgv }),
    ...(head.ckks === undefined ? {} : { ckks: head.ckks }),
  };
}
