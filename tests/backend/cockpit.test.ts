// The city cockpit and its API: devices say when they captured each frame; operators read
// results filtered by device, model version and receipt time, newest first, and counts
// per class, per device and per minute (GET /api/v1/stats); the cockpit page shows them
// live. The page part NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core;
// it is skipped, loudly, without.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasChromium, launch } from '../browser/kiosk';
import { COCKPIT_HTML } from '../../src/backend/cockpit';
import type { DecryptionAgent } from '../../src/backend/decrypt';
import type { Backend } from '../../src/backend/server';
import { floatEvaluate } from '../../src/he';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import { addDevice, openWorkspace, operatorToken, signingKey, type Workspace } from '../../src/protect/workspace';
import { argmax, makeHead, makeInputs } from '../he/helpers';
import { decrypted, protectHead, startBackend } from './helpers';

if (!hasChromium) console.warn('tests/backend/cockpit.test.ts: the cockpit page test is SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

const head = makeHead([256, 64, 10], 'realistic', 404);

describe('the city cockpit and its API', () => {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-cockpit-'));
  let ws: Workspace;
  let backend: Backend;
  let decryption: DecryptionAgent;
  let url: string;
  const kiosks: NodeDevice[] = [];
  const inputs = makeInputs(256, 6, 'realistic', 701);
  const labels = inputs.map((x) => argmax(floatEvaluate(head, x)));
  const auth = () => ({ authorization: `Bearer ${operatorToken(ws.dataDir, {})}` });
  const api = async (path: string) => {
    const response = await fetch(`${url}${path}`, { headers: auth() });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const post = async (device: NodeDevice, x: Float64Array, key: string, capturedAt?: string) => {
    const { body, headers } = await device.request(device.classify(x), key, capturedAt);
    return device.post(body, headers);
  };
  const base = Date.now() - 120_000;
  const captured = (second: number) => new Date(base + second * 1000).toISOString();
  /** The operators' API names results by id; the store knows their idempotency keys. */
  const keyOf = async (results: { id: number }[]) => {
    const byId = new Map((await ws.store.listResults({ limit: 1000 })).map((r) => [r.id, r.idempotencyKey]));
    return results.map((r) => byId.get(r.id));
  };

  beforeAll(async () => {
    ws = await openWorkspace(join(root, 'data'), {});
    await protectHead(ws, head, 'city', root);
    ({ backend, decryption, url } = await startBackend(ws, { staticDir: join(root, 'public') }));
    const bundle = await fetchBundle(`${url}/models/city/v1/`, (await signingKey(ws)).publicKey);
    for (const name of ['kiosk-north', 'kiosk-south']) {
      const device = await NodeDevice.enroll(url, (await addDevice(ws, name)).token);
      await device.load(await nodeSeal(), bundle);
      kiosks.push(device);
    }
    // Frames captured in one order, delivered in another (as retries do); the last says no capture time.
    const order = [2, 0, 1, 3, 4, 5];
    for (const i of order) expect((await post(kiosks[i % 2]!, inputs[i]!, `frame-${i}-0001`, i === 5 ? undefined : captured(i))).status).toBe(201);
    await decrypted(ws.store);
  });

  afterAll(async () => {
    for (const k of kiosks) k.unload();
    await backend?.close();
    await decryption?.dispose();
    await ws?.close();
  });

  it('keeps each result’s capture time beside its receipt time, and refuses a malformed one', async () => {
    const { body } = await api('/api/v1/results');
    const results = body.results as { id: number; capturedAt: string | null; receivedAt: string; label: number }[];
    expect(await keyOf(results)).toEqual(['frame-2-0001', 'frame-0-0001', 'frame-1-0001', 'frame-3-0001', 'frame-4-0001', 'frame-5-0001']);
    expect(results.map((r) => r.capturedAt)).toEqual([captured(2), captured(0), captured(1), captured(3), captured(4), null]);
    expect(results.map((r) => r.label)).toEqual([2, 0, 1, 3, 4, 5].map((i) => labels[i]));
    // Any time zone is accepted and stored in UTC; anything else is refused before anything is stored.
    const x = inputs[0]!;
    const zoned = await post(kiosks[0]!, x, 'zoned-0001', '2026-03-01T13:00:00+01:00');
    expect(zoned.status).toBe(201);
    expect((await ws.store.listResults({ afterId: (zoned.body.receipt as { resultId: number }).resultId - 1, limit: 1 }))[0]!.capturedAt).toBe('2026-03-01T12:00:00.000Z');
    expect(JSON.stringify(zoned.body)).not.toMatch(/capturedAt|label/);
    for (const bad of ['yesterday', '2026-03-01', '2026-03-01T12:00:00', '2026-13-01T00:00:00Z', '1969-12-31T23:59:59Z', 12]) {
      const refused = await post(kiosks[0]!, x, `bad-capture-${String(bad).replace(/[^\w-]/g, '_')}`, bad as string);
      expect(refused.status, String(bad)).toBe(400);
      expect(refused.body).toMatchObject({ error: { code: 'E_BAD_REQUEST', message: expect.stringMatching(/^capturedAt must be an ISO 8601 time with a time zone/) } });
    }
    expect((await ws.store.listResults({ limit: 100 })).some((r) => r.idempotencyKey.startsWith('bad-capture'))).toBe(false);
    await decrypted(ws.store);
  });

  it('filters results by device, model version and receipt time, newest first on request; refuses bad filters', async () => {
    const keys = async (query: string) => keyOf((await api(`/api/v1/results?${query}`)).body.results as { id: number }[]);
    const north = kiosks[0]!.deviceId;
    expect(await keys(`deviceId=${north}&limit=3`)).toEqual(['frame-2-0001', 'frame-0-0001', 'frame-4-0001']);
    expect(await keys('modelId=city&version=1&order=desc&limit=2')).toEqual(['zoned-0001', 'frame-5-0001']);
    expect(await keys('modelId=city&version=2')).toEqual([]);
    const all = (await api('/api/v1/results')).body.results as { receivedAt: string }[];
    const since = encodeURIComponent(all[3]!.receivedAt);
    expect(await keys(`since=${since}&until=${encodeURIComponent(all[5]!.receivedAt)}`)).toEqual(['frame-3-0001', 'frame-4-0001']);
    for (const [query, message] of [
      ['version=1', /version filters a model: give modelId too/],
      ['modelId=../x', /modelId is malformed/],
      ['since=yesterday', /since must be an ISO 8601 time with a time zone/],
      ['until=2026-03-01', /until must be an ISO 8601 time/],
      ['order=sideways', /order must be asc or desc/],
      ['version=0&modelId=city', /version must be an integer from 1/],
      ['deviceId=%20', /deviceId/],
    ] as const) {
      const { status, body } = await api(`/api/v1/results?${query}`);
      expect(status, query).toBe(400);
      expect((body.error as { message: string }).message, query).toMatch(message);
    }
  });

  it('counts results per class, per device (with the last minute and the latest receipt and capture) and per minute', async () => {
    const { status, body } = await api('/api/v1/stats');
    expect(status).toBe(200);
    const outcomes = body.outcomes as Record<string, number>;
    const expected: Record<string, number> = {};
    for (const label of [...labels, labels[0]!]) expected[String(label)] = (expected[String(label)] ?? 0) + 1;
    expect(outcomes).toEqual(expected);
    const devices = body.devices as { deviceId: string; results: number; lastMinute: number; lastReceivedAt: string; lastCapturedAt: string | null }[];
    expect(new Map(devices.map((d) => [d.deviceId, d.results]))).toEqual(new Map([[kiosks[0]!.deviceId, 4], [kiosks[1]!.deviceId, 3]]));
    expect(devices.every((d) => d.lastMinute >= 0 && d.lastMinute <= d.results)).toBe(true);
    expect(devices.find((d) => d.deviceId === kiosks[1]!.deviceId)!.lastCapturedAt).toBe(captured(3));
    const timeline = body.timeline as { minute: string; outcomes: Record<string, number> }[];
    expect(timeline.reduce((n, t) => n + Object.values(t.outcomes).reduce((a, b) => a + b, 0), 0)).toBe(7);
    expect((await api(`/api/v1/stats?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).body).toMatchObject({ outcomes: {}, devices: [], timeline: [] });
    expect((await api('/api/v1/stats?since=2020-01-01T00:00:00Z')).status).toBe(400);
    expect((await fetch(`${url}/api/v1/stats`)).status).toBe(401);
  });

  it('the page’s script parses', () => {
    const script = /<script type="module">([\s\S]*)<\/script>/.exec(COCKPIT_HTML)![1]!;
    expect(() => new Function(script)).not.toThrow();
  });

  it.skipIf(!hasChromium)('the page shows class counts, a timeline, device rates and last-seen, and results by capture time, filtered by device, live', async () => {
    const context = await launch(root);
    try {
      const page = await context.newPage();
      await page.goto(`${url}/cockpit`);
      await page.fill('#token', operatorToken(ws.dataDir, {}));
      await page.click('#login button');
      const north = kiosks[0]!.deviceId;
      await page.locator(`tr[data-device="${north}"]`).waitFor();
      const count = (outcome: string) => page.locator(`#classes [data-outcome="${outcome}"] b`).textContent();
      expect(await count(String(labels[0]))).toBe(String(labels.filter((l) => l === labels[0]).length + 1));
      const bars = await page.locator('#timeline rect').evaluateAll((rects) => rects.map((r) => Number((r as SVGElement).dataset.count)));
      expect(bars).toHaveLength(60);
      expect(bars.reduce((a, b) => a + b, 0)).toBe(7);
      const row = page.locator(`tr[data-device="${north}"]`);
      expect(await row.locator('td.rate').textContent()).toMatch(/^[0-4]$/);
      expect(await row.locator('td.seen').textContent()).not.toBe('—');
      expect(await row.locator('td.captured').textContent()).toBe(await page.evaluate((iso) => new Date(iso).toLocaleTimeString(), captured(4)));
      // Results by capture time, newest first (a result without one sorts by its receipt).
      const order = () => page.locator('#results tr').evaluateAll((rows) => rows.map((r) => Number((r as HTMLElement).dataset.result)));
      const stored = await ws.store.listResults();
      const id = (key: string) => stored.find((r) => r.idempotencyKey === key)!.id;
      await page.locator('#results tr').first().waitFor();
      expect(await order()).toEqual(['frame-5-0001', 'frame-4-0001', 'frame-3-0001', 'frame-2-0001', 'frame-1-0001', 'frame-0-0001', 'zoned-0001'].map(id));
      await page.selectOption('#f-sort', 'received');
      expect((await order())[0]).toBe(id('zoned-0001'));
      // Filtered by device.
      await page.selectOption('#f-device', kiosks[1]!.deviceId);
      await page.click('#filters button');
      await page.waitForFunction(() => document.querySelectorAll('#results tr').length === 3);
      expect(await order()).toEqual([id('frame-5-0001'), id('frame-3-0001'), id('frame-1-0001')]);
      // Live: a new result of that device is counted and listed at once.
      const before = Number(await count(String(labels[1])));
      expect((await post(kiosks[1]!, inputs[1]!, 'live-0001', new Date().toISOString())).status).toBe(201);
      await page.waitForFunction(() => document.querySelectorAll('#results tr').length === 4);
      expect(await count(String(labels[1]))).toBe(String(before + 1));
    } finally {
      await context.close();
    }
  });
});
