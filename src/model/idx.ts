/**
 * IDX files (the MNIST distribution format) and the models' input preprocessing.
 *
 * IDX, big-endian throughout: two zero bytes, an element type byte, the number of
 * dimensions d, d uint32 sizes, then the elements row-major. Functions take bytes, not
 * paths, so the kiosk can reuse them on fetched data.
 */
import { fail } from './errors';

/** IDX element type codes and their sizes in bytes. */
const IDX_TYPES = {
  0x08: { name: 'uint8', size: 1 },
  0x09: { name: 'int8', size: 1 },
  0x0b: { name: 'int16', size: 2 },
  0x0c: { name: 'int32', size: 4 },
  0x0d: { name: 'float32', size: 4 },
  0x0e: { name: 'float64', size: 8 },
} as const;

export type IdxType = (typeof IDX_TYPES)[keyof typeof IDX_TYPES]['name'];

export interface IdxArray {
  readonly type: IdxType;
  readonly dims: readonly number[];
  /** The elements row-major, in native byte order. */
  readonly data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
}

/**
 * Parses an IDX file. `source` names the data in error messages (a file name, say).
 * Refuses a bad magic number, an unknown element type, and a size that differs from
 * what the header declares (truncated or with trailing bytes).
 */
export function readIdx(bytes: Uint8Array, source = 'IDX data'): IdxArray {
  if (bytes.length < 4) fail('E_TRUNCATED', `${source}: ${bytes.length} bytes, too short for an IDX header (4 bytes at least)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    const magic = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join('');
    fail('E_FORMAT', `${source}: bad magic number 0x${magic}: an IDX file starts with two zero bytes`);
  }
  const typeCode = bytes[2]!;
  const type = IDX_TYPES[typeCode as keyof typeof IDX_TYPES];
  if (type === undefined) fail('E_FORMAT', `${source}: unknown IDX element type 0x${typeCode.toString(16).padStart(2, '0')}`);
  const rank = bytes[3]!;
  if (rank === 0) fail('E_FORMAT', `${source}: the IDX header declares 0 dimensions`);
  const header = 4 + 4 * rank;
  if (bytes.length < header) fail('E_TRUNCATED', `${source}: the header of ${rank} dimensions needs ${header} bytes, the data has ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  const count = dims.reduce((a, b) => a * b, 1);
  const expected = header + count * type.size;
  if (bytes.length !== expected) {
    fail(
      bytes.length < expected ? 'E_TRUNCATED' : 'E_FORMAT',
      `${source}: ${bytes.length} bytes, but a ${type.name} array of [${dims.join(', ')}] takes ${expected} ` +
        `(${bytes.length < expected ? 'the file is truncated' : 'trailing bytes'})`,
    );
  }
  return { type: type.name, dims, data: decodeElements(view, header, count, type.name) };
}

function decodeElements(view: DataView, offset: number, count: number, type: IdxType): IdxArray['data'] {
  const read = <T extends { [i: number]: number }>(out: T, size: number, get: (at: number) => number): T => {
    for (let i = 0; i < count; i++) out[i] = get(offset + i * size);
    return out;
  };
  switch (type) {
    case 'uint8':
      return new Uint8Array(view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + count));
    case 'int8':
      return new Int8Array(view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + count));
    case 'int16':
      return read(new Int16Array(count), 2, (at) => view.getInt16(at, false));
    case 'int32':
      return read(new Int32Array(count), 4, (at) => view.getInt32(at, false));
    case 'float32':
      return read(new Float32Array(count), 4, (at) => view.getFloat32(at, false));
    case 'float64':
      return read(new Float64Array(count), 8, (at) => view.getFloat64(at, false));
  }
}

export const MNIST_SIDE = 28;
export const MNIST_PIXELS = MNIST_SIDE * MNIST_SIDE;
export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;

export interface MnistImages {
  readonly count: number;
  /** count × 28 × 28 grey levels, 0 (background) to 255, row-major. */
  readonly pixels: Uint8Array;
}

/** An MNIST image file: uint8 [count, 28, 28]. */
export function readMnistImages(bytes: Uint8Array, source = 'MNIST images'): MnistImages {
  const idx = readIdx(bytes, source);
  if (idx.type !== 'uint8' || idx.dims.length !== 3 || idx.dims[1] !== MNIST_SIDE || idx.dims[2] !== MNIST_SIDE) {
    fail('E_FORMAT', `${source}: a ${idx.type} array of [${idx.dims.join(', ')}], MNIST images are uint8 [N, 28, 28]`);
  }
  return { count: idx.dims[0]!, pixels: idx.data as Uint8Array };
}

/** An MNIST label file: uint8 [count], each 0..9. */
export function readMnistLabels(bytes: Uint8Array, source = 'MNIST labels'): Uint8Array {
  const idx = readIdx(bytes, source);
  if (idx.type !== 'uint8' || idx.dims.length !== 1) {
    fail('E_FORMAT', `${source}: a ${idx.type} array of [${idx.dims.join(', ')}], MNIST labels are uint8 [N]`);
  }
  const labels = idx.data as Uint8Array;
  const bad = labels.findIndex((l) => l > 9);
  if (bad >= 0) fail('E_FORMAT', `${source}: label ${bad} is ${labels[bad]}, MNIST labels are 0..9`);
  return labels;
}

/**
 * The models' input for image `index`: float32 NCHW [1, 1, 28, 28] with
 * x = (pixel / 255 − 0.1307) / 0.3081. Each step is rounded to float32 in this order, as
 * training/idx.py computes it in numpy float32, so both sides get bit-identical inputs.
 */
export function preprocessMnist(images: MnistImages, index: number): Float32Array {
  if (!Number.isInteger(index) || index < 0 || index >= images.count) {
    fail('E_FORMAT', `image ${index} does not exist: the file holds ${images.count} images`);
  }
  const f = Math.fround;
  const [mean, std] = [f(MNIST_MEAN), f(MNIST_STD)];
  const out = new Float32Array(MNIST_PIXELS);
  const offset = index * MNIST_PIXELS;
  for (let i = 0; i < MNIST_PIXELS; i++) out[i] = f(f(f(images.pixels[offset + i]! / 255) - mean) / std);
  return out;
}

/** The shape of the tensor preprocessMnist returns. */
export const MNIST_INPUT_SHAPE = [1, 1, MNIST_SIDE, MNIST_SIDE] as const;
