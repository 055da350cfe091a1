/**
 * The one preprocessing module: a picture as RGBA bytes (ImageData-like) → the 8-bit image
 * the model sees (height × width × channels) → the model's float32 input tensor, exactly as
 * the input spec says. The kiosk (camera frames, files, demo images), protect's calibration
 * and the Node reference all run this code, so the tensors are equal byte for byte.
 * Platform-free: plain arrays, no DOM, no `node:`.
 *
 * Every step has exact, specified arithmetic (integers, then one IEEE division each):
 * 1. Alpha is composited on white: c' = round((c·a + 255·(255 − a)) / 255).
 * 2. One channel: grey = round((299 R + 587 G + 114 B) / 1000) (ITU-R BT.601 luma).
 * 3. The fit (or digitizing) selects a source rectangle and a destination rectangle; the
 *    source is resampled by area averaging with rational coverage: destination pixel x of
 *    dw covers source [x·sw/dw, (x+1)·sw/dw), so with everything scaled by dw the overlap
 *    of each source pixel is an integer; the destination value is
 *    round(Σ p·wx·wy / (sw·sh)), halves up, computed on integers below 2^53. Outside the
 *    destination rectangle (letterbox bars) pixels are 0.
 * 4. The tensor: value = fround(fround(fround(v / scale) − fround(mean[c])) / fround(std[c])),
 *    each step rounded to float32 as numpy computes it in float32 (training/idx.py).
 */
import { readIdx, type IdxArray } from './idx';
import { fail } from './errors';
import { type InputSpec, type Layout, specShape } from './input-spec';

export interface Rgba {
  readonly width: number;
  readonly height: number;
  /** RGBA bytes, row-major (ImageData.data). */
  readonly data: Uint8ClampedArray | Uint8Array;
}

/** The image the model sees: height × width × channels bytes, interleaved, row-major. */
export interface FittedImage {
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 3;
  readonly pixels: Uint8Array;
}

/** Pictures larger than this (width × height) are refused before they are read. */
export const MAX_IMAGE_PIXELS = 25_000_000;

export class ImageError extends Error {
  readonly code = 'E_IMAGE';
  constructor(message: string) {
    super(message);
    this.name = 'ImageError';
  }
}

/** Refuses an image of no pixels, more than MAX_IMAGE_PIXELS, or the wrong number of bytes. */
export function checkImageSize(width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) throw new ImageError(`an image of ${width}×${height} pixels has nothing to classify`);
  if (width * height > MAX_IMAGE_PIXELS) {
    throw new ImageError(`${width}×${height} is ${((width * height) / 1e6).toFixed(1)} megapixels, more than the ${MAX_IMAGE_PIXELS / 1e6} an image may have`);
  }
}

function checkRgba(image: Rgba): void {
  checkImageSize(image.width, image.height);
  const bytes = 4 * image.width * image.height;
  if (image.data.length !== bytes) throw new ImageError(`an RGBA image of ${image.width}×${image.height} needs ${bytes} bytes, got ${image.data.length}`);
}

/** Step 1 and 2: RGBA → composited on white, RGB (channels 3) or grey (channels 1), as integers. */
export function colours(image: Rgba, channels: 1 | 3): Uint8Array {
  checkRgba(image);
  const n = image.width * image.height;
  const { data } = image;
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    const a = data[4 * i + 3]!;
    let r = data[4 * i]!;
    let g = data[4 * i + 1]!;
    let b = data[4 * i + 2]!;
    if (a !== 255) {
      const white = 255 * (255 - a);
      // (n + 127) / 255 floored rounds n / 255 to nearest (255 is odd: no halves).
      r = Math.floor((r * a + white + 127) / 255);
      g = Math.floor((g * a + white + 127) / 255);
      b = Math.floor((b * a + white + 127) / 255);
    }
    if (channels === 1) out[i] = Math.floor((299 * r + 587 * g + 114 * b + 500) / 1000);
    else {
      out[3 * i] = r;
      out[3 * i + 1] = g;
      out[3 * i + 2] = b;
    }
  }
  return out;
}

/** The grey levels of an RGBA image (alpha composited on white). */
export function grayscale(image: Rgba): Uint8Array {
  return colours(image, 1);
}

/** For each destination index, the source indices it covers and their integer overlaps (summing to `src`). */
function spans(src: number, dst: number): { from: number; weights: number[] }[] {
  return Array.from({ length: dst }, (_, x) => {
    const start = x * src;
    const end = start + src;
    const from = Math.floor(start / dst);
    const weights: number[] = [];
    for (let s = from; s * dst < end; s++) weights.push(Math.min(end, (s + 1) * dst) - Math.max(start, s * dst));
    return { from, weights };
  });
}

interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/**
 * Area-averaging resample of `rect` of a `stride`-wide image of `c` interleaved channels
 * into `to` of a `dw`×`dh` output (zeros elsewhere), with the exact arithmetic of step 3.
 */
function resample(src: Uint8Array, stride: number, c: number, rect: Rect, out: Uint8Array, outWidth: number, to: Rect): void {
  const xs = spans(rect.w, to.w);
  const ys = spans(rect.h, to.h);
  const area = rect.w * rect.h;
  // Horizontal pass: row sums Σ p·wx for every source row of the rectangle (integers ≤ 255·w).
  const rows = new Float64Array(rect.h * to.w * c);
  for (let sy = 0; sy < rect.h; sy++) {
    const row = (rect.y + sy) * stride;
    for (let x = 0; x < to.w; x++) {
      const { from, weights } = xs[x]!;
      for (let k = 0; k < c; k++) {
        let sum = 0;
        for (let j = 0; j < weights.length; j++) sum += src[(row + rect.x + from + j) * c + k]! * weights[j]!;
        rows[(sy * to.w + x) * c + k] = sum;
      }
    }
  }
  for (let y = 0; y < to.h; y++) {
    const { from, weights } = ys[y]!;
    for (let x = 0; x < to.w; x++) {
      for (let k = 0; k < c; k++) {
        let sum = 0;
        for (let j = 0; j < weights.length; j++) sum += rows[((from + j) * to.w + x) * c + k]! * weights[j]!;
        out[((to.y + y) * outWidth + to.x + x) * c + k] = Math.floor((2 * sum + area) / (2 * area));
      }
    }
  }
}

/** round(a·b / d) for positive integers, halves up. */
const roundRatio = (a: number, b: number, d: number) => Math.floor((2 * a * b + d) / (2 * d));

/** The source and destination rectangles of a fit of `sw`×`sh` into `dw`×`dh`. */
export function fitRects(fit: InputSpec['fit'], sw: number, sh: number, dw: number, dh: number): { from: Rect; to: Rect } {
  if (fit !== 'center-crop' && fit !== 'resize' && fit !== 'letterbox') throw new ImageError(`unknown fit ${JSON.stringify(fit)}: the device knows center-crop, resize and letterbox`);
  const whole = { x: 0, y: 0, w: sw, h: sh };
  const all = { x: 0, y: 0, w: dw, h: dh };
  const wider = sw * dh > sh * dw;
  const taller = sw * dh < sh * dw;
  if (fit === 'resize' || (!wider && !taller)) return { from: whole, to: all };
  if (fit === 'center-crop') {
    if (wider) {
      const w = Math.max(1, Math.min(sw, roundRatio(sh, dw, dh)));
      return { from: { x: Math.floor((sw - w) / 2), y: 0, w, h: sh }, to: all };
    }
    const h = Math.max(1, Math.min(sh, roundRatio(sw, dh, dw)));
    return { from: { x: 0, y: Math.floor((sh - h) / 2), w: sw, h }, to: all };
  }
  // letterbox
  if (wider) {
    const h = Math.max(1, Math.min(dh, roundRatio(sh, dw, sw)));
    return { from: whole, to: { x: 0, y: Math.floor((dh - h) / 2), w: dw, h } };
  }
  const w = Math.max(1, Math.min(dw, roundRatio(sw, dh, sh)));
  return { from: whole, to: { x: Math.floor((dw - w) / 2), y: 0, w, h: dh } };
}

/** Fits an image of `c` interleaved channels to `dw`×`dh`. */
export function fitPixels(fit: InputSpec['fit'], src: Uint8Array, sw: number, sh: number, c: number, dw: number, dh: number): Uint8Array {
  const { from, to } = fitRects(fit, sw, sh, dw, dh);
  const out = new Uint8Array(dw * dh * c);
  resample(src, sw, c, from, out, dw, to);
  return out;
}

/** The share of the side MNIST's digits' boxes take: 20 px of 28. */
const DIGIT_BOX = 20 / 28;
/** Grey levels above this are ink (after the polarity is fixed). */
const INK = 64;

/**
 * MNIST-style digitizing of a grey image into `dw`×`dh` (white digit on black):
 * - polarity: a light background (mean of the border > 127) is inverted;
 * - an image already `dw`×`dh` is taken as it is (so MNIST digits go through unchanged);
 * - otherwise MNIST's own recipe: crop to the ink's bounding box (levels > 64), scale its
 *   longer side to round(20/28 of the shorter output side) (area averaging, step 3) and
 *   place it with its centre of mass at the centre; no ink gives a black image.
 */
export function digitizeGrey(grey: Uint8Array, w: number, h: number, dw: number, dh: number): Uint8Array {
  let border = 0;
  let n = 0;
  for (let x = 0; x < w; x++) {
    border += grey[x]! + grey[(h - 1) * w + x]!;
    n += 2;
  }
  for (let y = 1; y < h - 1; y++) {
    border += grey[y * w]! + grey[y * w + w - 1]!;
    n += 2;
  }
  const g = border / n > 127 ? grey.map((v) => 255 - v) : grey;
  if (w === dw && h === dh) return g === grey ? grey.slice() : g;
  const out = new Uint8Array(dw * dh);
  let [minX, minY, maxX, maxY] = [w, h, -1, -1];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (g[y * w + x]! > INK) {
        if (x < minX) minX = x;
        if (x > maxX) maxX = x;
        if (y < minY) minY = y;
        if (y > maxY) maxY = y;
      }
    }
  }
  if (maxX < 0) return out; // nothing drawn: an empty frame
  const cw = maxX - minX + 1;
  const ch = maxY - minY + 1;
  const box = Math.max(1, Math.round(DIGIT_BOX * Math.min(dw, dh)));
  const longer = Math.max(cw, ch);
  const sw = Math.max(1, Math.min(dw, roundRatio(cw, box, longer)));
  const sh = Math.max(1, Math.min(dh, roundRatio(ch, box, longer)));
  const small = new Uint8Array(sw * sh);
  resample(g, w, 1, { x: minX, y: minY, w: cw, h: ch }, small, sw, { x: 0, y: 0, w: sw, h: sh });
  let [mass, mx, my] = [0, 0, 0];
  for (let y = 0; y < sh; y++) {
    for (let x = 0; x < sw; x++) {
      const v = small[y * sw + x]!;
      mass += v;
      mx += v * x;
      my += v * y;
    }
  }
  // Integer sums: the centre of mass is one division each, then rounded.
  const ox = Math.round(dw / 2 - (mass > 0 ? mx / mass : sw / 2) - 0.5);
  const oy = Math.round(dh / 2 - (mass > 0 ? my / mass : sh / 2) - 0.5);
  for (let y = 0; y < sh; y++) {
    const ty = y + oy;
    if (ty < 0 || ty >= dh) continue;
    for (let x = 0; x < sw; x++) {
      const tx = x + ox;
      if (tx >= 0 && tx < dw) out[ty * dw + tx] = small[y * sw + x]!;
    }
  }
  return out;
}

/** Steps 1–3: a picture → the 8-bit image the model sees, as the spec fits (or digitizes) it. */
export function fitImage(spec: InputSpec, image: Rgba): FittedImage {
  const { channels, width: dw, height: dh } = spec;
  const src = colours(image, channels);
  const pixels = spec.digitize ? digitizeGrey(src, image.width, image.height, dw, dh) : fitPixels(spec.fit, src, image.width, image.height, channels, dw, dh);
  return { width: dw, height: dh, channels, pixels };
}

/** Step 4: the 8-bit image → the float32 tensor in `layout` (default: the spec's). */
export function toTensor(spec: InputSpec, image: FittedImage, layout: Layout = spec.layout): Float32Array {
  const { channels: c, width: w, height: h } = spec;
  if (image.channels !== c || image.width !== w || image.height !== h || image.pixels.length !== c * w * h) {
    throw new ImageError(`a ${image.channels}×${image.height}×${image.width} image is not the ${c}×${h}×${w} the spec says`);
  }
  const f = Math.fround;
  // Every value a channel can take, computed once per channel: 256 entries each.
  const table = Array.from({ length: c }, (_, k) => {
    const mean = f(spec.mean[k]!);
    const std = f(spec.std[k]!);
    return Float32Array.from({ length: 256 }, (_, v) => f(f(f(v / spec.scale) - mean) / std));
  });
  const n = w * h;
  const out = new Float32Array(n * c);
  const { pixels } = image;
  for (let k = 0; k < c; k++) {
    const t = table[k]!;
    if (layout === 'nchw') for (let i = 0; i < n; i++) out[k * n + i] = t[pixels[i * c + k]!]!;
    else for (let i = 0; i < n; i++) out[i * c + k] = t[pixels[i * c + k]!]!;
  }
  return out;
}

/** The whole of it: a picture → the image the model sees and its input tensor. */
export function preprocess(spec: InputSpec, image: Rgba, layout: Layout = spec.layout): { image: FittedImage; tensor: Float32Array; shape: number[] } {
  const fitted = fitImage(spec, image);
  return { image: fitted, tensor: toTensor(spec, fitted, layout), shape: specShape(spec, layout) };
}

/**
 * The layout of the tensor the device computes: the spec's when an extractor reads it;
 * channel-major when the encrypted part reads the image itself (a bundle without
 * extractor: the engine packs C×H×W, an NHWC input is transposed, see src/model/onnx.ts).
 */
export function deviceLayout(spec: InputSpec, hasExtractor: boolean): Layout {
  return hasExtractor ? spec.layout : 'nchw';
}

/** An 8-bit image (grey or RGB) as RGBA, opaque: for previews, and to feed it back in. */
export function toRgba(image: FittedImage): Rgba {
  const n = image.width * image.height;
  const data = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    if (image.channels === 1) {
      const v = image.pixels[i]!;
      data[4 * i] = v;
      data[4 * i + 1] = v;
      data[4 * i + 2] = v;
    } else {
      data[4 * i] = image.pixels[3 * i]!;
      data[4 * i + 1] = image.pixels[3 * i + 1]!;
      data[4 * i + 2] = image.pixels[3 * i + 2]!;
    }
    data[4 * i + 3] = 255;
  }
  return { width: image.width, height: image.height, data };
}

/** Images of one size from an IDX file: uint8 [N, H, W] (grey) or [N, H, W, C], C = 1, 3 (RGB) or 4 (RGBA). */
export interface ImageSet {
  readonly count: number;
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 3 | 4;
  /** Image `index` as RGBA. */
  at(index: number): Rgba;
}

export function imageSet(idx: IdxArray, source = 'IDX images'): ImageSet {
  const { dims } = idx;
  const channels = dims.length === 3 ? 1 : dims[3];
  if (idx.type !== 'uint8' || (dims.length !== 3 && dims.length !== 4) || (channels !== 1 && channels !== 3 && channels !== 4)) {
    fail('E_FORMAT', `${source}: a ${idx.type} array of [${dims.join(', ')}]; images are uint8 [N, H, W] (grey) or [N, H, W, C] with C = 1, 3 or 4 (RGB, RGBA)`);
  }
  const [count, height, width] = dims as [number, number, number];
  if (count > 0) checkImageSize(width, height);
  const pixels = idx.data as Uint8Array;
  const size = width * height * channels;
  return {
    count,
    width,
    height,
    channels,
    at(index: number): Rgba {
      if (!Number.isInteger(index) || index < 0 || index >= count) fail('E_FORMAT', `image ${index} does not exist: ${source} holds ${count} images`);
      const px = pixels.subarray(index * size, (index + 1) * size);
      if (channels === 4) return { width, height, data: px };
      return toRgba({ width, height, channels, pixels: px });
    },
  };
}

/** readIdx then imageSet. */
export function readImageSet(bytes: Uint8Array, source = 'IDX images'): ImageSet {
  return imageSet(readIdx(bytes, source), source);
}
