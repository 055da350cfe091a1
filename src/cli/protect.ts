import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { describeConv, type Layer } from '../he';
import { isModelId } from '../model/bundle';
import { describeInputSpec, type InputSpec, InputSpecError, inputSpecFromFlags } from '../model/input-spec';
import { splitOnnx } from '../model/onnx';
import { nodeSeal } from '../node/seal';
import { type CalibrationImages, readCalibrationImages } from '../protect/calibration';
import { type ProtectReport, protectSplitModel } from '../protect/protect';
import { openWorkspace } from '../protect/workspace';
import { parseActivations } from './activations';
import { UsageError } from './errors';
import { DEFAULT_DATA_DIR } from './owner';

export const DEFAULT_BUNDLE_ROOT = 'public/models';

/** Whether the default calibration images (MNIST's training set) are images like the model's. */
function isMnistShaped(spec: InputSpec): boolean {
  return spec.channels === 1 && spec.height === 28 && spec.width === 28;
}

function concreteShape(shape: readonly (number | string)[] | null, what: string): number[] {
  if (shape === null) throw new UsageError(`the model's ${what} has no known shape`);
  return shape.map((d, i) => {
    if (typeof d === 'number') return d;
    if (i === 0) return 1; // a symbolic batch dimension: the device sends one image at a time
    throw new UsageError(`the model's ${what} has an unknown dimension ${i} ('${d}')`);
  });
}

/** The input spec's flags (parseArgs options), shared with `start`, which passes them on. */
export const INPUT_SPEC_OPTIONS = {
  channels: { type: 'string' },
  'input-size': { type: 'string' },
  layout: { type: 'string' },
  scale: { type: 'string' },
  mean: { type: 'string' },
  std: { type: 'string' },
  fit: { type: 'string' },
  digitize: { type: 'boolean' },
  'no-digitize': { type: 'boolean' },
} as const;

type SpecValues = { [K in keyof typeof INPUT_SPEC_OPTIONS]?: (typeof INPUT_SPEC_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

/** The flags as given, to pass on to protect (`start`). */
export function inputSpecArgv(values: SpecValues): string[] {
  return Object.keys(INPUT_SPEC_OPTIONS).flatMap((name) => {
    const value = values[name as keyof SpecValues];
    if (value === undefined || value === false) return [];
    return value === true ? [`--${name}`] : [`--${name}`, value];
  });
}

/** The input spec for a model input of `shape` from the flags; contradictions are usage errors. */
export function inputSpecOf(shape: readonly number[], values: SpecValues): InputSpec {
  try {
    return inputSpecFromFlags(shape, {
      channels: values.channels,
      inputSize: values['input-size'],
      layout: values.layout,
      scale: values.scale,
      mean: values.mean,
      std: values.std,
      fit: values.fit,
      digitize: values.digitize,
      noDigitize: values['no-digitize'],
    });
  } catch (error) {
    if (error instanceof InputSpecError) throw new UsageError(error.message);
    throw error;
  }
}

/** `sealed-edge protect MODEL.onnx`: split, encrypt the head, publish a signed bundle version. */
export async function protectCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...INPUT_SPEC_OPTIONS,
      id: { type: 'string' },
      split: { type: 'string' },
      security: { type: 'string', default: '128' },
      scheme: { type: 'string', default: 'ckks' },
      calibration: { type: 'string' },
      input: { type: 'string', default: 'encrypted' },
      out: { type: 'string', default: DEFAULT_BUNDLE_ROOT },
      data: { type: 'string', default: DEFAULT_DATA_DIR },
      store: { type: 'string' },
      activation: { type: 'string', multiple: true, default: [] },
      json: { type: 'boolean', default: false },
    },
  });
  if (positionals.length !== 1) throw new UsageError('protect needs exactly one MODEL.onnx');
  const file = positionals[0]!;
  const security = Number(values.security);
  if (security !== 128 && security !== 192 && security !== 256) throw new UsageError(`--security must be 128, 192 or 256, got '${values.security}'`);
  if (values.input !== 'encrypted' && values.input !== 'plain') throw new UsageError(`--input must be encrypted or plain, got '${values.input}'`);
  const scheme = values.scheme;
  if (scheme !== 'ckks' && scheme !== 'bgv') throw new UsageError(`--scheme must be ckks or bgv, got '${scheme}'`);
  const modelId = values.id ?? basename(file).replace(/\.onnx$/i, '').toLowerCase().replace(/[^a-z0-9._-]/g, '-');
  if (!isModelId(modelId)) throw new UsageError(`--id must be 1–64 characters of a–z, 0–9, ".", "_", "-", got '${modelId}'`);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(file));
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as Error).message}`);
  }
  if (values.calibration !== undefined && !existsSync(values.calibration)) throw new UsageError(`cannot read the calibration images ${values.calibration}: no such file or folder`);
  const approximations = parseActivations(values.activation!);
  const model = splitOnnx(bytes, { split: values.split, source: file, approximations });
  const input = concreteShape(model.input.shape, 'input');
  const spec = inputSpecOf(input, values);
  let calibrationImages: CalibrationImages | undefined;
  if (values.calibration !== undefined) {
    try {
      calibrationImages = readCalibrationImages(values.calibration);
    } catch (error) {
      if (typeof (error as { code?: unknown }).code === 'string' && (error as { code: string }).code.startsWith('E_')) throw error;
      throw new UsageError(`cannot read the calibration images ${values.calibration}: ${(error as Error).message}`);
    }
  } else if (!isMnistShaped(spec)) {
    throw new UsageError(
      `the default calibration images (MNIST's training set) are 1×28×28 grey digits; the model takes ${describeInputSpec(spec)}: ` +
        'give --calibration with a few hundred images like its inputs (an IDX file of uint8 [N, H, W] or [N, H, W, C] images, or a folder of PNG/JPEG files)',
    );
  }
  const ws = await openWorkspace(values.data!, process.env, values.store);
  try {
    const started = performance.now();
    let last = 0;
    const report = await protectSplitModel(
      ws,
      await nodeSeal(),
      {
        head: model.head,
        extractor: model.extractor,
        extractorInput: { name: model.input.name, shape: input },
        extractorOutput: { name: model.features.name, shape: concreteShape(model.features.shape, 'features') },
        preprocessing: spec,
      },
      {
        modelId,
        security,
        input: values.input,
        scheme,
        calibrationImages,
        outDir: values.out!,
        onProgress: values.json
          ? undefined
          : (done, total) => {
              const percent = Math.floor((100 * done) / total);
              if (percent >= last + 10 || done === total) {
                last = percent;
                process.stderr.write(`  encrypting weights: ${done}/${total} ciphertexts (${percent}%)\n`);
              }
            },
      },
    );
    const totalMs = Math.round(performance.now() - started);
    if (values.json) {
      const { modelId: id, version, keyId, bundleDir, metrics, bgv, ckks } = report;
      process.stdout.write(`${JSON.stringify({ modelId: id, version, keyId, scheme, bundleDir, totalMs, ...metrics, preprocessing: spec, bgv, ckks })}\n`);
    } else {
      process.stdout.write(describeReport(report, model.head, values.input, totalMs));
    }
    return 0;
  } finally {
    await ws.close();
  }
}

/** The human-readable summary: the paper's Table 1 figures, and for BGV what the planner chose and the noise budget. */
function describeReport(report: ProtectReport, head: Layer[], input: string, totalMs: number): string {
  const { metrics: m, manifest } = report;
  const mb = (b: number) => (b / 1e6).toFixed(1);
  const s = (ms: number) => (ms / 1000).toFixed(2);
  const lines = [
    `protected ${report.modelId} v${report.version} (key ${report.keyId}) → ${report.bundleDir}`,
    `  head: ${head.map((l) => (l.kind === 'conv' ? describeConv(l) : l.kind === 'dense' ? `${l.inputs}→${l.outputs}` : l.kind === 'add' ? `+layer ${l.from}` : `poly[${l.coeffs.map((c) => +c.toPrecision(4)).join(', ')}]`)).join(' · ')}`,
    `  ${report.scheme.toUpperCase()}, ${manifest.he.params.polyModulusDegree} ring degree, ${manifest.he.params.security}-bit, input ${input}`,
    `  input spec: ${describeInputSpec(manifest.extractor.preprocessing)}`,
  ];
  const { bgv, ckks } = report;
  if (ckks !== undefined) {
    lines.push(
      `  calibration: ${ckks.calibrationSource}; scores up to ${+ckks.outputMax.toPrecision(4)}, any slot up to ${+ckks.resultMax.toPrecision(4)}: ` +
        `first prime holds ${ckks.integerBits} integer bits, ${ckks.precisionBits} bits of precision, modulus [${manifest.he.params.coeffModulusBits.join(', ')}] bits (${s(m.calibrateMs!)} s)`,
      ...ckks.layers.map(
        (l, i) => `  layer ${i} ${l.name}: ${l.ctMults} ct×ct and ${l.plainMults} plaintext products (bound ${l.lowerBoundMults}), ${l.rotations} rotations${l.complex ? ', two values per slot (complex packing, one conjugation)' : ''}${l.ciphertexts > 1 ? `, output over ${l.ciphertexts} ciphertexts` : ''}`,
      ),
    );
  }
  if (bgv !== undefined) {
    lines.push(
      `  CRT moduli t = ${bgv.plainModuli.join(' × ')} (${bgv.plainModulusBits.join(' + ')} bits), coefficient modulus [${bgv.coeffModulusBits.join(', ')}] bits`,
      `  calibration: ${bgv.calibrationSource}; features clamped to [${bgv.inputRange.map((v) => +v.toPrecision(4)).join(', ')}], worst-case bound 2^${bgv.boundBits.toFixed(1)}, ` +
        `scores within ${(100 * bgv.quantizationError).toFixed(2)}% of the float model's (${s(m.calibrateMs!)} s, planning ${s(m.planMs!)} s)`,
      `  noise budget: predicted ${m.predictedNoiseBudgetBits} bits, verified ${m.noiseBudgetBits} bits (one real evaluation, exact against the integer reference, ${s(m.verifyMs!)} s)`,
    );
  }
  lines.push(
    `  time to encrypt ${s(m.encryptMs)} s (keys ${s(m.keygenMs)} s, total ${s(totalMs)} s)`,
    `  bundle ${mb(m.bundleBytes)} MB (weights ${mb(m.weightsBytes)} MB, keys ${mb(m.keysBytes)} MB)`,
    `  peak memory ${m.peakRssMB} MB resident, ${m.wasmHeapMB} MB WASM heap`,
    '',
  );
  return lines.join('\n');
}
