/**
 * The colour model's test images (tests/fixtures/colour-shapes/: 200 PNG files of the
 * synthetic colour set's test split, written by training/colour_data.py, and labels.json)
 * and the model's float labels for them, from onnxruntime-node.
 *
 *   npx tsx tests/model/colour-fixture.ts        # (re)writes labels.json's floatLabels
 *
 * The PNG reader here reads exactly what colour_data.py writes (8-bit RGB, no
 * interlace) and refuses anything else; the preprocessing is the model's input spec
 * (models/colour-poly-square.input.json) computed in float32 in training's order,
 * (pixel / 255 − mean[c]) / std[c], NCHW.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import * as ort from 'onnxruntime-node';

export const COLOUR_MODEL = 'models/colour-poly-square.onnx';
export const COLOUR_SPEC_FILE = 'models/colour-poly-square.input.json';
export const COLOUR_FIXTURE = 'tests/fixtures/colour-shapes';
export const SIDE = 32;
export const CHANNELS = 3;
export const PIXELS = SIDE * SIDE * CHANNELS;
/** Debian's interpreter, the one with numpy (training/README.md). */
export const PYTHON = process.env.SEALED_EDGE_PYTHON ?? '/usr/bin/python3';

export interface ColourSpec {
  readonly channels: 3;
  readonly height: number;
  readonly width: number;
  readonly layout: 'nchw';
  readonly scale: 255;
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

export interface FixtureLabels {
  readonly split: string;
  readonly start: number;
  readonly classes: string[];
  readonly images: { file: string; label: number; floatLabel?: number }[];
  readonly floatLabelsFrom?: { model: string; sha256: string; runtime: string };
}

export function colourSpec(): ColourSpec {
  return (JSON.parse(readFileSync(COLOUR_SPEC_FILE, 'utf8')) as { inputSpec: ColourSpec }).inputSpec;
}

export function fixtureLabels(): FixtureLabels {
  return JSON.parse(readFileSync(join(COLOUR_FIXTURE, 'labels.json'), 'utf8')) as FixtureLabels;
}

/** uint8 RGB pixels, row-major HWC, of an 8-bit RGB non-interlaced PNG (what colour_data.py writes). */
export function readRgbPng(bytes: Uint8Array, source: string): { width: number; height: number; rgb: Uint8Array } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length < 8 || signature.some((b, i) => bytes[i] !== b)) throw new Error(`${source}: not a PNG file`);
  let width = 0;
  let height = 0;
  const idat: Uint8Array[] = [];
  for (let at = 8; at + 8 <= bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === 'IHDR') {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const [depth, colourType, , , interlace] = data.subarray(8, 13);
      if (depth !== 8 || colourType !== 2 || interlace !== 0) throw new Error(`${source}: only 8-bit RGB non-interlaced PNGs are read here`);
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = 3 * width;
  if (raw.length !== height * (stride + 1)) throw new Error(`${source}: ${raw.length} bytes of image data, expected ${height * (stride + 1)}`);
  const rgb = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    if (raw[y * (stride + 1)] !== 0) throw new Error(`${source}: row ${y} uses PNG filter ${raw[y * (stride + 1)]}; colour_data.py writes filter 0 only`);
    rgb.set(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)), y * stride);
  }
  return { width, height, rgb };
}

/** The fixture's images, uint8 HWC RGB each. */
export function fixtureImages(labels = fixtureLabels()): Uint8Array[] {
  return labels.images.map(({ file }) => {
    const path = join(COLOUR_FIXTURE, file);
    const image = readRgbPng(new Uint8Array(readFileSync(path)), path);
    if (image.width !== SIDE || image.height !== SIDE) throw new Error(`${path}: ${image.width}×${image.height}, expected ${SIDE}×${SIDE}`);
    return image.rgb;
  });
}

/** One image, uint8 HWC RGB, as the model's float32 NCHW input: (pixel / 255 − mean[c]) / std[c], in float32. */
export function preprocessColour(rgb: Uint8Array, spec: ColourSpec): Float32Array {
  const f = Math.fround;
  const plane = spec.height * spec.width;
  const x = new Float32Array(CHANNELS * plane);
  for (let c = 0; c < CHANNELS; c++) {
    const mean = f(spec.mean[c]!);
    const std = f(spec.std[c]!);
    for (let i = 0; i < plane; i++) x[c * plane + i] = f(f(f(rgb[i * CHANNELS + c]! / spec.scale) - mean) / std);
  }
  return x;
}

export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

/** The model's float logits for each image (onnxruntime-node, batches of 100). */
export async function floatLogits(model: Uint8Array, images: readonly Uint8Array[], spec: ColourSpec): Promise<Float32Array[]> {
  const session = await ort.InferenceSession.create(model);
  const out: Float32Array[] = [];
  try {
    for (let from = 0; from < images.length; from += 100) {
      const batch = images.slice(from, from + 100);
      const x = new Float32Array(batch.length * PIXELS);
      batch.forEach((rgb, i) => x.set(preprocessColour(rgb, spec), i * PIXELS));
      const result = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, [batch.length, CHANNELS, SIDE, SIDE]) });
      const logits = result[session.outputNames[0]!]!.data as Float32Array;
      const classes = logits.length / batch.length;
      batch.forEach((_, i) => out.push(logits.slice(i * classes, (i + 1) * classes)));
    }
  } finally {
    await session.release();
  }
  return out;
}

/**
 * Images `start` .. `start + count − 1` of a split, made by training/colour_data.py now
 * (uint8 HWC RGB each, and their labels); null when Debian's numpy is not there.
 */
export function generateColour(split: 'train' | 'test', start: number, count: number, dir: string): { images: Uint8Array[]; labels: number[] } | null {
  const probe = (() => {
    try {
      execFileSync(PYTHON, ['-c', 'import numpy'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  if (!probe) return null;
  const file = join(dir, `${split}-${start}-${count}.idx`);
  execFileSync(PYTHON, ['training/colour_data.py', '--split', split, '--start', String(start), '--count', String(count), '--idx', file], { stdio: 'inherit' });
  const idx = (path: string, dims: number[]) => {
    const bytes = new Uint8Array(readFileSync(path));
    const header = 4 + 4 * dims.length;
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    const got = Array.from({ length: bytes[3]! }, (_, i) => view.getUint32(4 + 4 * i));
    if (bytes[2] !== 0x08 || JSON.stringify(got) !== JSON.stringify(dims)) throw new Error(`${path}: IDX uint8 ${JSON.stringify(got)}, expected ${JSON.stringify(dims)}`);
    return bytes.subarray(header);
  };
  const pixels = idx(file, [count, SIDE, SIDE, CHANNELS]);
  const labels = idx(file.replace(/\.idx$/, '-labels.idx'), [count]);
  return { images: Array.from({ length: count }, (_, i) => pixels.slice(i * PIXELS, (i + 1) * PIXELS)), labels: Array.from(labels) };
}

/** Writes the fixture's floatLabels from the committed model. */
async function writeFloatLabels(): Promise<void> {
  if (!existsSync(COLOUR_MODEL)) throw new Error(`${COLOUR_MODEL} is missing: train it first (training/README.md)`);
  const labels = fixtureLabels();
  const model = new Uint8Array(readFileSync(COLOUR_MODEL));
  const logits = await floatLogits(model, fixtureImages(labels), colourSpec());
  const { createHash } = await import('node:crypto');
  const ortVersion = (JSON.parse(readFileSync('node_modules/onnxruntime-node/package.json', 'utf8')) as { version: string }).version;
  const out: FixtureLabels = {
    ...labels,
    floatLabelsFrom: { model: COLOUR_MODEL, sha256: createHash('sha256').update(model).digest('hex'), runtime: `onnxruntime-node ${ortVersion}` },
    images: labels.images.map((image, i) => ({ file: image.file, label: image.label, floatLabel: argmax(logits[i]!) })),
  };
  writeFileSync(join(COLOUR_FIXTURE, 'labels.json'), `${JSON.stringify(out, null, 1)}\n`);
  const agree = out.images.filter((i) => i.floatLabel === i.label).length;
  process.stdout.write(`${join(COLOUR_FIXTURE, 'labels.json')}: ${out.images.length} float labels, ${agree} equal to the true label\n`);
}

if (process.argv[1]?.endsWith('colour-fixture.ts')) await writeFloatLabels();
