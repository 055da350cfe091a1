/**
 * Data Stream Acquisition: the demo stream of MNIST test digits shipped with the app
 * (`<base>demo/mnist-test-100.idx`, made by scripts/kiosk-assets.ts), image files, and
 * the camera. Every source yields 28×28 grey images for preprocessMnist.
 */
import { readMnistImages, type MnistImages } from '../model/idx';
import { digitize, type Rgba } from './digitize';

export const DEMO_DIGITS_PATH = 'demo/mnist-test-100.idx';

export async function loadDemoDigits(baseUrl: string): Promise<MnistImages> {
  const url = new URL(DEMO_DIGITS_PATH, new URL(baseUrl, location.href));
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url.pathname}: HTTP ${response.status}`);
  return readMnistImages(new Uint8Array(await response.arrayBuffer()), DEMO_DIGITS_PATH);
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

export async function digitizeFile(file: Blob): Promise<Uint8Array> {
  if (file.size > MAX_IMAGE_BYTES) throw new Error(`${(file.size / 2 ** 20).toFixed(1)} MiB is larger than the ${MAX_IMAGE_BYTES / 2 ** 20} MiB an image may have`);
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new Error(`not an image this browser can decode (type: ${file.type || 'unknown'})`);
  }
  try {
    return digitize(canvasPixels(bitmap, bitmap.width, bitmap.height));
  } finally {
    bitmap.close();
  }
}

/**
 * The camera (getUserMedia). `next()` hands out each presented video frame at most once
 * (requestVideoFrameCallback), so lanes that classify in parallel never take the same frame.
 */
export class Camera {
  private stream?: MediaStream;
  readonly video = document.createElement('video');
  private presented = 0;
  private taken = 0;
  private waiting: (() => void)[] = [];

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
    await this.video.play();
  }

  private wake(): void {
    for (const resolve of this.waiting.splice(0)) resolve();
  }

  /** The next frame nobody took yet, as a 28×28 digit image; undefined once the camera stops. */
  async next(): Promise<Uint8Array | undefined> {
    while (this.stream !== undefined && (this.presented === this.taken || this.video.videoWidth === 0)) {
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    if (this.stream === undefined) return undefined;
    this.taken = this.presented;
    return digitize(canvasPixels(this.video, this.video.videoWidth, this.video.videoHeight));
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
