import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Layer } from '../he';
import { ModelError } from '../model/errors';
import { type ImportedModel, importOnnx } from '../model/onnx';
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

const layerJson = (layer: Layer) =>
  layer.kind === 'dense' ? { op: 'dense', in: layer.inputs, out: layer.outputs } : { op: 'poly', coeffs: [...layer.coeffs] };

const shapeText = (shape: Shape | null) => (shape === null ? 'of unknown shape' : `[${shape.join(', ')}]`);

function summary(path: string, model: ImportedModel): string[] {
  const lines = [
    path,
    `  extractor  input '${model.input.name}' ${shapeText(model.input.shape)} → '${model.features.name}' ${shapeText(model.features.shape)} (the model's tensor '${model.splitTensor}')`,
    ...model.head.map(
      (layer, i) => `  ${i === 0 ? 'head      ' : '          '} ${layer.kind === 'dense' ? `dense ${layer.inputs} → ${layer.outputs}` : `poly  coeffs (x^0 first) ${JSON.stringify(layer.coeffs)}`}`,
    ),
  ];
  if (model.dropped.length > 0) lines.push(`  left out   ${model.dropped.join(', ')}`);
  return lines;
}

/** `sealed-edge inspect`: splits an ONNX model and prints the extractor's shapes and the head's layers. */
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
  let model: ImportedModel;
  try {
    model = importOnnx(bytes, { split: values.split, approximations, source: path });
  } catch (error) {
    // A split the user named that does not work is a problem with the command line.
    if (error instanceof ModelError && error.code === 'E_SPLIT' && values.split !== undefined) throw new UsageError(`--split: ${error.message}`);
    throw error;
  }
  const lines = values.json
    ? [JSON.stringify({ extractor: { input: model.input.shape, output: model.features.shape }, head: model.head.map(layerJson) })]
    : summary(path, model);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
