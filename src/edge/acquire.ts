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

export async function digitizeFile(file: Blob): Promise<Uint8Array> {
  const bitmap = await createImageBitmap(file);
  try {
    return digitize(canvasPixels(bitmap, bitmap.width, bitmap.height));
  } finally {
    bitmap.close();
  }
}

export class Camera {
  private stream?: MediaStream;
  readonly video = document.createElement('video');

  async start(): Promise<void> {
    this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 320 }, height: { ideal: 240 } }, audio: false });
    this.video.srcObject = this.stream;
    this.video.muted = true;
    this.video.playsInline = true;
    await this.video.play();
  }

  /** The current frame as a 28×28 digit image, or undefined before the first frame. */
  grab(): Uint8Array | undefined {
    const { videoWidth: w, videoHeight: h } = this.video;
    if (w === 0 || h === 0) return undefined;
    return digitize(canvasPixels(this.video, w, h));
  }

  get running(): boolean {
    return this.stream !== undefined;
  }

  stop(): void {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = undefined;
    this.video.srcObject = null;
  }
}
