/**
 * PNG and JPEG files decoded in Node (pngjs, jpeg-js: pure JavaScript) into RGBA, for
 * calibration images, demo streams and the Node reference of the kiosk's preprocessing.
 * The browser decodes with createImageBitmap instead: a PNG without colour chunks decodes
 * to the same bytes in both; JPEG decoders may differ by a level here and there.
 */
import { readFileSync, statSync } from 'node:fs';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { checkImageSize, ImageError, MAX_IMAGE_PIXELS, type Rgba } from '../model/preprocess';

/** The image files a folder of images may hold. */
export const IMAGE_FILE = /\.(png|jpe?g)$/i;
/** Image files larger than this are refused before decoding (the kiosk's limit too). */
export const MAX_IMAGE_BYTES = 20 * 2 ** 20;

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** What the bytes are by their first bytes: 'png', 'jpeg', or undefined. */
export function imageKind(bytes: Uint8Array): 'png' | 'jpeg' | undefined {
  if (PNG_MAGIC.every((b, i) => bytes[i] === b)) return 'png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  return undefined;
}

/** Decodes PNG or JPEG bytes into RGBA; ImageError naming `source` when they are neither or do not decode. */
export function decodeImage(bytes: Uint8Array, source: string): Rgba {
  if (bytes.length > MAX_IMAGE_BYTES) throw new ImageError(`${source}: ${(bytes.length / 2 ** 20).toFixed(1)} MiB is larger than the ${MAX_IMAGE_BYTES / 2 ** 20} MiB an image may have`);
  const kind = imageKind(bytes);
  if (kind === undefined) throw new ImageError(`${source}: not a PNG or JPEG image`);
  try {
    if (kind === 'png') {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      checkImageSize(png.width, png.height);
      return { width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength) };
    }
    const image = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: MAX_IMAGE_PIXELS / 1e6, maxMemoryUsageInMB: 512 });
    checkImageSize(image.width, image.height);
    return { width: image.width, height: image.height, data: image.data };
  } catch (error) {
    if (error instanceof ImageError) throw new ImageError(`${source}: ${error.message}`);
    throw new ImageError(`${source}: the ${kind.toUpperCase()} image does not decode (${(error as Error).message})`);
  }
}

/** Reads and decodes an image file (its size checked before it is read). */
export function decodeImageFile(file: string): Rgba {
  const size = statSync(file).size;
  if (size > MAX_IMAGE_BYTES) throw new ImageError(`${file}: ${(size / 2 ** 20).toFixed(1)} MiB is larger than the ${MAX_IMAGE_BYTES / 2 ** 20} MiB an image may have`);
  return decodeImage(new Uint8Array(readFileSync(file)), file);
}
