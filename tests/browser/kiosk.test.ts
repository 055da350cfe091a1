// Browser end-to-end tests of the kiosk. NEEDS /usr/bin/chromium (Debian's `chromium`
// package) and playwright-core; skipped, loudly, when chromium is missing.
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MNIST_PIXELS, readMnistImages } from '../../src/model/idx';
import { demoDigitsIdx } from '../../scripts/kiosk-assets';
import { buildSite, enrollKiosk, floatModel, hasChromium, kioskFrames, launch, PLAINTEXT, screenText, type Site } from './kiosk';
import { decrypted } from '../backend/helpers';

if (!hasChromium) console.warn('tests/browser/kiosk.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

/** The float model's labels for demo digits from..from+count-1 (onnxruntime-node, original ONNX). */
async function floatLabels(from: number, count: number): Promise<number[]> {
  const label = await floatModel();
  const images = readMnistImages(demoDigitsIdx());
  const labels: number[] = [];
  for (let i = from; i < from + count; i++) labels.push(await label(images.pixels.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS)));
  return labels;
}

describe.skipIf(!hasChromium)('kiosk in Chromium (Debian chromium, playwright-core)', () => {
  let site: Site;
  let context: BrowserContext;
  let page: Page;
  const apiResponses: string[] = [];
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    site = await buildSite();
    context = await launch(site.root);
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('response', async (r) => {
      if (r.url().includes('/api/')) apiResponses.push(await r.text().catch(() => ''));
    });
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
  });

  async function runDemo(p: Page, count: number, deliveredAfter: number): Promise<void> {
    await p.fill('#demo-count', String(count));
    await p.click('#demo-start');
    await p.waitForSelector(`#outbox[data-delivered="${deliveredAfter}"]`, { timeout: 10 * 60_000 });
    await p.waitForSelector('#state[data-state="ready"]');
  }

  it('verifies the bundle, enrolls, classifies demo digits, and the backend stores the float model’s labels', async () => {
    await page.goto(`${site.url}/?workers=1`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    expect(await page.textContent('#bundle-id')).toBe('mnist v1');
    expect(await page.textContent('#bundle-status')).toMatch(/verified .* from the network/);
    const deviceId = await enrollKiosk(page, site.ws, 'kiosk-e2e');
    const count = 5;
    await runDemo(page, count, count);
    const stored = await decrypted(site.ws.store, { deviceId });
    expect(stored).toHaveLength(count);
    expect(stored.map((r) => r.label)).toEqual(await floatLabels(0, count));
    // Each result carries the kiosk's capture time, taken before the frame was classified and sent.
    for (const r of stored) expect(r.capturedAt !== null && Date.parse(r.capturedAt) <= Date.parse(r.receivedAt) + 1000, JSON.stringify(r.capturedAt)).toBe(true);
    expect(await page.textContent('#outbox-pending')).toBe('0');
    expect(await page.textContent('#ct-hash')).toMatch(/^[0-9a-f]{64}$/);
    expect(await page.textContent('#ct-size')).toMatch(/KiB$/);
    // Nothing the device received or shows holds a decrypted label or score.
    expect(apiResponses.length).toBeGreaterThanOrEqual(count + 1);
    for (const body of apiResponses) expect(body).not.toMatch(PLAINTEXT);
    expect(await screenText(page)).not.toMatch(PLAINTEXT);
    const frames = await kioskFrames(page);
    expect(JSON.stringify(frames.map((f) => ({ ...f, pixels: [] })))).not.toMatch(PLAINTEXT);
    // Per-frame timings with 1 worker (reported, not asserted: benchmarks measure performance).
    const ms = frames.map((f) => ({ ...f.ms, total: f.totalMs }));
    console.log(`kiosk frame timings, 1 HE worker, Chromium (ms): ${JSON.stringify(ms, (_, v: unknown) => (typeof v === 'number' ? Math.round(v) : v))}`);
  });

  it('a worker killed mid-evaluation is replaced and the frame still completes', async () => {
    const before = (await site.ws.store.listResults({})).length;
    await page.fill('#demo-count', '1');
    await page.click('#demo-start');
    // Kill the worker while it evaluates the frame, whatever the machine's speed.
    await page.waitForFunction(() => (globalThis as unknown as { sealedEdgeKiosk: { pool: { busy: number } } }).sealedEdgeKiosk.pool.busy > 0, undefined, { polling: 5 });
    await page.evaluate(() => (globalThis as unknown as { sealedEdgeKiosk: { pool: { kill(i: number): void } } }).sealedEdgeKiosk.pool.kill(0));
    await page.waitForSelector(`#outbox[data-delivered="6"]`, { timeout: 5 * 60_000 });
    const frames = await kioskFrames(page);
    expect(frames.at(-1)!.attempts).toBe(2);
    const results = await decrypted(site.ws.store);
    expect(results).toHaveLength(before + 1);
    // The kiosk's demo stream restarts at digit 0: the label is the float model's for digit 0.
    expect(results.at(-1)!.label).toBe((await floatLabels(0, 1))[0]);
  });

  it('a reload uses the verified bundle cached in IndexedDB, checked again', async () => {
    await page.reload();
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.textContent('#bundle-status')).toMatch(/verified .* from the cache/);
    expect(await page.getAttribute('#device-id', 'data-enrolled')).toBe('true');
  });

  it('keeps results in the outbox while the backend is down and delivers each exactly once after', async () => {
    const before = (await site.ws.store.listResults({})).length;
    await site.stop();
    try {
      await runDemoOffline(page, 2);
      expect(await page.textContent('#outbox-pending')).toBe('2');
      expect(await page.textContent('#last-send')).toMatch(/network error/);
      expect((await site.ws.store.listResults({})).length).toBe(before);
    } finally {
      await site.restart();
    }
    await page.evaluate(() => (globalThis as unknown as { sealedEdgeKiosk: { outbox: { retryNow(): Promise<void> } } }).sealedEdgeKiosk.outbox.retryNow());
    await page.waitForSelector('#outbox[data-pending="0"]', { timeout: 2 * 60_000 });
    const results = await decrypted(site.ws.store);
    expect(results).toHaveLength(before + 2);
    expect(new Set(results.map((r) => r.idempotencyKey)).size).toBe(results.length);
    expect(results.slice(-2).map((r) => r.label)).toEqual(await floatLabels(0, 2));
  });

  async function runDemoOffline(p: Page, count: number): Promise<void> {
    await p.fill('#demo-count', String(count));
    await p.click('#demo-start');
    await p.waitForSelector(`#outbox[data-pending="${count}"]`, { timeout: 5 * 60_000 });
    await p.waitForSelector('#state[data-state="ready"]');
  }

  it('refuses a bundle whose keys.bin, weights.bin or manifest changed: visible error, nothing posted', async () => {
    const { copyTamperedBundle } = await import('./tamper');
    const cases = copyTamperedBundle(site.site);
    const tamperContext = await launch(site.root);
    try {
      for (const { name, expected } of cases) {
        const p = await tamperContext.newPage();
        const posts: string[] = [];
        p.on('request', (r) => {
          if (r.method() === 'POST') posts.push(r.url());
        });
        await p.goto(`${site.url}/?workers=1&bundle=models/${name}/latest.json`);
        await p.waitForSelector('#state[data-state="refused"]', { timeout: 2 * 60_000 });
        const error = p.locator('#error');
        expect(await error.isVisible()).toBe(true);
        expect(await error.textContent()).toMatch(expected);
        expect(await p.textContent('#bundle-id')).toBe('no bundle');
        expect(await p.isDisabled('#demo-start')).toBe(true);
        // Even driving the pipeline directly fails: no bundle was kept.
        const direct = await p.evaluate(async () => {
          const k = (globalThis as unknown as { sealedEdgeKiosk: { demo?: unknown; classify(d: unknown, i: number): Promise<unknown> } }).sealedEdgeKiosk;
          return k.classify(k.demo, 0).then(() => 'classified', (e: Error) => e.message);
        });
        expect(direct).toMatch(/no verified bundle/);
        expect(posts).toEqual([]);
        await p.close();
      }
    } finally {
      await tamperContext.close();
    }
  });
});
