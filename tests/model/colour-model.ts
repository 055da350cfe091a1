/**
 * A small colour CNN for the input-spec tests (seeded random weights, so no training):
 * image [batch, 3, 8, 8] (NCHW) or [batch, 8, 8, 3] (NHWC, tf2onnx style) → Conv 3→2,
 * 3×3, stride 2 → x² → Flatten → dense 18→4; and colour calibration images as IDX.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelBuilder, random } from './onnx-builder';

export function writeColourModel(dir: string, layout: 'nchw' | 'nhwc'): string {
  const b = new ModelBuilder(31);
  let t = b.input('image', layout === 'nchw' ? ['batch', 3, 8, 8] : ['batch', 8, 8, 3]);
  if (layout === 'nhwc') t = b.node('Transpose', [t], { perm: [0, 3, 1, 2] }, { name: 'to_nchw' });
  t = b.node('Conv', [t, b.random([2, 3, 3, 3], 0.5), b.random([2], 0.1)], { kernel_shape: [3, 3], strides: [2, 2] }, { name: 'conv' });
  t = b.node('Mul', [t, t], {}, { name: 'act' });
  t = b.node('Flatten', [t], {}, { name: 'flatten' });
  t = b.node('Gemm', [t, b.random([4, 18], 0.5), b.random([4], 0.1)], { transB: 1 }, { name: 'fc' });
  const path = join(dir, `colour-${layout}.onnx`);
  writeFileSync(path, b.build(t));
  return path;
}

/** `count` seeded colour pictures of `height`×`width` as an IDX file uint8 [count, H, W, 3]. */
export function writeColourIdx(file: string, count: number, height: number, width: number, seed = 5): void {
  const r = random(seed);
  const header = Buffer.alloc(20);
  header.writeUInt32BE(0x00000804, 0);
  [count, height, width, 3].forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  const pixels = Buffer.from(Array.from({ length: count * height * width * 3 }, () => Math.floor((r() + 1) * 128)));
  writeFileSync(file, Buffer.concat([header, pixels]));
}

/**
 * A one-channel model that expects raw 0–255 pixels (no normalization): image
 * [batch, 1, 12, 12] → Conv 1→2, 3×3, stride 2 (small weights: raw pixels are large) →
 * x² → Flatten → dense 50→4.
 */
export function writeRawGreyModel(dir: string): string {
  const b = new ModelBuilder(32);
  let t = b.node('Conv', [b.input('image', ['batch', 1, 12, 12]), b.random([2, 1, 3, 3], 0.01), b.random([2], 0.1)], { kernel_shape: [3, 3], strides: [2, 2] }, { name: 'conv' });
  t = b.node('Mul', [t, t], {}, { name: 'act' });
  t = b.node('Flatten', [t], {}, { name: 'flatten' });
  t = b.node('Gemm', [t, b.random([4, 50], 0.5), b.random([4], 0.1)], { transB: 1 }, { name: 'fc' });
  const path = join(dir, 'raw-grey.onnx');
  writeFileSync(path, b.build(t));
  return path;
}
