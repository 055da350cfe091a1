// The kiosk's entry points and modes in Chromium: URL parameters, the set-up panel,
// enrollment, the kiosk mode, serving from a sub-path, and the bundle cache's eviction of
// retired versions. NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core;
// the browser tests are skipped, loudly, without it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MNIST_PIXELS, readMnistImages } from '../../src/model/idx';
import { addDevice } from '../../src/protect/workspace';
import { demoDigitsIdx } from '../../scripts/kiosk-assets';
import { buildKiosk, buildSite, enrollKiosk, floatModel, hasChromium, kioskFrames, launch, type Site } from './kiosk';
import { decrypted } from '../backend/helpers';

if (!hasChromium) console.warn('tests/browser/setup.test.ts SKIPPED (browser part): /usr/bin/chromium is missing (apt-get install -y chromium)');

const SETTINGS_KEY = 'sealed-edge.settings';

/** The float model's labels for demo digits 0…count-1. */
async function demoLabels(count: number): Promise<number[]> {
  const label = await floatModel();
  const images = readMnistImages(demoDigitsIdx());
  const labels: number[] = [];
  for (let i = 0; i < count; i++) labels.push(await label(images.pixels.subarray(i * MNIST_PIXELS, (i + 1) * MNIST_PIXELS)));
  return labels;
}

const ready = (p: Page) => p.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });

/** Runs `count` demo digits and returns the labels the backend stored for them, in order. */
async function classifyDemo(p: Page, site: Site, deviceId: string, count: number): Promise<number[]> {
  const before = (await kioskFrames(p)).length;
  await p.fill('#demo-count', String(count));
  await p.click('#demo-start');
  await p.waitForFunction((n) => (globalThis as unknown as { sealedEdgeKiosk: { frameCount: number } }).sealedEdgeKiosk.frameCount >= n, before + count, { timeout: 5 * 60_000 });
  await ready(p);
  await p.waitForSelector('#outbox[data-pending="0"]', { timeout: 2 * 60_000 });
  const stored = new Map((await decrypted(site.ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
  return (await kioskFrames(p)).slice(before).map((f) => stored.get(f.idempotencyKey)!);
}

/** The ids of the page's visible controls. */
const visibleControls = (p: Page) =>
  p.evaluate(() => [...document.querySelectorAll<HTMLElement>('button, input, select, textarea, a')].filter((e) => e.checkVisibility()).map((e) => e.id));

describe('SEALED_EDGE_BASE', () => {
  it('refuses a base that is not ./ or an absolute path ending in /, before building anything', async () => {
    for (const bad of ['kiosk/', '/kiosk', 'https://cdn.example/kiosk/', '/a/../b/']) {
      await expect(buildKiosk('/nonexistent/never-written', '00'.repeat(32), bad)).rejects.toThrow(/SEALED_EDGE_BASE must be \.\/ or an absolute path/);
    }
  });
});

describe.skipIf(!hasChromium)('kiosk set-up, modes and sub-paths (Debian chromium, playwright-core)', () => {
  let site: Site;
  let context: BrowserContext;
  const requests: string[] = [];

  beforeAll(async () => {
    site = await buildSite();
    context = await launch(site.root);
    context.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
  });

  it('refuses bad URL parameters with a visible error and loads nothing', async () => {
    const cases: [string, RegExp][] = [
      ['workers=0', /the number of HE workers must be a whole number from 1 to 16, got '0'/],
      ['workers=two', /the number of HE workers must be a whole number from 1 to 16, got 'two'/],
      ['bundle=javascript:alert(1)', /the bundle URL must be an http or https URL, not javascript:/],
      ['bundle=models/mnist/v1/keys.bin', /the bundle URL must name the model's latest\.json or a version directory ending in '\/'/],
      ['backend=models/', /the backend URL 'models\/' is not an absolute URL/],
      ['backend=http://127.0.0.1:1/?x=1', /the backend URL must not have a \?query/],
      ['kiosk=yes', /\?kiosk= takes 1 \(kiosk mode\) or 0, got 'yes'/],
      ['source=microphone', /\?source= takes camera or demo, got 'microphone'/],
      ['worker=2', /unknown URL parameter 'worker' \(the kiosk reads bundle, backend, workers, kiosk, source, mode\)/],
      ['workers=2&mode=fast', /\?mode= takes auto, shared, per-worker or single \(.*\), got 'fast'/],
      ['workers=1&workers=2', /\?workers= is given more than once/],
      ['workers=99&source=x', /got '99'.*; \?source= takes camera or demo, got 'x'/],
    ];
    const page = await context.newPage();
    for (const [query, expected] of cases) {
      requests.length = 0;
      await page.goto(`${site.kioskUrl}?${query}`);
      await page.waitForSelector('#state[data-state="error"]');
      expect(await page.isVisible('#error')).toBe(true);
      const text = await page.textContent('#error');
      expect(text).toMatch(/^The page's URL is refused, nothing was loaded: /);
      expect(text).toMatch(expected);
      expect(await page.isDisabled('#demo-start')).toBe(true);
      expect(await page.textContent('#bundle-id')).toBe('no bundle');
      expect(requests.filter((r) => r.includes('/models/') || r.includes('/ort/'))).toEqual([]);
    }
    await page.close();
  });

  it('the set-up panel refuses bad settings visibly, saves good ones, which survive a reload and yield to URL parameters', async () => {
    const page = await context.newPage();
    await page.goto(site.kioskUrl);
    await ready(page);
    await page.fill('#backend-url', 'ftp://example.com/');
    await page.fill('#bundle-url', 'models/mnist/v1/keys.bin');
    await page.fill('#worker-count', '0');
    requests.length = 0;
    await page.click('#save-settings');
    await page.waitForSelector('#settings-error:not([hidden])');
    const refusal = await page.textContent('#settings-error');
    expect(refusal).toMatch(/^Not saved: the backend URL must be an http or https URL, not ftp:; /);
    expect(refusal).toMatch(/the bundle URL must name the model's latest\.json or a version directory/);
    expect(refusal).toMatch(/the number of HE workers must be a whole number from 1 to 16, got '0'$/);
    expect(await page.evaluate((key) => localStorage.getItem(key), SETTINGS_KEY)).toBeNull();
    expect(await page.getAttribute('#state', 'data-state')).toBe('ready');
    expect(requests.filter((r) => r.includes('/models/'))).toEqual([]);

    await page.fill('#backend-url', `${site.url}/`);
    await page.fill('#bundle-url', 'models/mnist/v1/');
    await page.fill('#worker-count', '1');
    await page.click('#save-settings');
    await page.waitForSelector('#state[data-state="loading"]');
    await ready(page);
    expect(await page.isHidden('#settings-error')).toBe(true);
    expect(await page.textContent('#workers')).toMatch(/^1 HE worker\(s\)/);
    expect(JSON.parse((await page.evaluate((key) => localStorage.getItem(key), SETTINGS_KEY))!)).toEqual({ backendUrl: `${site.url}/`, bundleUrl: 'models/mnist/v1/', workers: 1 });

    await page.reload();
    await ready(page);
    expect(await page.inputValue('#bundle-url')).toBe('models/mnist/v1/');
    expect(await page.inputValue('#worker-count')).toBe('1');
    expect(await page.textContent('#bundle-status')).toMatch(/verified .* from the cache/);

    await page.goto(`${site.kioskUrl}?workers=2`);
    await ready(page);
    expect(await page.inputValue('#worker-count')).toBe('2');
    expect(await page.textContent('#workers')).toMatch(/^2 HE worker\(s\)/);

    // Saved settings that no longer pass the checks are refused visibly and reset.
    await page.evaluate((key) => localStorage.setItem(key, JSON.stringify({ workers: 'lots' })), SETTINGS_KEY);
    await page.goto(site.kioskUrl);
    await ready(page);
    expect(await page.textContent('#settings-error')).toMatch(/^The saved settings were refused and reset to the defaults: the number of HE workers must be a whole number/);
    expect(await page.evaluate((key) => localStorage.getItem(key), SETTINGS_KEY)).toBeNull();
    expect(await page.inputValue('#bundle-url')).toBe('models/mnist/latest.json');
    await page.close();
  });

  it('enrollment refuses a malformed token before sending it and shows the backend’s refusal of an unknown or used one', async () => {
    const page = await context.newPage();
    await page.goto(`${site.kioskUrl}?workers=1`);
    await ready(page);
    requests.length = 0;
    for (const bad of ['', 'abc', 'has spaces in it, 32 characters!']) {
      await page.fill('#enroll-token', bad);
      await page.click('#enroll');
      await page.waitForSelector('#enroll-error:not([hidden])');
      expect(await page.textContent('#enroll-error')).toMatch(/^Not enrolled: (paste the enrollment token|an enrollment token is the code `sealed-edge device add` printed)/);
    }
    expect(requests.filter((r) => r.startsWith('POST'))).toEqual([]);

    await page.fill('#enroll-token', 'A'.repeat(32));
    await page.click('#enroll');
    await page.waitForFunction(() => /HTTP 401/.test(document.getElementById('enroll-error')!.textContent ?? ''));
    expect(await page.textContent('#enroll-error')).toBe('Not enrolled: enrollment refused (HTTP 401, E_TOKEN: the enrollment token is unknown or already used)');
    expect(await page.getAttribute('#device-id', 'data-enrolled')).toBe('false');

    const { token, device } = await addDevice(site.ws, 'kiosk-setup');
    await page.fill('#enroll-token', `  ${token}\n`);
    await page.click('#enroll');
    await page.waitForSelector('#device-id[data-enrolled="true"]');
    expect(await page.isHidden('#enroll-error')).toBe(true);
    expect(await page.textContent('#device-id')).toBe(`device ${device.id}`);
    expect(await classifyDemo(page, site, device.id, 1)).toEqual(await demoLabels(1));

    // A token works once: using it again is refused and the device keeps its identity.
    await page.fill('#enroll-token', token);
    await page.click('#enroll');
    await page.waitForSelector('#enroll-error:not([hidden])');
    expect(await page.textContent('#enroll-error')).toMatch(/HTTP 401, E_TOKEN/);
    expect(await page.textContent('#device-id')).toBe(`device ${device.id}`);
    await page.close();
  });

  it('kiosk mode: full screen, Start and Stop only once enrolled; Start runs the chosen source until Stop', async () => {
    const kioskContext = await launch(site.root);
    try {
      const page = await kioskContext.newPage();
      await page.goto(`${site.kioskUrl}?kiosk=1&source=demo&workers=1`);
      await ready(page);
      expect(await page.evaluate(() => document.body.classList.contains('kiosk-mode'))).toBe(true);
      expect(await page.textContent('#source')).toBe('the demo stream');
      // Not enrolled yet: the set-up panel is there, nothing else but Start and Stop.
      expect(await visibleControls(page)).toEqual(['kiosk-start', 'stop', 'backend-url', 'bundle-url', 'worker-count', 'save-settings', 'enroll-token', 'enroll']);
      const deviceId = await enrollKiosk(page, site.ws, 'kiosk-mode');
      expect(await visibleControls(page)).toEqual(['kiosk-start', 'stop']);
      expect(await page.isDisabled('#stop')).toBe(true);

      await page.click('#kiosk-start');
      await page.waitForSelector('#state[data-state="running"]');
      expect(await page.evaluate(() => document.fullscreenElement === document.documentElement)).toBe(true);
      await page.waitForFunction(() => (globalThis as unknown as { sealedEdgeKiosk: { frameCount: number } }).sealedEdgeKiosk.frameCount >= 3, undefined, { timeout: 5 * 60_000 });
      await page.click('#stop');
      await ready(page);
      const frames = await kioskFrames(page);
      await page.waitForSelector(`#outbox[data-delivered="${frames.length}"]`, { timeout: 2 * 60_000 });
      expect(frames.length).toBeGreaterThanOrEqual(3);
      const stored = new Map((await decrypted(site.ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
      expect(stored.size).toBe(frames.length);
      expect(frames.map((f) => stored.get(f.idempotencyKey))).toEqual(await demoLabels(frames.length));
      // Stopped: no further frame is classified.
      await page.waitForTimeout(1500);
      expect((await kioskFrames(page)).length).toBe(frames.length);
    } finally {
      await kioskContext.close();
    }
  });

  it('the bundle cache evicts retired versions: one the backend reports retired is evicted and refused, one a newer version replaces is evicted', async () => {
    const page = await context.newPage();
    await page.goto(`${site.kioskUrl}?workers=1`);
    await ready(page);
    const cached = () => cacheKeys(page, 'bundles');
    expect(await cached()).toEqual(['mnist@1']);
    const deviceId = (await page.textContent('#device-id'))!.replace('device ', '');

    // The owner retires v1 while the host still offers it: the backend refuses the next
    // result (410, kept in the outbox as refused), the kiosk evicts v1 and refuses to use it.
    await site.ws.store.retireModelVersion('mnist', 1);
    await page.fill('#demo-count', '1');
    await page.click('#demo-start');
    await page.waitForSelector('#state[data-state="refused"]', { timeout: 5 * 60_000 });
    expect(await page.textContent('#error')).toBe(
      'Bundle refused — it is not used: the owner retired mnist v1 (the backend refuses its results), and the host offers no newer version',
    );
    expect(await page.textContent('#outbox-refused')).toBe('1');
    expect(await page.textContent('#last-send')).toMatch(/HTTP 410/);
    expect(await cached()).toEqual([]);
    expect(await chunkOwners(page)).toEqual([]);

    // The owner publishes v2: the kiosk loads it and classifies with it.
    expect(await site.publishNextVersion()).toBe(2);
    await page.reload();
    await ready(page);
    expect(await page.textContent('#bundle-id')).toBe('mnist v2');
    expect(await cached()).toEqual(['mnist@2']);
    expect(await classifyDemo(page, site, deviceId, 1)).toEqual(await demoLabels(1));
    expect((await site.ws.store.listResults({ deviceId })).at(-1)!.version).toBe(2);

    // v3 replaces v2: once v3 verifies, v2 leaves the cache, and so does a chunk that no
    // cached bundle names (what a write cut short leaves).
    await page.evaluate(
      () =>
        new Promise<void>((resolve, reject) => {
          const open = indexedDB.open('sealed-edge-kiosk');
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const tx = open.result.transaction('chunks', 'readwrite');
            tx.objectStore('chunks').put(new ArrayBuffer(8), 'ghost@1#00/weights.bin/0');
            tx.oncomplete = () => {
              open.result.close();
              resolve();
            };
          };
        }),
    );
    expect(await chunkOwners(page)).toEqual(['ghost@1', 'mnist@2']);
    expect(await site.publishNextVersion()).toBe(3);
    await page.reload();
    await ready(page);
    expect(await page.textContent('#bundle-id')).toBe('mnist v3');
    expect(await page.textContent('#bundle-status')).toMatch(/verified .* from the network/);
    expect(await cached()).toEqual(['mnist@3']);
    // The evicted versions' file chunks went with them.
    expect(await chunkOwners(page)).toEqual(['mnist@3']);
    await page.close();
  });

  it('a cache written by database version 1 (files whole in their entry) moves into chunks on upgrade, and the kiosk starts from it offline', async () => {
    const fresh = await launch(site.root);
    try {
      const p = await fresh.newPage();
      await p.goto(`${site.url}/models/mnist/latest.json`);
      const stored = await p.evaluate(async () => {
        const pointer = (await (await fetch('latest.json')).json()) as { path: string };
        const base = new URL(pointer.path, location.href);
        const manifest = await (await fetch(new URL('manifest.json', base))).arrayBuffer();
        const signature = await (await fetch(new URL('manifest.sig', base))).arrayBuffer();
        const parsed = JSON.parse(new TextDecoder().decode(manifest)) as { modelId: string; version: number; files: Record<string, unknown> };
        const files: Record<string, ArrayBuffer> = {};
        for (const name of Object.keys(parsed.files)) files[name] = await (await fetch(new URL(name, base))).arrayBuffer();
        const sha = [...new Uint8Array(await crypto.subtle.digest('SHA-256', manifest))].map((b) => b.toString(16).padStart(2, '0')).join('');
        const key = `${parsed.modelId}@${parsed.version}#${sha}`;
        // Exactly what version 1 of the kiosk's database held.
        await new Promise<void>((resolve, reject) => {
          const open = indexedDB.open('sealed-edge-kiosk', 1);
          open.onupgradeneeded = () => {
            open.result.createObjectStore('bundles', { keyPath: 'key' }).createIndex('modelId', 'modelId');
            open.result.createObjectStore('outbox', { keyPath: 'idempotencyKey' }).createIndex('createdAt', 'createdAt');
            open.result.createObjectStore('device');
          };
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const tx = open.result.transaction('bundles', 'readwrite');
            tx.objectStore('bundles').put({ key, modelId: parsed.modelId, version: parsed.version, manifestSha256: sha, manifest, signature, files, storedAt: new Date().toISOString() });
            tx.oncomplete = () => {
              open.result.close();
              resolve();
            };
            tx.onerror = () => reject(tx.error);
          };
        });
        return { key, sizes: Object.entries(files).map(([name, bytes]) => [name, bytes.byteLength] as const) };
      });
      // The host's bundle files are unreachable: only the migrated cache can start the kiosk.
      await p.route('**/models/**', (route) => route.abort());
      await p.goto(`${site.kioskUrl}?workers=1`);
      await ready(p);
      expect(await p.textContent('#bundle-status')).toMatch(/verified .* from the cache/);
      const entry = await p.evaluate(
        (key) =>
          new Promise<unknown>((resolve, reject) => {
            const open = indexedDB.open('sealed-edge-kiosk');
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
              const get = open.result.transaction('bundles').objectStore('bundles').get(key);
              get.onsuccess = () => {
                resolve(get.result.files);
                open.result.close();
              };
            };
          }),
        stored.key,
      );
      expect(entry).toEqual(Object.fromEntries(stored.sizes.map(([name, size]) => [name, { size, chunks: Math.max(1, Math.ceil(size / (32 * 2 ** 20))) }])));
      expect(await chunkOwners(p)).toEqual([stored.key.replace(/#.*/, '')]);
    } finally {
      await fresh.close();
    }
  });
});

/** The keys of a store of the kiosk's bundle cache as `model@version`, sorted: one per cached bundle, or per chunk. */
function cacheKeys(p: Page, store: 'bundles' | 'chunks'): Promise<string[]> {
  return p.evaluate(
    (name) =>
      new Promise<string[]>((resolve, reject) => {
        const open = indexedDB.open('sealed-edge-kiosk');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const keys = open.result.transaction(name).objectStore(name).getAllKeys();
          keys.onsuccess = () => {
            resolve((keys.result as string[]).map((k) => k.replace(/#.*/, '')).sort());
            open.result.close();
          };
        };
      }),
    store,
  );
}

/** The bundles the kiosk's cached file chunks belong to (`model@version`). */
async function chunkOwners(p: Page): Promise<string[]> {
  return [...new Set(await cacheKeys(p, 'chunks'))];
}

describe.skipIf(!hasChromium)('kiosk served from a sub-path', () => {
  for (const { name, mount, base, assets } of [
    { name: 'the default relative base, mounted at /shop/floor-2/', mount: 'shop/floor-2/', base: undefined, assets: './assets/' },
    { name: 'SEALED_EDGE_BASE=/edge/kiosk/', mount: 'edge/kiosk/', base: '/edge/kiosk/', assets: '/edge/kiosk/assets/' },
  ]) {
    it(`works with ${name}: every file loads from there and the backend stores the float model’s labels`, async () => {
      const site = await buildSite({ mount, base });
      const context = await launch(site.root);
      try {
        expect(readFileSync(join(site.site, 'index.html'), 'utf8')).toContain(`src="${assets}`);
        const page = await context.newPage();
        const failures: string[] = [];
        const paths: string[] = [];
        page.on('response', (r) => {
          paths.push(new URL(r.url()).pathname);
          if (r.status() >= 400) failures.push(`${r.status()} ${r.url()}`);
        });
        page.on('requestfailed', (r) => failures.push(`failed ${r.url()}`));
        await page.goto(`${site.kioskUrl}?workers=1`);
        await ready(page);
        const deviceId = await enrollKiosk(page, site.ws, `kiosk-${mount.replace(/\W/g, '-')}`);
        expect(await classifyDemo(page, site, deviceId, 2)).toEqual(await demoLabels(2));
        expect(failures).toEqual([]);
        // The kiosk's own files (scripts, WASM, demo digits, bundle) all come from the sub-path; only the API is at the origin.
        expect(paths.filter((p) => !p.startsWith(`/${mount}`) && !p.startsWith('/api/'))).toEqual([]);
        expect(paths.some((p) => p.startsWith(`/${mount}ort/`))).toBe(true);
        expect(paths.some((p) => p.startsWith(`/${mount}models/mnist/v1/`))).toBe(true);
      } finally {
        await context.close();
        await site.close();
      }
    });
  }
});
