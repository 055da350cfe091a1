import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { convGeometry, type Layer } from '../he';
import { ModelError } from '../model/errors';
import { type OnnxSplit, splitOnnx, splitPoints } from '../model/onnx';
import type { Shape } from '../model/shapes';
import { parseActivations } from './activations';
import { UsageError } from './errors';

function readModel(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read '${path}': ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message}`);
  }
}

function layerJson(layer: Layer) {
  switch (layer.kind) {
    case 'conv': {
      const { outHeight, outWidth } = convGeometry(layer);
      const [kernel, stride, pads] = [[...layer.kernel], [...layer.stride], [...layer.pads]];
      return { op: 'conv', in: [layer.inChannels, layer.inHeight, layer.inWidth], out: [layer.outChannels, outHeight, outWidth], kernel, stride, pads };
    }
    case 'dense':
      return { op: 'dense', in: layer.inputs, out: layer.outputs };
    case 'add':
      return { op: 'add', from: layer.from };
    default:
      return { op: 'poly', coeffs: [...layer.coeffs] };
  }
}

function layerText(layer: Layer): string {
  switch (layer.kind) {
    case 'conv': {
      const { outHeight, outWidth } = convGeometry(layer);
      return (
        `conv  ${layer.inChannels}×${layer.inHeight}×${layer.inWidth} → ${layer.outChannels}×${outHeight}×${outWidth}, ` +
        `kernel ${layer.kernel.join('×')}, stride ${layer.stride.join('×')}, pads [${layer.pads.join(', ')}]`
      );
    }
    case 'dense':
      return `dense ${layer.inputs} → ${layer.outputs}`;
    case 'add':
      return `add   layer ${layer.from}'s output (residual)`;
    default:
      return `poly  coeffs (x^0 first) ${JSON.stringify(layer.coeffs)}`;
  }
}

const shapeText = (shape: Shape | null) => (shape === null ? 'of unknown shape' : `[${shape.join(', ')}]`);

function summary(path: string, model: OnnxSplit, splits: readonly string[]): string[] {
  const layout = model.layout === 'nhwc' ? ', NHWC: the device transposes it to channels first (C×H×W) before encrypting' : '';
  const lines = [
    path,
    model.extractor === null
      ? `  extractor  none: the head reads the model's input '${model.input.name}' ${shapeText(model.input.shape)}${layout}`
      : `  extractor  input '${model.input.name}' ${shapeText(model.input.shape)} → '${model.features.name}' ${shapeText(model.features.shape)} (the model's tensor '${model.splitTensor}')`,
    ...model.head.map((layer, i) => `  ${i === 0 ? 'head      ' : '          '} ${layerText(layer)}`),
  ];
  if (model.dropped.length > 0) lines.push(`  left out   ${model.dropped.join(', ')}`);
  lines.push(`  splits     ${splits.join(', ')}`);
  return lines;
}

/**
 * `sealed-edge inspect`: splits an ONNX model and prints the extractor's shapes (or that
 * there is none, at `--split input`), the head's layers and every split point the model
 * can be imported at.
 */
export async function inspectCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      split: { type: 'string' },
      activation: { type: 'string', multiple: true, default: [] },
      json: { type: 'boolean', default: false },
    },
  });
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length === 0 ? 'MODEL.onnx is required' : `one model at a time, got ${positionals.length}: ${positionals.join(' ')}`);
  }
  const path = positionals[0]!;
  const approximations = parseActivations(values.activation!);
  const bytes = readModel(path);
  let model: OnnxSplit;
  try {
    model = splitOnnx(bytes, { split: values.split, approximations, source: path });
  } catch (error) {
    // A split the user named that does not work is a problem with the command line.
    if (error instanceof ModelError && error.code === 'E_SPLIT' && values.split !== undefined) throw new UsageError(`--split: ${error.message}`);
    throw error;
  }
  const splits = splitPoints(bytes, { approximations, source: path });
  const lines = values.json
    ? [
        JSON.stringify({
          extractor: model.extractor === null ? null : { input: model.input.shape, output: model.features.shape },
          headInput: { name: model.features.name, shape: model.features.shape, layout: model.layout },
          head: model.head.map(layerJson),
          splits,
        }),
      ]
    : summary(path, model, splits);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
