// End to end through the camera: Chromium's fake camera plays a .y4m of MNIST test digits
// into the kiosk, which classifies its frames under encryption; the real backend decrypts.
// NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core; skipped, loudly, without.
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildSite, enrollKiosk, floatModel, hasChromium, kioskFrames, launch, PLAINTEXT, plaintextSeen, screenText, watchDom, type Site } from './kiosk';
import { digitAt, mnistTestImages, writeY4m } from './media';
import { decrypted } from '../backend/helpers';

if (!hasChromium) console.warn('tests/browser/camera.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

/** Frames to classify: at 99% agreement, at most 1 may differ from the float model. */
const FRAMES = 100;
/** The video: MNIST test digits 1000…1299 (not the demo stream's 0…99), each held 5 frames at 10 fps. */
const FIRST_DIGIT = 1000;
const VIDEO_DIGITS = 300;
const HOLD = 5;
const FPS = 10;
/** A camera frame shows video digit d if no pixel differs by more than this (BT.601 round trip). */
const PIXEL_TOLERANCE = 3;

describe.skipIf(!hasChromium)('kiosk camera (Chromium fake camera playing MNIST digits)', () => {
  let site: Site;
  let context: BrowserContext;
  let page: Page;
  const apiResponses: string[] = [];
  const images = mnistTestImages();
  const digits = Array.from({ length: VIDEO_DIGITS }, (_, k) => digitAt(images, FIRST_DIGIT + k));

  beforeAll(async () => {
    site = await buildSite();
    const video = join(site.root, 'mnist-digits.y4m');
    writeY4m(video, digits, HOLD, FPS);
    context = await launch(site.root, ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`]);
    await watchDom(context);
    page = await context.newPage();
    page.on('response', async (r) => {
      if (r.url().includes('/api/')) apiResponses.push(await r.text().catch(() => ''));
    });
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
  });

  it(`classifies ${FRAMES}+ camera frames with 2 HE workers: the backend holds one result per frame, ≥ 99% with the float model’s label of the digit shown, and no label ever reaches the page`, async () => {
    await page.goto(`${site.kioskUrl}?workers=2`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    const deviceId = await enrollKiosk(page, site.ws, 'kiosk-camera');
    await page.click('#camera-start');
    await page.waitForSelector('#state[data-state="running"]');
    await page.waitForFunction((n) => (globalThis as unknown as { sealedEdgeKiosk: { frameCount: number } }).sealedEdgeKiosk.frameCount >= n, FRAMES, {
      timeout: 10 * 60_000,
      polling: 250,
    });
    await page.click('#stop');
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 2 * 60_000 });
    const frames = await kioskFrames(page);
    expect(frames.length).toBeGreaterThanOrEqual(FRAMES);
    expect(await page.evaluate(() => (globalThis as unknown as { sealedEdgeKiosk: { frameCount: number } }).sealedEdgeKiosk.frameCount)).toBe(frames.length);
    await page.waitForSelector(`#outbox[data-delivered="${frames.length}"]`, { timeout: 2 * 60_000 });

    // The backend holds exactly one result per classified frame, each found by its idempotency key.
    const stored = await decrypted(site.ws.store, { deviceId });
    expect(stored).toHaveLength(frames.length);
    const labelOf = new Map(stored.map((r) => [r.idempotencyKey, r.label]));

    // Which digit each frame showed: the video digit its 28×28 input matches, pixel for pixel.
    const label = await floatModel();
    const reference = await Promise.all(digits.map((d) => label(d)));
    const shown = frames.map((f) => {
      expect(f.source).toBe('camera');
      // auto: frames shared by both workers, or whole on one (one frame per worker, or a single worker).
      expect(f.workers).toBe(f.mode === 'shared' ? 2 : 1);
      let best = { digit: -1, maxDiff: Infinity };
      digits.forEach((d, k) => {
        let maxDiff = 0;
        for (let i = 0; i < d.length && maxDiff <= best.maxDiff; i++) maxDiff = Math.max(maxDiff, Math.abs(d[i]! - f.pixels[i]!));
        if (maxDiff < best.maxDiff) best = { digit: k, maxDiff };
      });
      expect(best.maxDiff, `frame ${f.frame} matches no video digit`).toBeLessThanOrEqual(PIXEL_TOLERANCE);
      return best.digit;
    });
    // Frames are taken from the video at most once each: at least FRAMES / HOLD distinct digits.
    expect(new Set(shown).size).toBeGreaterThanOrEqual(FRAMES / HOLD);
    const agree = frames.filter((f, k) => labelOf.get(f.idempotencyKey) === reference[shown[k]!]).length;
    console.log(`camera: ${frames.length} frames of ${new Set(shown).size} distinct digits; ${agree} decrypted labels equal the float model's`);
    expect(frames.every((f) => labelOf.has(f.idempotencyKey))).toBe(true);
    expect(agree).toBeGreaterThanOrEqual(Math.ceil(0.99 * frames.length));

    // No label or score ever reached the device: not in a response, the DOM, or the kiosk's records.
    expect(apiResponses.length).toBeGreaterThanOrEqual(frames.length + 1);
    for (const body of apiResponses) expect(body).not.toMatch(PLAINTEXT);
    expect(await plaintextSeen(page)).toEqual([]);
    expect(await screenText(page)).not.toMatch(PLAINTEXT);
    expect(JSON.stringify(frames.map((f) => ({ ...f, digit: [] })))).not.toMatch(PLAINTEXT);
    // The watch is live: text of that kind, once added, is seen.
    await page.evaluate(() => document.getElementById('last-send')!.append(' probe: label 7'));
    await page.waitForFunction(() => (globalThis as unknown as { __plaintextSeen: string[] }).__plaintextSeen.length > 0);
    expect(await plaintextSeen(page)).toEqual([' probe: label 7']);
  });
});
