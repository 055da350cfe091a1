/**
 * Data Stream Acquisition: the demo stream shipped with the app (see ./demo-stream.ts),
 * image files, and the camera. Every source yields pictures as RGBA (ImageData); the
 * kiosk turns them into the model's input with the manifest's input spec
 * (src/model/preprocess.ts).
 */
import { readIdx } from '../model/idx';
import { checkImageSize, ImageError, imageSet, type Rgba } from '../model/preprocess';
import { DEMO_DIR, DEMO_STREAM_FILE, parseDemoStream } from './demo-stream';

/** A demo stream: `count` pictures to loop over. */
export interface DemoStream {
  readonly count: number;
  /** What it is, for the screen. */
  readonly description: string;
  frame(index: number): Promise<Rgba>;
}

async function fetchOk(url: URL): Promise<Response> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url.pathname}: HTTP ${response.status}`);
  return response;
}

export async function loadDemoStream(baseUrl: string): Promise<DemoStream> {
  const dir = new URL(`${DEMO_DIR}/`, new URL(baseUrl, location.href));
  const index = parseDemoStream(await (await fetchOk(new URL(DEMO_STREAM_FILE, dir))).json());
  if ('idx' in index) {
    const images = imageSet(readIdx(new Uint8Array(await (await fetchOk(new URL(index.idx, dir))).arrayBuffer()), index.idx), index.idx);
    if (images.count === 0) throw new Error(`the demo stream ${index.idx} holds no images`);
    return { count: images.count, description: `${images.count} images of ${index.idx}`, frame: async (i) => images.at(i) };
  }
  const files = index.images;
  return {
    count: files.length,
    description: `${files.length} image files`,
    frame: async (i) => {
      const name = files[i]!;
      try {
        return await decodeImageFile(await (await fetchOk(new URL(name, dir))).blob());
      } catch (error) {
        throw new Error(`demo image ${name}: ${(error as Error).message}`);
      }
    },
  };
}

function canvasPixels(source: CanvasImageSource, width: number, height: number): Rgba {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  if (context === null) throw new Error('no 2D canvas');
  context.drawImage(source, 0, 0, width, height);
  return context.getImageData(0, 0, width, height);
}

/** Image files larger than this are refused before decoding. */
export const MAX_IMAGE_BYTES = 20 * 2 ** 20;

/**
 * An image file (PNG, JPEG, any format the browser decodes) as RGBA: refused before
 * decoding when larger than MAX_IMAGE_BYTES, after when it has more than
 * MAX_IMAGE_PIXELS. Colour profiles are ignored (the file's own bytes, as the Node
 * reference decodes them).
 */
export async function decodeImageFile(file: Blob): Promise<Rgba> {
  if (file.size > MAX_IMAGE_BYTES) throw new ImageError(`${(file.size / 2 ** 20).toFixed(1)} MiB is larger than the ${MAX_IMAGE_BYTES / 2 ** 20} MiB an image may have`);
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new ImageError(`not an image this browser can decode (type: ${file.type || 'unknown'})`);
  }
  try {
    checkImageSize(bitmap.width, bitmap.height);
    return canvasPixels(bitmap, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}

/**
 * The camera (getUserMedia). `next()` hands out each presented video frame at most once
 * (requestVideoFrameCallback), so lanes that classify in parallel never take the same
 * frame; a camera that presents no frame for `timeoutMs` is an error.
 */
export class Camera {
  private stream?: MediaStream;
  readonly video = document.createElement('video');
  private presented = 0;
  private taken = 0;
  private waiting: (() => void)[] = [];
  /** How long the camera may present no frame before next() fails. */
  timeoutMs = 10_000;

  async start(): Promise<void> {
    this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 320 }, height: { ideal: 240 } }, audio: false });
    this.presented = 0;
    this.taken = 0;
    this.video.srcObject = this.stream;
    this.video.muted = true;
    this.video.playsInline = true;
    const onFrame = (_: number, metadata: VideoFrameCallbackMetadata) => {
      if (this.stream === undefined) return;
      this.presented = metadata.presentedFrames;
      this.wake();
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
    const playing = this.video.play();
    // A camera that delivers nothing never starts playing: the frame timeout reports it.
    playing.catch(() => undefined);
    await Promise.race([playing, new Promise((resolve) => setTimeout(resolve, this.timeoutMs))]);
  }

  private wake(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }

  /** The next frame nobody took yet, as RGBA; undefined once the camera stops. */
  async next(): Promise<Rgba | undefined> {
    const deadline = performance.now() + this.timeoutMs;
    while (this.stream !== undefined && (this.presented === this.taken || this.video.videoWidth === 0)) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`the camera delivered no frame in ${(this.timeoutMs / 1000).toFixed(0)} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiting.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (this.stream === undefined) return undefined;
    this.taken = this.presented;
    return canvasPixels(this.video, this.video.videoWidth, this.video.videoHeight);
  }

  get running(): boolean {
    return this.stream !== undefined;
  }

  stop(): void {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = undefined;
    this.video.srcObject = null;
    this.wake();
  }
}
