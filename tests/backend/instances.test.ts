/**
 * Every instance serves every operator: two backend instances on one PostgreSQL database,
 * in this test process, as they would run behind a load balancer. An operator's stream on
 * either instance announces every result, whichever instance decrypted it; a device's rate
 * limit holds across instances; and a database that dies mid-run gets clear 503s while
 * the instances stay up, nothing is stored half, and everything resumes when it is back.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend } from '../../src/backend/server';
import { floatEvaluate } from '../../src/he';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import { addDevice, openWorkspace, operatorToken, signingKey, type Workspace } from '../../src/protect/workspace';
import { openStore } from '../../src/store/open';
import type { Store } from '../../src/store/types';
import { argmax, makeHead, makeInputs } from '../he/helpers';
import { decrypted, operatorStream, protectHead } from './helpers';
import { POSTGRES_URL, postgresDatabase, postgresSchema } from './store-engines';

const head = makeHead([256, 64, 10], 'realistic', 404);
const SCRIPT = join(__dirname, '../../scripts/test-postgres.sh');

/** Two instances on one store (each its own connection pool, decryption and operator streams). */
async function twoInstances(ws: Workspace, location: string, root: string, options: Partial<ConstructorParameters<typeof Backend>[0]> = {}) {
  const seal = await nodeSeal();
  const other: Store = await openStore(location);
  const token = operatorToken(ws.dataDir, {});
  const made = [ws.store, other].map((store, i) => {
    const decryption = new DecryptionAgent(seal, store, ws.kek);
    const backend = new Backend({ store, decryption, operatorToken: token, staticDir: join(root, 'public'), pollMs: 20, instanceId: `instance-${'ab'[i]}`, ...options });
    return { backend, decryption };
  });
  const urls = await Promise.all(made.map(async ({ backend }) => `http://127.0.0.1:${await backend.listen(0)}`));
  return {
    a: made[0]!.backend,
    b: made[1]!.backend,
    urls,
    token,
    close: async () => {
      for (const { backend, decryption } of made) {
        await backend.close();
        await decryption.dispose();
      }
      await other.close();
    },
  };
}

async function postTo(url: string, device: NodeDevice, ciphertext: Uint8Array, key: string) {
  const { body, headers } = await device.request(ciphertext, key);
  const response = await fetch(`${url}/api/v1/inferences`, { method: 'POST', headers, body: Buffer.from(body) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown>, headers: response.headers };
}

describe.runIf(POSTGRES_URL !== undefined)('two backend instances on one PostgreSQL database', () => {
  const database = postgresDatabase();
  let ws: Workspace;
  let root: string;
  let location: string;
  let device: NodeDevice;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sealed-edge-instances-'));
    location = await postgresSchema(database.url(), 'instances');
    ws = await openWorkspace(join(root, 'data'), {}, location);
    await protectHead(ws, head, 'test-head', root);
  });

  afterAll(async () => {
    device?.unload();
    await ws?.close();
  });

  it('an operator’s stream on either instance announces every result once, whichever instance decrypted it', async () => {
    const pair = await twoInstances(ws, location, root);
    try {
      device = await NodeDevice.enroll(pair.urls[0]!, (await addDevice(ws, 'kiosk-1')).token);
      await device.load(await nodeSeal(), await fetchBundle(`${pair.urls[1]}/models/test-head/v1/`, (await signingKey(ws)).publicKey));
      const streams = await Promise.all(pair.urls.map((url) => operatorStream(url, pair.token)));
      // Only B decrypts: what A's stream shows was decrypted on B.
      await pair.a.decryptions.stop();
      const inputs = makeInputs(256, 6, 'realistic', 501);
      const expected = new Map<string, number>();
      for (const [i, x] of inputs.entries()) {
        const key = `both-${i}-0001`;
        expect((await postTo(pair.urls[i % 2]!, device, device.classify(x), key)).status).toBe(201);
        expected.set(key, argmax(floatEvaluate(head, x)));
      }
      const stored = await decrypted(ws.store, { deviceId: device.deviceId });
      expect(new Map(stored.map((r) => [r.idempotencyKey, r.label]))).toEqual(expected);
      for (const stream of streams) {
        await expect.poll(() => stream.events.length, { timeout: 10_000 }).toBe(6);
        expect(stream.events.map((e) => e.event)).toEqual(stored.map(() => 'result'));
        expect(new Map(stream.events.map((e) => [e.data.id, e.data.label]))).toEqual(new Map(stored.map((r) => [r.id, r.label])));
        expect(stream.events.every((e) => e.data.state === 'decrypted' && e.data.deviceId === device.deviceId)).toBe(true);
      }
      // And the other way round: A decrypts what was posted to B; B's stream shows it.
      pair.a.decryptions.start();
      await pair.b.decryptions.stop();
      const x = makeInputs(256, 1, 'realistic', 502)[0]!;
      const { body } = await postTo(pair.urls[1]!, device, device.classify(x), 'b-to-a-0001');
      await expect.poll(() => streams[1]!.events.length, { timeout: 10_000 }).toBe(7);
      expect(streams[1]!.events[6]!.data).toMatchObject({ id: (body.receipt as { resultId: number }).resultId, state: 'decrypted', label: argmax(floatEvaluate(head, x)) });
      await expect.poll(() => streams[0]!.events.length).toBe(7);
      for (const stream of streams) stream.close();
    } finally {
      await pair.close();
    }
  });

  it('a device’s rate limit holds across instances (buckets in the database); per-instance buckets would let it through twice', async () => {
    const at = Date.parse('2026-03-01T00:00:00Z');
    const statuses = async (urls: string[], count: number) => {
      const out = [];
      for (let i = 0; i < count; i++) {
        // A signed body the rate limit sees before anything parses it (then refused as a bad request).
        const body = new TextEncoder().encode(`{"n":${i}}`);
        const response = await fetch(`${urls[i % 2]}/api/v1/inferences`, { method: 'POST', headers: await device.signedHeaders(body), body: Buffer.from(body) });
        out.push(response.status);
      }
      return out;
    };
    const shared = await twoInstances(ws, location, root, { rateLimit: { burst: 3, perSecond: 1 }, now: () => at });
    try {
      expect(await statuses(shared.urls, 6)).toEqual([400, 400, 400, 429, 429, 429]);
      const refused = await fetch(`${shared.urls[1]}/api/v1/inferences`, { method: 'POST', headers: await device.signedHeaders(new Uint8Array(2)), body: Buffer.alloc(2) });
      expect(await refused.json()).toEqual({ error: { code: 'E_RATE', message: 'more than 1 requests per second' } });
    } finally {
      await shared.close();
    }
    const apart = await twoInstances(ws, location, root, { rateLimit: { burst: 3, perSecond: 1 }, now: () => at + 3_600_000, rateLimitScope: 'instance' });
    try {
      expect(await statuses(apart.urls, 8)).toEqual([400, 400, 400, 400, 400, 400, 429, 429]);
    } finally {
      await apart.close();
    }
  });

  it('refuses a bad rate limit or scope when the instance is made', () => {
    const decryption = { concurrency: 1, decrypt: async () => ({ scheme: "ckks" as const, scores: new Float64Array(0), noiseBudgetBits: null }), dispose: async () => undefined };
    const make = (extra: object) => () => new Backend({ store: ws.store, decryption, operatorToken: 'x'.repeat(32), ...extra });
    expect(make({ rateLimit: { burst: 0, perSecond: 1 } })).toThrow(/rateLimit needs burst ≥ 1 and perSecond > 0/);
    expect(make({ rateLimit: { burst: 5, perSecond: Number.NaN } })).toThrow(/rateLimit/);
    expect(make({ rateLimitScope: 'cluster' })).toThrow(/rateLimitScope must be 'store' or 'instance', got "cluster"/);
  });
});

describe.runIf(POSTGRES_URL !== undefined)('a PostgreSQL database that dies mid-run', () => {
  let dir = '';
  let url = '';
  let ws: Workspace;
  let backend: Backend;
  let decryption: DecryptionAgent;
  let device: NodeDevice;

  beforeAll(async () => {
    // A cluster of its own, to kill and bring back without disturbing other test files.
    const started = execFileSync('bash', [SCRIPT], { encoding: 'utf8' });
    url = /SEALED_EDGE_TEST_DATABASE_URL=(\S+)/.exec(started)![1]!;
    dir = /SEALED_EDGE_TEST_POSTGRES_DIR=(\S+)/.exec(started)![1]!;
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-dies-'));
    ws = await openWorkspace(join(root, 'data'), {}, url);
    await protectHead(ws, head, 'test-head', root);
    decryption = new DecryptionAgent(await nodeSeal(), ws.store, ws.kek);
    backend = new Backend({ store: ws.store, decryption, operatorToken: operatorToken(ws.dataDir, {}), staticDir: join(root, 'public'), pollMs: 50 });
    const base = `http://127.0.0.1:${await backend.listen(0)}`;
    device = await NodeDevice.enroll(base, (await addDevice(ws, 'kiosk-1')).token);
    await device.load(await nodeSeal(), await fetchBundle(`${base}/models/test-head/v1/`, (await signingKey(ws)).publicKey));
  }, 120_000);

  afterAll(async () => {
    device?.unload();
    await backend?.close();
    await decryption?.dispose();
    await ws?.close();
    if (dir !== '') execFileSync('bash', [SCRIPT, 'stop', dir]);
  });

  it('answers 503 E_UNAVAILABLE (JSON, Retry-After) while it is down, stays up, stores nothing half, and resumes with the stream resynced', async () => {
    const base = device.backendUrl;
    const token = operatorToken(ws.dataDir, {});
    const stream = await operatorStream(base, token);
    const inputs = makeInputs(256, 2, 'realistic', 601);
    const cts = inputs.map((x) => device.classify(x));
    expect((await postTo(base, device, cts[0]!, 'before-0001')).status).toBe(201);
    await expect.poll(() => stream.events.map((e) => e.event), { timeout: 10_000 }).toEqual(['result']);

    execFileSync('bash', [SCRIPT, 'down', dir]);
    const refused = await postTo(base, device, cts[1]!, 'during-0001');
    expect(refused.status).toBe(503);
    expect(refused.body).toEqual({ error: { code: 'E_UNAVAILABLE', message: 'the database is unavailable; retry later (a result is stored once per idempotency key)' } });
    expect(refused.headers.get('retry-after')).toBe('1');
    for (const path of ['/api/v1/health', '/api/v1/results']) {
      const response = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } });
      expect(response.status, path).toBe(503);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('E_UNAVAILABLE');
    }
    // The instance is up: what needs no database still answers.
    expect((await fetch(`${base}/api/v1/nothing`)).status).toBe(404);
    expect((await fetch(`${base}/cockpit`)).status).toBe(200);

    execFileSync('bash', [SCRIPT, 'up', dir]);
    // The feed of results comes back first (its LISTEN connection reconnects, and every
    // stream is told to resync); a result decrypted before that would be covered by the
    // resync alone, not announced.
    await expect.poll(() => stream.events.map((e) => e.event), { timeout: 30_000 }).toEqual(['result', 'resync']);
    // The device retries with the same idempotency key until it gets its receipt.
    let retried = await postTo(base, device, cts[1]!, 'during-0001');
    for (let i = 0; retried.status === 503 && i < 100; i++) {
      await new Promise((done) => setTimeout(done, 100));
      retried = await postTo(base, device, cts[1]!, 'during-0001');
    }
    expect(retried.status).toBe(201);
    expect((await postTo(base, device, cts[1]!, 'during-0001')).status).toBe(200);
    const stored = await decrypted(ws.store);
    expect(stored.map((r) => [r.idempotencyKey, r.state, r.label])).toEqual([
      ['before-0001', 'decrypted', argmax(floatEvaluate(head, inputs[0]!))],
      ['during-0001', 'decrypted', argmax(floatEvaluate(head, inputs[1]!))],
    ]);
    // Then the stream announced the new one.
    await expect.poll(() => stream.events.map((e) => e.event), { timeout: 15_000 }).toEqual(['result', 'resync', 'result']);
    expect(stream.events[2]!.data).toMatchObject({ id: stored[1]!.id, state: 'decrypted' });
    expect(await ws.store.integrityCheck()).toBe('ok');
    stream.close();
  });
});
