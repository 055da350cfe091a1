/**
 * Any RGBA image (camera frame, picture file) → one MNIST-style 28×28 grey image, white
 * digit on black, 0…255. Platform-free (plain arrays) so Node tests pin it.
 *
 * - grayscale: round(0.299 R + 0.587 G + 0.114 B) (alpha composited on white);
 * - polarity: a light background (mean of the border > 127) is inverted;
 * - an image that is already 28×28 is taken as it is (so MNIST test digits go through
 *   unchanged and preprocessMnist sees exactly what training saw);
 * - otherwise MNIST's own recipe: crop to the ink's bounding box, scale its longer side to
 *   20 px (area averaging), and place it in 28×28 with its centre of mass at the centre.
 * Then src/model/idx.ts `preprocessMnist` normalizes it, as for training.
 */
import { MNIST_SIDE, type MnistImages } from '../model/idx';

export interface Rgba {
  width: number;
  height: number;
  /** RGBA bytes, row-major (ImageData.data). */
  data: Uint8ClampedArray | Uint8Array;
}

export function grayscale(image: Rgba): Float32Array {
  const { width, height, data } = image;
  const out = new Float32Array(width * height);
  for (let i = 0; i < out.length; i++) {
    const a = data[4 * i + 3]! / 255;
    const luma = 0.299 * data[4 * i]! + 0.587 * data[4 * i + 1]! + 0.114 * data[4 * i + 2]!;
    out[i] = Math.round(luma * a + 255 * (1 - a));
  }
  return out;
}

function borderMean(g: Float32Array, w: number, h: number): number {
  let sum = 0;
  let n = 0;
  for (let x = 0; x < w; x++) {
    sum += g[x]! + g[(h - 1) * w + x]!;
    n += 2;
  }
  for (let y = 1; y < h - 1; y++) {
    sum += g[y * w]! + g[y * w + w - 1]!;
    n += 2;
  }
  return sum / n;
}

/** Area-averaging resize of a grey image. */
function resize(src: Float32Array, sw: number, sh: number, dw: number, dh: number): Float32Array {
  const out = new Float32Array(dw * dh);
  const fx = sw / dw;
  const fy = sh / dh;
  for (let y = 0; y < dh; y++) {
    const y0 = y * fy;
    const y1 = y0 + fy;
    for (let x = 0; x < dw; x++) {
      const x0 = x * fx;
      const x1 = x0 + fx;
      let sum = 0;
      let area = 0;
      for (let sy = Math.floor(y0); sy < Math.min(sh, Math.ceil(y1)); sy++) {
        const wy = Math.min(y1, sy + 1) - Math.max(y0, sy);
        for (let sx = Math.floor(x0); sx < Math.min(sw, Math.ceil(x1)); sx++) {
          const wx = Math.min(x1, sx + 1) - Math.max(x0, sx);
          sum += src[sy * sw + sx]! * wx * wy;
          area += wx * wy;
        }
      }
      out[y * dw + x] = area > 0 ? sum / area : 0;
    }
  }
  return out;
}

export function digitize(image: Rgba): Uint8Array {
  const { width: w, height: h } = image;
  if (w < 1 || h < 1 || image.data.length !== 4 * w * h) throw new Error(`an RGBA image of ${w}×${h} needs ${4 * w * h} bytes`);
  let g = grayscale(image);
  if (borderMean(g, w, h) > 127) g = g.map((v) => 255 - v);
  const out = new Uint8Array(MNIST_SIDE * MNIST_SIDE);
  if (w === MNIST_SIDE && h === MNIST_SIDE) {
    for (let i = 0; i < out.length; i++) out[i] = g[i]!;
    return out;
  }
  // Ink: pixels clearly above the background.
  const threshold = 64;
  let [minX, minY, maxX, maxY] = [w, h, -1, -1];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (g[y * w + x]! > threshold) {
        minX = Math.min(minX, x);
        maxX = Math.max(maxX, x);
        minY = Math.min(minY, y);
        maxY = Math.max(maxY, y);
      }
    }
  }
  if (maxX < 0) return out; // nothing drawn: an empty frame
  const cw = maxX - minX + 1;
  const ch = maxY - minY + 1;
  const crop = new Float32Array(cw * ch);
  for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) crop[y * cw + x] = g[(minY + y) * w + minX + x]!;
  const scale = 20 / Math.max(cw, ch);
  const dw = Math.max(1, Math.round(cw * scale));
  const dh = Math.max(1, Math.round(ch * scale));
  const small = resize(crop, cw, ch, dw, dh);
  let [mass, mx, my] = [0, 0, 0];
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      const v = small[y * dw + x]!;
      mass += v;
      mx += v * x;
      my += v * y;
    }
  }
  const ox = Math.round(MNIST_SIDE / 2 - (mass > 0 ? mx / mass : dw / 2) - 0.5);
  const oy = Math.round(MNIST_SIDE / 2 - (mass > 0 ? my / mass : dh / 2) - 0.5);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      const tx = x + ox;
      const ty = y + oy;
      if (tx >= 0 && tx < MNIST_SIDE && ty >= 0 && ty < MNIST_SIDE) out[ty * MNIST_SIDE + tx] = Math.round(Math.min(255, small[y * dw + x]!));
    }
  }
  return out;
}

/** One 28×28 grey image as the MnistImages preprocessMnist reads. */
export function asMnistImages(pixels: Uint8Array): MnistImages {
  return { count: 1, pixels };
}
