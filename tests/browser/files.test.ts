// Image files into the kiosk: the file picker and drag-and-drop, with the real backend.
// NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core; skipped, loudly, without.
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MNIST_SPEC } from '../../src/model/input-spec';
import { fitImage } from '../../src/model/preprocess';
import { buildSite, enrollKiosk, floatModel, hasChromium, kioskFrames, launch, type Site } from './kiosk';
import { digitAt, greyPng, greyToRgba, inkOnPaper, mnistTestImages } from './media';
import { decrypted } from '../backend/helpers';

if (!hasChromium) console.warn('tests/browser/files.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

interface ImageFile {
  name: string;
  png: Buffer;
  /** What the kiosk must classify: the image digitized in Node (the contract digitize.test.ts pins). */
  digit: Uint8Array;
}

const images = mnistTestImages();

/** MNIST test digit `index` as a PNG: as-is (28×28, white on black) or as ink on paper, scaled. */
function imageFile(index: number, style: 'mnist' | { scale: number; margin: number }): ImageFile {
  const digit = digitAt(images, index);
  const { width, height, grey } = style === 'mnist' ? { width: 28, height: 28, grey: digit } : inkOnPaper(digit, style.scale, style.margin);
  const name = style === 'mnist' ? `mnist-${index}.png` : `ink-${index}-x${style.scale}.png`;
  return { name, png: greyPng(width, height, grey), digit: fitImage(MNIST_SPEC, greyToRgba(width, height, grey)).pixels };
}

describe.skipIf(!hasChromium)('kiosk image files (picker and drag-and-drop)', () => {
  let site: Site;
  let context: BrowserContext;
  let page: Page;
  let deviceId: string;
  const posts: string[] = [];
  let label: (pixels: Uint8Array) => Promise<number>;

  beforeAll(async () => {
    site = await buildSite();
    label = await floatModel();
    context = await launch(site.root);
    page = await context.newPage();
    page.on('request', (r) => {
      if (r.method() === 'POST' && r.url().includes('/api/v1/inferences')) posts.push(r.url());
    });
    await page.goto(`${site.kioskUrl}?workers=1`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    deviceId = await enrollKiosk(page, site.ws, 'kiosk-files');
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
  });

  /** Waits for `files` to be classified and delivered; checks each frame's input and stored label. */
  async function expectClassified(files: ImageFile[]): Promise<void> {
    const before = (await kioskFrames(page)).length;
    await page.waitForFunction((n) => (globalThis as unknown as { sealedEdgeKiosk: { frameCount: number } }).sealedEdgeKiosk.frameCount >= n, before + files.length, {
      timeout: 5 * 60_000,
    });
    await page.waitForSelector('#outbox[data-pending="0"]', { timeout: 2 * 60_000 });
    const frames = (await kioskFrames(page)).slice(before);
    const stored = new Map((await decrypted(site.ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
    expect(frames.map((f) => f.source)).toEqual(files.map(() => 'file'));
    // The kiosk classified exactly the digitized image (files are classified in order).
    expect(frames.map((f) => f.pixels)).toEqual(files.map((f) => Array.from(f.digit)));
    const expected = await Promise.all(files.map((f) => label(f.digit)));
    expect(frames.map((f) => stored.get(f.idempotencyKey))).toEqual(expected);
  }

  it('the file picker: each picture is classified and the backend stores the float model’s label of it', async () => {
    const files = [imageFile(2000, 'mnist'), imageFile(2001, { scale: 4, margin: 12 }), imageFile(2002, { scale: 7, margin: 40 }), imageFile(2003, 'mnist')];
    await page.setInputFiles(
      '#file-input',
      files.map((f) => ({ name: f.name, mimeType: 'image/png', buffer: f.png })),
    );
    await expectClassified(files);
    expect(await page.isHidden('#error')).toBe(true);
  });

  it('drag and drop: files dropped on the drop zone are classified the same way', async () => {
    const files = [imageFile(2004, { scale: 5, margin: 20 }), imageFile(2005, 'mnist'), imageFile(2006, { scale: 3, margin: 8 })];
    await page.evaluate(
      (dropped) => {
        const transfer = new DataTransfer();
        for (const f of dropped) transfer.items.add(new File([Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0))], f.name, { type: 'image/png' }));
        document.getElementById('drop-zone')!.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
      },
      files.map((f) => ({ name: f.name, base64: f.png.toString('base64') })),
    );
    await expectClassified(files);
  });

  it('refuses what is not an image, by picker or drop: a visible error naming the file, nothing posted', async () => {
    const framesBefore = (await kioskFrames(page)).length;
    const postsBefore = posts.length;
    await page.setInputFiles('#file-input', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a digit') });
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toMatch(/^notes\.txt was not classified: not an image this browser can decode/);
    await page.evaluate(() => {
      const transfer = new DataTransfer();
      transfer.setData('text/plain', '7');
      document.getElementById('drop-zone')!.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    });
    expect(await page.textContent('#error')).toBe('Only files can be classified: drop images');
    expect(await page.isVisible('#error')).toBe(true);
    expect((await kioskFrames(page)).length).toBe(framesBefore);
    expect(posts.length).toBe(postsBefore);
  });
});
