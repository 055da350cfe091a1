// CKKS results outside the calibrated range: a real head protected (calibrated on 300
// realistic feature vectors), a Node device posting real encrypted results, the backend
// flagging those whose scores lie beyond RANGE_FACTOR × the calibrated largest |score|.
// The cockpit part NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core; it
// is skipped, loudly, without.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasChromium, launch } from '../browser/kiosk';
import { floatEvaluate } from '../../src/he';
import type { DecryptionAgent } from '../../src/backend/decrypt';
import { checkScoreRange, RANGE_FACTOR } from '../../src/backend/ranges';
import type { Backend } from '../../src/backend/server';
import type { ResultRecord } from '../../src/store/types';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import type { ProtectReport } from '../../src/protect/protect';
import { addDevice, DATABASE_FILE, openWorkspace, operatorToken, signingKey, type Workspace } from '../../src/protect/workspace';
import { argmax, makeHead, makeInputs, maxAbs, maxAbsDiff } from '../he/helpers';
import { decrypted, protectHead, startBackend } from './helpers';

if (!hasChromium) console.warn('tests/backend/ranges.test.ts: the cockpit test is SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

const head = makeHead([256, 64, 10], 'realistic', 404);
const scaled = (x: Float64Array, factor: number) => Float64Array.from(x, (v) => v * factor);

describe('the range check', () => {
  it('flags a largest |score| beyond RANGE_FACTOR × the calibrated one, either sign; no calibration, no check', () => {
    expect(RANGE_FACTOR).toBe(4);
    expect(checkScoreRange([1, -8, 3], 2)).toEqual({ flag: null, scoreMax: 8, bound: 8 });
    expect(checkScoreRange([1, -8.001, 3], 2)).toEqual({ flag: 'out-of-range', scoreMax: 8.001, bound: 8 });
    expect(checkScoreRange(new Float64Array([0.5, 9]), 2)?.flag).toBe('out-of-range');
    expect(checkScoreRange([1e9], undefined)).toBeNull();
  });
});

describe('CKKS results outside the calibrated range', () => {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-ranges-'));
  let ws: Workspace;
  let report: ProtectReport;
  let backend: Backend;
  let decryption: DecryptionAgent;
  let url: string;
  let device: NodeDevice;
  let bound: number;
  const auth = () => ({ authorization: `Bearer ${operatorToken(ws.dataDir, {})}` });

  beforeAll(async () => {
    ws = await openWorkspace(join(root, 'data'), {});
    report = await protectHead(ws, head, 'ranged', root);
    ({ backend, decryption, url } = await startBackend(ws, { staticDir: join(root, 'public') }));
    device = await NodeDevice.enroll(url, (await addDevice(ws, 'kiosk-ranges')).token);
    await device.load(await nodeSeal(), await fetchBundle(`${url}/models/ranged/v1/`, (await signingKey(ws)).publicKey));
    bound = RANGE_FACTOR * report.metrics.calibratedScoreMax!;
  });

  afterAll(async () => {
    device?.unload();
    await backend?.close();
    await decryption?.dispose();
    await ws?.close();
  });

  /** Classifies and posts `x`; the outcome, and the signed request to send again. */
  async function post(x: Float64Array, key: string) {
    const request = await device.request(device.classify(x), key);
    return { ...(await device.post(request.body, request.headers)), request };
  }

  async function stored(key: string): Promise<ResultRecord> {
    const found = (await decrypted(ws.store, { deviceId: device.deviceId })).find((r) => r.idempotencyKey === key);
    if (found === undefined) throw new Error(`no result ${key}`);
    return found;
  }

  it('records the calibrated largest |score| among the version’s metrics', async () => {
    const calibration = makeInputs(256, 300, 'realistic', 1);
    const largest = Math.max(...calibration.map((x) => maxAbs(floatEvaluate(head, x))));
    expect(report.metrics.calibratedScoreMax).toBeCloseTo(largest, 6);
    expect((await ws.store.getModelVersion('ranged', 1))?.protectMetrics.calibratedScoreMax).toBe(report.metrics.calibratedScoreMax);
  });

  it('labels results within the range as before, unflagged', async () => {
    const inputs = makeInputs(256, 4, 'realistic', 405);
    for (const [i, x] of inputs.entries()) {
      expect((await post(x, `in-range-${i}`)).status).toBe(201);
      const r = await stored(`in-range-${i}`);
      expect(r.label).toBe(argmax(floatEvaluate(head, x)));
      expect(r.rangeFlag).toBeNull();
      expect(maxAbs(r.scores)).toBeLessThan(bound);
    }
  });

  it('stores a result that wrapped around flagged, without a label, committed before the receipt; the device sees only the receipt', async () => {
    // ×100 drives the scores to ~5·10⁴, past what the first prime holds: the result wraps
    // around and decrypts to garbage, still far beyond the bound.
    const x = scaled(makeInputs(256, 1, 'realistic', 406)[0]!, 100);
    const expected = floatEvaluate(head, x);
    expect(maxAbs(expected)).toBeGreaterThan(100 * bound);
    const outcome = await post(x, 'wrapped-1');
    expect(outcome.status).toBe(201);
    const receipt = outcome.body.receipt as Record<string, unknown>;
    expect(Object.keys(receipt).sort()).toEqual(['bodySha256', 'deviceId', 'idempotencyKey', 'modelId', 'receivedAt', 'resultId', 'version']);
    expect(JSON.stringify(outcome.body)).not.toMatch(/label|score|out-of-range|flag/i);
    const r = await stored('wrapped-1');
    expect(r).toMatchObject({ id: receipt.resultId, label: null, rangeFlag: 'out-of-range', noiseBudgetBits: null });
    expect(maxAbsDiff(r.scores, expected)).toBeGreaterThan(0.1 * maxAbs(expected)); // garbage, not the scores
    expect(maxAbs(r.scores)).toBeGreaterThan(bound);
    // The audit event is written right after the result, by the decryption loop.
    await expect.poll(async () => (await ws.store.listAudit()).filter((e) => e.event === 'inference.out-of-range').length).toBe(1);
    const audit = (await ws.store.listAudit()).filter((e) => e.event === 'inference.out-of-range');
    expect(audit).toEqual([
      expect.objectContaining({ actor: device.deviceId, details: { resultId: r.id, modelId: 'ranged', version: 1, scoreMax: maxAbs(r.scores), bound } }),
    ]);
    // A retry is answered with the same receipt; nothing is stored or audited twice.
    const again = await device.post(outcome.request.body, outcome.request.headers);
    expect(again.status).toBe(200);
    expect(again.body.receipt).toEqual(receipt);
    expect((await ws.store.listResults({ deviceId: device.deviceId })).filter((s) => s.idempotencyKey === 'wrapped-1')).toHaveLength(1);
    expect((await ws.store.listAudit()).filter((e) => e.event === 'inference.out-of-range')).toHaveLength(1);
  });

  it('flags scores beyond the bound that decrypted right: the margin promises nothing there', async () => {
    const x = scaled(makeInputs(256, 1, 'realistic', 407)[0]!, 10);
    const expected = floatEvaluate(head, x);
    expect(maxAbs(expected)).toBeGreaterThan(bound);
    expect((await post(x, 'beyond-1')).status).toBe(201);
    const r = await stored('beyond-1');
    expect(r).toMatchObject({ label: null, rangeFlag: 'out-of-range' });
    expect(maxAbsDiff(r.scores, expected)).toBeLessThan(1e-3 * maxAbs(expected));
  });

  it('operators see the flag in the results API and the stream', async () => {
    const listed = (await (await fetch(`${url}/api/v1/results`, { headers: auth() })).json()) as { results: { label: number | null; rangeFlag: string | null }[] };
    expect(listed.results.map((r) => [r.label === null, r.rangeFlag])).toEqual([
      ...Array.from({ length: 4 }, () => [false, null]),
      [true, 'out-of-range'],
      [true, 'out-of-range'],
    ]);
    const stream = await fetch(`${url}/api/v1/results/stream`, { headers: auth() });
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
    expect((await post(scaled(makeInputs(256, 1, 'realistic', 408)[0]!, 10), 'streamed-flagged-1')).status).toBe(201);
    let text = '';
    while (!text.includes('event: result')) text += (await reader.read()).value ?? '';
    await reader.cancel();
    const event = JSON.parse(text.split('data: ')[1]!.split('\n')[0]!) as Record<string, unknown>;
    expect(event).toMatchObject({ label: null, rangeFlag: 'out-of-range', deviceId: device.deviceId });
  });

  it.skipIf(!hasChromium)('the cockpit shows a flagged result as a marker, not a label, and counts them', async () => {
    const context = await launch(root);
    try {
      const page = await context.newPage();
      await page.goto(`${url}/cockpit`);
      await page.fill('#token', operatorToken(ws.dataDir, {}));
      await page.click('#login button');
      const row = page.locator(`tr[data-device="${device.deviceId}"]`);
      await row.waitFor();
      expect(await row.locator('td.label').textContent()).toBe('⚠ out of range');
      expect(await row.locator('td.label').getAttribute('class')).toBe('label flagged');
      expect(await row.locator('td.out-of-range').textContent()).toBe('3');
      expect(await row.locator('td.count').textContent()).toBe('7');
      // Live: a labelled result takes the latest place; the flagged ones stay marked in the last 10.
      const x = makeInputs(256, 1, 'realistic', 409)[0]!;
      expect((await post(x, 'live-in-range-1')).status).toBe(201);
      await page.waitForFunction((id) => document.querySelector(`tr[data-device="${id}"] td.count`)?.textContent === '8', device.deviceId);
      expect(await row.locator('td.label').textContent()).toBe(String(argmax(floatEvaluate(head, x))));
      expect((await row.locator('td.labels').textContent())?.split(' ').filter((l) => l === '⚠')).toHaveLength(3);
      expect(await page.locator('#legend').textContent()).toMatch(/out of range/);
    } finally {
      await context.close();
    }
  });

  it('does not check a version protected before calibration existed', async () => {
    const raw = new Database(join(ws.dataDir, DATABASE_FILE));
    raw.prepare("UPDATE model_versions SET protect_metrics = json_remove(protect_metrics, '$.calibratedScoreMax') WHERE model_id = 'ranged'").run();
    raw.close();
    expect((await ws.store.getModelVersion('ranged', 1))?.protectMetrics.calibratedScoreMax).toBeUndefined();
    const x = scaled(makeInputs(256, 1, 'realistic', 410)[0]!, 10);
    expect((await post(x, 'uncalibrated-1')).status).toBe(201);
    const r = await stored('uncalibrated-1');
    expect(r.rangeFlag).toBeNull();
    expect(r.label).toBe(argmax(floatEvaluate(head, x)));
    expect(await ws.store.integrityCheck()).toBe('ok');
  });
});
