/**
 * The device's HE service: one SEAL context, the device key set and the encrypted
 * classifier, loaded once, then one evaluation per frame. Pure TypeScript over `src/he`
 * (no DOM): the worker entry (`workers/he.worker.ts`) exposes it through comlink, and
 * Node tests run it in-process. Only ArrayBuffers and typed arrays cross its API.
 */
import {
  type BgvParameters,
  BgvContext,
  BgvDeviceKeys,
  checkBgvParameters,
  checkParameters,
  DeviceKeys,
  EncryptedBgvClassifier,
  EncryptedClassifier,
  type Evaluation,
  HeContext,
  type HeParameters,
  isBgvParameters,
  mergeBgvResults,
  openClassifier,
  type SealRuntime,
  type ShareEvaluation,
  zeroCounts,
} from '../he';

/** A bundle's parameters: CKKS (the default) or BGV. */
export type KioskParameters = HeParameters | BgvParameters;

export interface HeLoadInfo {
  keyId: string;
  /** ms spent creating the context, loading keys and loading the weights. */
  contextMs: number;
  keysMs: number;
  weightsMs: number;
  heapBytes: number;
  /** The encrypted weights stay serialized and are read for each product: they would not fit the worker's heap budget. */
  streamed: boolean;
}

/** A kiosk worker's WASM memory: keys, resident weights and an evaluation's temporaries stay within it. */
export const WORKER_HEAP_BYTES = 2 ** 30;

/** The share of the budget left to an evaluation's temporaries (rotations, products, a streamed weight). */
const EVALUATION_SHARE = 1 / 4;

export interface HeFrameResult {
  /** The result container (still-encrypted scores), transferable. */
  result: Uint8Array;
  encryptMs: number;
  evaluateMs: number;
  serializeMs: number;
  heapBytes: number;
}

/** One worker's share of a frame evaluated by several workers. */
export interface HeShareResult {
  /** The partial container (still encrypted), transferable. */
  partial: Uint8Array;
  encryptMs: number;
  evaluateMs: number;
}

/** What a worker exposes (the comlink surface). */
export interface HeServiceApi {
  load(params: KioskParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo>;
  evaluate(features: Float32Array): Promise<HeFrameResult>;
  /** Share `index` of `count` of the first layer (see EncryptedClassifier.evaluateShare). */
  evaluateShare(features: Float32Array, index: number, count: number): Promise<HeShareResult>;
  /** Combines every share's partial sum and completes the frame. */
  finish(partials: Uint8Array[]): Promise<HeFrameResult>;
  heapBytes(): Promise<number>;
  dispose(): Promise<void>;
}

/** A loaded classifier of either scheme, as the service uses it. */
interface Loaded {
  readonly keyId: string;
  evaluate(features: Float32Array): Evaluation;
  share(features: Float32Array, index: number, count: number): ShareEvaluation;
  finish(partials: Uint8Array[]): Evaluation;
  dispose(): void;
}

type Timed = { loaded: Loaded; contextMs: number; keysMs: number; streamed: boolean };

/**
 * CKKS: shares split the first layer's giant-step groups (EncryptedClassifier.evaluateShare).
 * Weights that would take the heap past `heapBudget` (with the keys already loaded and room
 * for an evaluation) stay serialized (EncryptedClassifier's `streamed`).
 */
function loadCkks(runtime: SealRuntime, params: HeParameters, keyBytes: Uint8Array, weights: Uint8Array, heapBudget: number): Timed {
  const { keys, classifier, contextMs, keysMs, dispose } = openClassifier(
    () => HeContext.create(runtime, checkParameters(params)),
    (he) => DeviceKeys.load(he, keyBytes),
    (he, keys) => EncryptedClassifier.load(he, keys, weights, { residentWeightBytes: Math.max(0, heapBudget * (1 - EVALUATION_SHARE) - runtime.heapBytes()) }),
  );
  return {
    contextMs,
    keysMs,
    streamed: classifier.streamed,
    loaded: {
      keyId: keys.keyId,
      evaluate: (features) => classifier.evaluate(features),
      share: (features, index, count) => classifier.evaluateShare(features, index, count),
      finish: (partials) => classifier.finish(partials),
      dispose,
    },
  };
}

/**
 * BGV: each CRT component is a whole evaluation, so shares split the components (share i
 * takes components i, i + count, …) and finishing only joins the partial results.
 */
function loadBgv(runtime: SealRuntime, params: BgvParameters, keyBytes: Uint8Array, weights: Uint8Array): Timed {
  const { context, keys, classifier, contextMs, keysMs, dispose } = openClassifier(
    () => BgvContext.create(runtime, checkBgvParameters(params)),
    (ctx) => BgvDeviceKeys.load(ctx, keyBytes),
    (ctx, keys) => EncryptedBgvClassifier.load(ctx, keys, weights),
  );
  const components = context.components.map((c) => c.index);
  return {
    contextMs,
    keysMs,
    streamed: false,
    loaded: {
      keyId: keys.keyId,
      evaluate: (features) => classifier.evaluate(features),
      share(features, index, count) {
        if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) {
          throw new Error(`share ${index} of ${count} does not exist`);
        }
        const { result, timings } = classifier.evaluate(
          features,
          components.filter((c) => c % count === index),
        );
        return { partial: result, encryptMs: timings.encryptMs, evaluateMs: timings.evaluateMs + timings.serializeMs };
      },
      finish(partials) {
        const t0 = performance.now();
        const result = mergeBgvResults(partials, true);
        return { result, timings: { encryptMs: 0, evaluateMs: 0, serializeMs: performance.now() - t0 }, counts: zeroCounts() };
      },
      dispose,
    },
  };
}

export class HeService implements HeServiceApi {
  private loaded?: Loaded;

  /**
   * `runtime` is created lazily (once) so a worker can be constructed before SEAL is ready.
   * `heapBudget`: the WASM memory the worker's classifier may take (WORKER_HEAP_BYTES).
   */
  constructor(
    private readonly runtime: () => Promise<SealRuntime>,
    private readonly heapBudget = WORKER_HEAP_BYTES,
  ) {
    if (!(Number.isFinite(heapBudget) && heapBudget > 0)) throw new Error(`the worker's heap budget must be a positive number of bytes, got ${String(heapBudget)}`);
  }

  async load(params: KioskParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo> {
    await this.dispose();
    const runtime = await this.runtime();
    const t0 = performance.now();
    const { loaded, contextMs, keysMs, streamed } = isBgvParameters(params)
      ? loadBgv(runtime, params as BgvParameters, new Uint8Array(keys), new Uint8Array(weights))
      : loadCkks(runtime, params as HeParameters, new Uint8Array(keys), new Uint8Array(weights), this.heapBudget);
    this.loaded = loaded;
    return { keyId: loaded.keyId, contextMs, keysMs, weightsMs: performance.now() - t0 - contextMs - keysMs, heapBytes: runtime.heapBytes(), streamed };
  }

  private classifier(): Loaded {
    if (this.loaded === undefined) throw new Error('the HE service has no classifier loaded');
    return this.loaded;
  }

  private async frame(evaluation: Evaluation): Promise<HeFrameResult> {
    return { result: evaluation.result, ...evaluation.timings, heapBytes: (await this.runtime()).heapBytes() };
  }

  async evaluate(features: Float32Array): Promise<HeFrameResult> {
    return this.frame(this.classifier().evaluate(features));
  }

  async evaluateShare(features: Float32Array, index: number, count: number): Promise<HeShareResult> {
    return this.classifier().share(features, index, count);
  }

  async finish(partials: Uint8Array[]): Promise<HeFrameResult> {
    return this.frame(this.classifier().finish(partials));
  }

  async heapBytes(): Promise<number> {
    return (await this.runtime()).heapBytes();
  }

  async dispose(): Promise<void> {
    this.loaded?.dispose();
    this.loaded = undefined;
  }
}
