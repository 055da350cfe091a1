/**
 * The device's HE service: one SEAL context, the device key set and the encrypted
 * classifier, loaded once, then one evaluation per frame. Pure TypeScript over `src/he`
 * (no DOM): the worker entry (`workers/he.worker.ts`) exposes it through comlink, and
 * Node tests run it in-process. Only ArrayBuffers and typed arrays cross its API.
 */
import { checkParameters, DeviceKeys, EncryptedClassifier, HeContext, type HeParameters, type SealRuntime } from '../he';

export interface HeLoadInfo {
  keyId: string;
  /** ms spent creating the context, loading keys and loading the weights. */
  contextMs: number;
  keysMs: number;
  weightsMs: number;
  heapBytes: number;
}

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
  load(params: HeParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo>;
  evaluate(features: Float32Array): Promise<HeFrameResult>;
  /** Share `index` of `count` of the first layer (see EncryptedClassifier.evaluateShare). */
  evaluateShare(features: Float32Array, index: number, count: number): Promise<HeShareResult>;
  /** Combines every share's partial sum and completes the frame. */
  finish(partials: Uint8Array[]): Promise<HeFrameResult>;
  heapBytes(): Promise<number>;
  dispose(): Promise<void>;
}

export class HeService implements HeServiceApi {
  private loaded?: { he: HeContext; keys: DeviceKeys; classifier: EncryptedClassifier };

  /** `runtime` is created lazily (once) so a worker can be constructed before SEAL is ready. */
  constructor(private readonly runtime: () => Promise<SealRuntime>) {}

  async load(params: HeParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo> {
    await this.dispose();
    const runtime = await this.runtime();
    const t0 = performance.now();
    const he = HeContext.create(runtime, checkParameters(params));
    const t1 = performance.now();
    let deviceKeys: DeviceKeys | undefined;
    try {
      deviceKeys = DeviceKeys.load(he, new Uint8Array(keys));
      const t2 = performance.now();
      const classifier = EncryptedClassifier.load(he, deviceKeys, new Uint8Array(weights));
      const t3 = performance.now();
      this.loaded = { he, keys: deviceKeys, classifier };
      return { keyId: deviceKeys.keyId, contextMs: t1 - t0, keysMs: t2 - t1, weightsMs: t3 - t2, heapBytes: runtime.heapBytes() };
    } catch (error) {
      deviceKeys?.dispose();
      he.dispose();
      throw error;
    }
  }

  private classifier(): EncryptedClassifier {
    if (this.loaded === undefined) throw new Error('the HE service has no classifier loaded');
    return this.loaded.classifier;
  }

  async evaluate(features: Float32Array): Promise<HeFrameResult> {
    const { result, timings } = this.classifier().evaluate(features);
    return { result, ...timings, heapBytes: this.loaded!.he.runtime.heapBytes() };
  }

  async evaluateShare(features: Float32Array, index: number, count: number): Promise<HeShareResult> {
    return this.classifier().evaluateShare(features, index, count);
  }

  async finish(partials: Uint8Array[]): Promise<HeFrameResult> {
    const { result, timings } = this.classifier().finish(partials);
    return { result, ...timings, heapBytes: this.loaded!.he.runtime.heapBytes() };
  }

  async heapBytes(): Promise<number> {
    return (await this.runtime()).heapBytes();
  }

  async dispose(): Promise<void> {
    if (this.loaded === undefined) return;
    this.loaded.classifier.dispose();
    this.loaded.keys.dispose();
    this.loaded.he.dispose();
    this.loaded = undefined;
  }
}
