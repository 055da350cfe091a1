/**
 * Ingest apart from decryption, end to end on every store engine: devices are answered
 * once their result is stored pending; decryption worker threads (piscina) decrypt each
 * result once, with the labels the synchronous path gave (server.test.ts: the same head
 * and inputs); a claim whose worker died is taken again; two instances on one store never
 * decrypt a result twice; a result that cannot be decrypted is marked failed.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecryptionAgent, type Decrypted, type Decryptor } from '../../src/backend/decrypt';
import { DecryptionPool } from '../../src/backend/decrypt-pool';
import { DecryptionLoop } from '../../src/backend/decryption-loop';
import { Backend } from '../../src/backend/server';
import { floatEvaluate } from '../../src/he';
import { readContainer, writeContainer } from '../../src/he/container';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import { addDevice, openWorkspace, operatorToken, signingKey, type Workspace } from '../../src/protect/workspace';
import { openStore } from '../../src/store/open';
import type { ResultRecord, Store } from '../../src/store/types';
import { argmax, makeHead, makeInputs } from '../he/helpers';
import { decrypted, protectHead } from './helpers';
import { testEngines } from './store-engines';

const head = makeHead([256, 64, 10], 'realistic', 404);
const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** A decryptor that counts each ciphertext it is given and holds every decryption until opened. */
class Gated implements Decryptor {
  readonly calls = new Map<string, number>();
  private release: () => void = () => undefined;
  private readonly opened = new Promise<void>((done) => (this.release = done));

  constructor(private readonly inner: Decryptor) {}

  get concurrency(): number {
    return this.inner.concurrency;
  }

  async decrypt(keyId: string, result: Uint8Array): Promise<Decrypted> {
    const key = sha(result);
    this.calls.set(key, (this.calls.get(key) ?? 0) + 1);
    await this.opened;
    return this.inner.decrypt(keyId, result);
  }

  open(): void {
    this.release();
  }

  dispose(): Promise<void> {
    return this.inner.dispose();
  }
}

describe.each(testEngines())('ingest apart from decryption on the $name store', (engine) => {
  let ws: Workspace;
  let location: string;
  let pool: DecryptionPool;
  let gated: Gated;
  let backend: Backend;
  let url: string;
  let device: NodeDevice;
  const announced: ResultRecord[] = [];

  beforeAll(async () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-ingest-'));
    location = await engine.location('ingest');
    ws = await openWorkspace(join(root, 'data'), {}, location);
    await protectHead(ws, head, 'test-head', root);
    pool = new DecryptionPool({ storeLocation: location, kek: ws.kek, threads: 2 });
    gated = new Gated(pool);
    backend = new Backend({ store: ws.store, decryption: gated, operatorToken: operatorToken(ws.dataDir, {}), staticDir: join(root, 'public'), pollMs: 20, instanceId: 'instance-a' });
    url = `http://127.0.0.1:${await backend.listen(0)}`;
    device = await NodeDevice.enroll(url, (await addDevice(ws, 'kiosk-1')).token);
    await device.load(await nodeSeal(), await fetchBundle(`${url}/models/test-head/v1/`, (await signingKey(ws)).publicKey));
    const stream = await fetch(`${url}/api/v1/results/stream`, { headers: { authorization: `Bearer ${operatorToken(ws.dataDir, {})}` } });
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
    void (async () => {
      let text = '';
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        text += chunk.value;
        for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
          const data = text.slice(0, end).split('\n').find((line) => line.startsWith('data: '));
          if (data) announced.push(JSON.parse(data.slice(6)) as ResultRecord);
          text = text.slice(end + 2);
        }
      }
    })().catch(() => undefined);
  });

  afterAll(async () => {
    device?.unload();
    await backend?.close();
    await pool?.dispose();
    await ws?.close();
  });

  const post = async (ciphertext: Uint8Array, key: string) => {
    const { body, headers } = await device.request(ciphertext, key);
    return device.post(body, headers);
  };

  it('acknowledges results before they are decrypted; worker threads then decrypt each once, with the synchronous path’s labels, and the stream announces it', async () => {
    const inputs = makeInputs(256, 8, 'realistic', 405);
    const ciphertexts = inputs.map((x) => device.classify(x));
    for (const [i, ct] of ciphertexts.entries()) expect((await post(ct, `frame-${i}-0001`)).status).toBe(201);
    // Every device has its receipt; nothing is decrypted yet.
    const waiting = await ws.store.listResults({ deviceId: device.deviceId });
    expect(waiting.map((r) => [r.state, r.label])).toEqual(inputs.map(() => ['pending', null]));
    expect(announced).toEqual([]);
    gated.open();
    const stored = await decrypted(ws.store, { deviceId: device.deviceId });
    expect(stored.map((r) => r.state)).toEqual(inputs.map(() => 'decrypted'));
    expect(stored.map((r) => r.label)).toEqual(inputs.map((x) => argmax(floatEvaluate(head, x))));
    expect(ciphertexts.map((ct) => gated.calls.get(sha(ct)))).toEqual(inputs.map(() => 1));
    await expect.poll(() => announced.length).toBe(inputs.length);
    expect(new Set(announced.map((r) => r.id))).toEqual(new Set(stored.map((r) => r.id)));
    expect(announced.every((r) => r.state === 'decrypted' && typeof r.label === 'number')).toBe(true);
  });

  it('moves a ciphertext with a buffer of its own to a worker thread, and copies one that is a view into a larger buffer', async () => {
    const { keyId } = (await ws.store.latestModelVersion('test-head'))!;
    const x = makeInputs(256, 1, 'realistic', 406)[0]!;
    const ciphertext = new Uint8Array(device.classify(x));
    const own = new Uint8Array(ciphertext);
    const larger = new Uint8Array(ciphertext.length + 16);
    larger.set(ciphertext, 8);
    const view = larger.subarray(8, 8 + ciphertext.length);
    const [moved, copied] = [await pool.decrypt(keyId, own), await pool.decrypt(keyId, view)];
    expect(own.byteLength).toBe(0);
    expect(sha(view)).toBe(sha(ciphertext));
    expect(Array.from(copied.scores)).toEqual(Array.from(moved.scores));
    expect(argmax(Array.from(moved.scores))).toBe(argmax(floatEvaluate(head, x)));
  });

  it('takes again a claim whose worker died, and decrypts that result once', async () => {
    const x = makeInputs(256, 1, 'realistic', 406)[0]!;
    await backend.decryptions.stop();
    expect((await post(device.classify(x), 'orphan-0001')).status).toBe(201);
    const dead = await ws.store.claimResults({ worker: 'dead-instance', limit: 10, claimTimeoutMs: 60_000, maxAttempts: 3 });
    expect(dead.claimed).toHaveLength(1);
    const rescued: ResultRecord[] = [];
    const rescuer = new DecryptionLoop({ store: ws.store, decryptor: pool, worker: 'rescuer', claimTimeoutMs: 300, pollMs: 20, onDone: (r) => rescued.push(r) });
    rescuer.start();
    await expect.poll(() => rescued.length, { timeout: 10_000 }).toBe(1);
    await rescuer.stop();
    backend.decryptions.start();
    expect(rescued[0]).toMatchObject({ id: dead.claimed[0]!.id, state: 'decrypted', label: argmax(floatEvaluate(head, x)) });
    await expect(ws.store.completeResult(dead.claimed[0]!.id, dead.claimed[0]!.attempt, { error: 'late' })).rejects.toMatchObject({ code: 'E_CONFLICT' });
  });

  it('marks failed, with the reason, a stored result that cannot be decrypted; the instance keeps serving', async () => {
    const ct = device.classify(makeInputs(256, 1, 'random', 407)[0]!);
    const { header, sections } = readContainer<object>(ct, 'result');
    const cut = writeContainer('result', header, [sections[0]!.subarray(0, sections[0]!.length - 100), ...sections.slice(1)]);
    expect((await post(cut, 'cut-inside-0001')).status).toBe(201);
    const x = makeInputs(256, 1, 'realistic', 408)[0]!;
    expect((await post(device.classify(x), 'after-cut-0001')).status).toBe(201);
    const stored = await decrypted(ws.store, { deviceId: device.deviceId });
    const [failed, after] = stored.slice(-2);
    expect(failed).toMatchObject({ idempotencyKey: 'cut-inside-0001', state: 'failed', label: null, error: expect.stringMatching(/^E_CIPHERTEXT: the encrypted result was refused \(E_[A-Z]+\): ./) });
    expect(after).toMatchObject({ idempotencyKey: 'after-cut-0001', state: 'decrypted', label: argmax(floatEvaluate(head, x)) });
    expect(gated.calls.get(sha(cut))).toBe(1);
    await expect.poll(() => announced.some((r) => r.id === failed!.id && r.state === 'failed')).toBe(true);
  });

  it('two instances on one store never decrypt a result twice', async () => {
    const other: Store = await openStore(location);
    const agent = new Gated(new DecryptionAgent(await nodeSeal(), other, ws.kek));
    agent.open();
    const second = new Backend({ store: other, decryption: agent, operatorToken: operatorToken(ws.dataDir, {}), pollMs: 20, instanceId: 'instance-b' });
    const secondUrl = `http://127.0.0.1:${await second.listen(0)}`;
    const inputs = makeInputs(256, 12, 'realistic', 409);
    const ciphertexts = inputs.map((x) => device.classify(x));
    const before = (await ws.store.listResults()).length;
    await Promise.all(
      ciphertexts.map(async (ct, i) => {
        const { body, headers } = await device.request(ct, `both-${i}-0001`);
        const response = await fetch(`${i % 2 === 0 ? url : secondUrl}/api/v1/inferences`, { method: 'POST', headers, body: Buffer.from(body) });
        expect(response.status).toBe(201);
      }),
    );
    const stored = (await decrypted(ws.store)).slice(before);
    expect(new Map(stored.map((r) => [r.idempotencyKey, r.label]))).toEqual(new Map(inputs.map((x, i) => [`both-${i}-0001`, argmax(floatEvaluate(head, x))])));
    expect(ciphertexts.map((ct) => (gated.calls.get(sha(ct)) ?? 0) + (agent.calls.get(sha(ct)) ?? 0))).toEqual(inputs.map(() => 1));
    await second.close();
    await agent.dispose();
    await other.close();
    expect(await ws.store.integrityCheck()).toBe('ok');
  });
});

describe('the decryption pool', () => {
  it('refuses a bad thread count, an in-memory store and a bad key-encryption key', () => {
    const kek = new Uint8Array(32);
    expect(() => new DecryptionPool({ storeLocation: 'x.db', kek, threads: 0 })).toThrow(/1 to 256 threads, got 0/);
    expect(() => new DecryptionPool({ storeLocation: 'x.db', kek, threads: 1.5 })).toThrow(/threads/);
    expect(() => new DecryptionPool({ storeLocation: ':memory:', kek, threads: 1 })).toThrow(/open the store themselves/);
    expect(() => new DecryptionPool({ storeLocation: 'x.db', kek: new Uint8Array(16), threads: 1 })).toThrow(/32 bytes/);
  });
});
