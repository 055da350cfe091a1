// The kiosk on a BGV bundle, in Debian's chromium: protect --scheme bgv (the CLI, in its own
// process) → signed bundle → 2 HE Web Workers, one CRT component each → backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../node-run';
import { demoDigitsIdx } from '../../scripts/kiosk-assets';
import { MNIST_PIXELS, readMnistImages } from '../../src/model/idx';
import { buildSite, enrollKiosk, floatModel, hasChromium, kioskFrames, launch, PLAINTEXT, screenText, type Site } from './kiosk';
import { decrypted } from '../backend/helpers';

if (!hasChromium) console.warn('tests/browser/bgv.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

const KEK = '05'.repeat(32);
/** Each BGV frame is two whole evaluations (one per CRT component): a few demo digits. */
const COUNT = 3;

describe.skipIf(!hasChromium)('kiosk in Chromium on a BGV bundle', () => {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-kiosk-bgv-'));
  let site: Site;
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    const data = join(root, 'data');
    const out = join(root, 'models');
    const r = await runCli(['protect', 'models/paper-cnn-x2+2x.onnx', '--scheme', 'bgv', '--id', 'mnist-bgv', '--data', data, '--out', out, '--json'], {
      env: { ...process.env, SEALED_EDGE_KEK: KEK },
      timeout: 5 * 60_000,
    });
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    site = await buildSite({ model: { dataDir: data, modelDir: join(out, 'mnist-bgv'), env: { SEALED_EDGE_KEK: KEK } } });
    context = await launch(site.root);
    page = await context.newPage();
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('2 workers evaluate a CRT component each; the backend stores the float model’s labels and each result’s noise budget', async () => {
    await page.goto(`${site.url}/?workers=2&mode=shared&bundle=models/mnist-bgv/latest.json`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.textContent('#bundle-status')).toMatch(/BGV N=16384, 128-bit/);
    const deviceId = await enrollKiosk(page, site.ws, 'kiosk-bgv');
    await page.fill('#demo-count', String(COUNT));
    await page.click('#demo-start');
    await page.waitForSelector(`#outbox[data-delivered="${COUNT}"]`, { timeout: 5 * 60_000 });

    const label = await floatModel();
    const images = readMnistImages(demoDigitsIdx());
    const expected: number[] = [];
    for (let i = 0; i < COUNT; i++) expected.push(await label(images.pixels.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS)));
    const stored = await decrypted(site.ws.store, { deviceId });
    expect(stored.map((s) => s.label)).toEqual(expected);
    for (const s of stored) {
      expect(Number.isInteger(s.noiseBudgetBits)).toBe(true);
      expect(s.noiseBudgetBits).toBeGreaterThan(0);
    }
    const frames = await kioskFrames(page);
    expect(frames.map((f) => f.workers)).toEqual(expected.map(() => 2));
    expect(await screenText(page)).not.toMatch(PLAINTEXT);
  });
});
