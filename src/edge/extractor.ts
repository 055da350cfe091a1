/**
 * The plaintext feature extractor in onnxruntime-web (WASM, SIMD). Its WASM files are
 * served by the app itself under `<base>ort/` (see scripts/kiosk-assets.ts), never from a
 * CDN; threads only when the page is cross-origin isolated, else one thread.
 */
import * as ort from 'onnxruntime-web';
import type { BundleManifest } from '../model/bundle';

let configured = false;

export function configureOrt(wasmBase: string): { threads: number } {
  const threads = globalThis.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  if (!configured) {
    ort.env.wasm.wasmPaths = wasmBase;
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.simd = true;
    ort.env.wasm.proxy = false;
    configured = true;
  }
  return { threads: ort.env.wasm.numThreads ?? threads };
}

export class Extractor {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly manifest: BundleManifest,
  ) {}

  static async create(model: Uint8Array, manifest: BundleManifest): Promise<Extractor> {
    const session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    return new Extractor(session, manifest);
  }

  /** One preprocessed image (float32, in the input spec's layout) → the features vector the HE head reads. */
  async run(input: Float32Array): Promise<Float32Array> {
    const { input: spec, output } = this.manifest.extractor;
    const tensor = new ort.Tensor('float32', input, [...spec.shape]);
    const outputs = await this.session.run({ [spec.name]: tensor });
    const features = outputs[output.name];
    if (features === undefined) throw new Error(`the extractor has no output '${output.name}'`);
    const data = features.data as Float32Array;
    tensor.dispose();
    return Float32Array.from(data);
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
