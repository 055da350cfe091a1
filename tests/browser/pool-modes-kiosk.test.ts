// The HE pool's modes in the kiosk, in Chromium with real Web Workers (NEEDS
// /usr/bin/chromium): with ?workers=2 and no ?mode= the kiosk measures the three modes on
// its first frames (its demo stream keeps as many frames in flight as the pool asks),
// chooses one and says so on the worker line; with ?mode=per-worker two frames are in
// flight at once, one per worker. Every frame's stored label is the float model's.
// Timings are not asserted (benchmarks measure them): which mode auto ends on depends on
// the machine.
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kiosk } from '../../src/edge/app';
import type { PoolChoice } from '../../src/edge/pool-modes';
import { decrypted } from '../backend/helpers';
import { buildSite, enrollKiosk, floatModel, hasChromium, kioskFrames, launch, PLAINTEXT, screenText, type Site } from './kiosk';

if (!hasChromium) console.warn('tests/browser/pool-modes-kiosk.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

describe.skipIf(!hasChromium)('HE pool modes in the kiosk (Chromium)', () => {
  let site: Site;
  let context: BrowserContext;
  let page: Page;
  let deviceId: string;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    site = await buildSite();
    context = await launch(site.root);
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
  });

  const choice = () => page.evaluate(() => (globalThis as unknown as { sealedEdgeKiosk: Kiosk }).sealedEdgeKiosk.pool!.choice as PoolChoice);

  /** Runs `count` demo frames from the page's buttons; checks every stored label against the float model's, joined by idempotency key. */
  async function classify(count: number) {
    const before = (await kioskFrames(page)).length;
    const delivered = Number(await page.getAttribute('#outbox', 'data-delivered'));
    await page.fill('#demo-count', String(count));
    await page.click('#demo-start');
    await page.waitForSelector(`#outbox[data-delivered="${delivered + count}"]`, { timeout: 10 * 60_000 });
    await page.waitForSelector('#state[data-state="ready"]');
    const frames = (await kioskFrames(page)).slice(before);
    expect(frames).toHaveLength(count);
    const stored = new Map((await decrypted(site.ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
    const label = await floatModel();
    for (const frame of frames) expect(stored.get(frame.idempotencyKey), `frame ${frame.frame}`).toBe(await label(Uint8Array.from(frame.pixels)));
    return frames;
  }

  it('auto (the default): warm-up frames in each mode, then the mode it chose, named with its figures on the worker line', async () => {
    await page.goto(`${site.kioskUrl}?workers=2`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.textContent('#workers')).toMatch(/^2 HE worker\(s\), auto: measuring single \(warm-up\); extractor on \d thread\(s\)$/);
    deviceId = await enrollKiosk(page, site.ws, 'kiosk-pool-modes');
    const frames = await classify(16);
    // Warm-up: single (1 cold + 3 frames), shared (1 cold + 3), one per worker (3 or more, until both workers completed one).
    expect(frames.slice(0, 11).map((f) => f.mode)).toEqual([...Array(4).fill('single'), ...Array(4).fill('shared'), ...Array(3).fill('per-worker')]);
    expect(frames.map((f) => f.workers)).toEqual(frames.map((f) => (f.mode === 'shared' ? 2 : 1)));
    expect(new Set(frames.filter((f) => f.mode === 'per-worker').map((f) => f.worker))).toEqual(new Set([0, 1]));
    const chosen = await choice();
    expect(chosen.phase).toBe('steady');
    expect(Object.keys(chosen.estimates).sort()).toEqual(['per-worker', 'shared', 'single']);
    // Then the chosen mode, after the per-worker frames still in flight when it chose.
    const after = frames.slice(11).map((f) => f.mode);
    const firstChosen = chosen.mode === 'per-worker' ? 0 : after.findIndex((m) => m !== 'per-worker');
    expect(firstChosen).toBeGreaterThanOrEqual(0);
    expect(firstChosen).toBeLessThanOrEqual(3);
    expect(after.slice(firstChosen)).toEqual(after.slice(firstChosen).map(() => chosen.mode));
    const line = await page.textContent('#workers');
    expect(line).toMatch(/^2 HE worker\(s\), (sharing each frame|one frame per worker|one worker at a time) \(auto\): \d+ ms\/frame( \(each \d+ ms\))? vs \d+ [a-z ]+, \d+ [a-z ]+; extractor on \d thread\(s\)$/);
    console.log(`kiosk, 2 HE workers, auto: ${line}`);
    expect(await screenText(page)).not.toMatch(PLAINTEXT);
    expect(consoleErrors).toEqual([]);
  });

  it('?mode=per-worker: one whole frame per worker, two in flight at once', async () => {
    await page.goto(`${site.kioskUrl}?workers=2&mode=per-worker`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.textContent('#workers')).toMatch(/^2 HE worker\(s\), one frame per worker \(\?mode=per-worker\); extractor/);
    const frames = await classify(6);
    expect(frames.map((f) => `${f.mode}/${f.workers}`)).toEqual(frames.map(() => 'per-worker/1'));
    expect(new Set(frames.map((f) => f.worker))).toEqual(new Set([0, 1]));
    // Frames overlapped: each took longer than the pool's time per frame.
    const { latencyMs, msPerFrame } = (await choice()).estimates['per-worker']!;
    expect(latencyMs).toBeGreaterThan(1.3 * msPerFrame);
    expect(await page.textContent('#workers')).toMatch(/^2 HE worker\(s\), one frame per worker \(\?mode=per-worker\): \d+ ms\/frame \(each \d+ ms\); extractor/);
    expect(consoleErrors).toEqual([]);
  });
});
