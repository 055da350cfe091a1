/**
 * The decryption loop with a stand-in decryptor, on every store engine: what it does when
 * the decryptor refuses a ciphertext, when it dies, and what it refuses to start with.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Decrypted, Decryptor } from '../../src/backend/decrypt';
import { DecryptionLoop } from '../../src/backend/decryption-loop';
import { HeError } from '../../src/he';
import type { ResultRecord, Store } from '../../src/store/types';
import { type TestEngine, testEngines } from './store-engines';

const sha = (text: string | Uint8Array) => createHash('sha256').update(text).digest('hex');

/** Decrypts a ciphertext to scores read from its bytes; refuses (HeError) one starting with 0xEE, and dies (a plain Error) on one starting with 0xDD. */
class StandIn implements Decryptor {
  readonly concurrency = 2;
  readonly calls = new Map<string, number>();
  async decrypt(_keyId: string, result: Uint8Array): Promise<Decrypted> {
    this.calls.set(sha(result), (this.calls.get(sha(result)) ?? 0) + 1);
    if (result[0] === 0xee) throw new HeError('E_CORRUPT', 'the ciphertext section does not load');
    if (result[0] === 0xdd) throw new Error('worker thread exited with code 1');
    return { scheme: 'bgv', scores: Float64Array.from(result.subarray(0, 4)), noiseBudgetBits: 20 };
  }
  async dispose(): Promise<void> {}
}

async function storeWithDevice(engine: TestEngine, location?: string): Promise<Store> {
  const store = await engine.open(location ?? (await engine.location('loop')));
  await store.addModelVersion(
    { modelId: 'm', keyId: 'k1', bundleDir: 'b', manifestSha256: sha('m'), outputs: 4, protectMetrics: {} },
    { keyId: 'k1', wrappedSecretKey: new Uint8Array(randomBytes(8)), deviceKeys: new Uint8Array(randomBytes(8)) },
  );
  await store.addDevice({ id: 'dev-1', name: 'Kiosk', tokenSha256: sha('token') });
  return store;
}

const accept = (store: Store, key: string, ciphertext: number[]) =>
  store.acceptResult({ deviceId: 'dev-1', modelId: 'm', version: 1, keyId: 'k1', idempotencyKey: key, bodySha256: sha(key), ciphertext: Uint8Array.from(ciphertext), receivedAt: new Date().toISOString(), receipt: {} });

describe.each(testEngines())('the decryption loop on the $name store', (engine) => {
  it('writes labels, marks a refused ciphertext failed at once, and retries one whose worker died until it gives up on it', async () => {
    const store = await storeWithDevice(engine);
    const decryptor = new StandIn();
    const done: ResultRecord[] = [];
    const lines: string[] = [];
    const loop = new DecryptionLoop({ store, decryptor, worker: 'w1', claimTimeoutMs: 300, maxAttempts: 2, pollMs: 10, onDone: (r) => done.push(r), log: (l) => lines.push(l) });
    await accept(store, 'good', [1, 9, 3, 2]);
    await accept(store, 'refused', [0xee, 1, 2, 3]);
    await accept(store, 'killer', [0xdd, 1, 2, 3]);
    loop.start();
    await expect.poll(() => done.length, { timeout: 5000 }).toBe(3);
    await loop.stop();
    const byKey = new Map(done.map((r) => [r.idempotencyKey, r]));
    expect(byKey.get('good')).toMatchObject({ state: 'decrypted', label: 1, scores: [1, 9, 3, 2], noiseBudgetBits: 20 });
    expect(byKey.get('refused')).toMatchObject({ state: 'failed', error: 'E_CIPHERTEXT: the encrypted result was refused (E_CORRUPT): the ciphertext section does not load' });
    expect(byKey.get('killer')).toMatchObject({ state: 'failed', error: expect.stringMatching(/^abandoned: claimed 2 times/) });
    expect([...decryptor.calls.values()].sort()).toEqual([1, 1, 2]);
    expect(lines.filter((l) => /not decrypted, left for another attempt: Error: worker thread exited/.test(l))).toHaveLength(2);
    expect((await store.listAudit()).filter((e) => e.event === 'inference.failed').map((e) => e.details.resultId)).toEqual(
      expect.arrayContaining([byKey.get('refused')!.id, byKey.get('killer')!.id]),
    );
    await store.close();
  });

  it('claims and writes results in batches, two loops on one store decrypting each result exactly once', async () => {
    const location = await engine.location('loop');
    const store = await storeWithDevice(engine, location);
    const other = await engine.open(location);
    const calls = { claims: [] as number[], writes: [] as number[] };
    const counting = (target: Store) =>
      new Proxy(target, {
        get: (t, name, receiver) => {
          const value = Reflect.get(t, name, receiver) as unknown;
          if (typeof value !== 'function') return value;
          return (...args: unknown[]) => {
            if (name === 'claimResults') calls.claims.push((args[0] as { limit: number }).limit);
            if (name === 'completeResults') calls.writes.push((args[0] as unknown[]).length);
            return (value as (...a: unknown[]) => unknown).apply(t, args);
          };
        },
      });
    const COUNT = 40;
    for (let i = 0; i < COUNT; i++) await accept(store, `frame-${i}`, [i % 4, i, 200, 7]);
    const decryptor = Object.assign(new StandIn(), { concurrency: 8 });
    const done: ResultRecord[] = [];
    const loops = [store, other].map((s, n) => new DecryptionLoop({ store: counting(s), decryptor, worker: `w${n}`, pollMs: 10, onDone: (r) => done.push(r) }));
    for (const loop of loops) loop.start();
    await expect.poll(() => done.length, { timeout: 10_000 }).toBe(COUNT);
    await Promise.all(loops.map((loop) => loop.stop()));
    expect(new Set(done.map((r) => r.id)).size).toBe(COUNT);
    expect([...decryptor.calls.values()]).toEqual(Array.from({ length: COUNT }, () => 1));
    expect((await store.listResults({ state: 'decrypted' })).map((r) => r.label)).toEqual(Array.from({ length: COUNT }, () => 2));
    // Every claim asks for at least half the decryptor's room, and writes carry several results.
    expect(Math.min(...calls.claims)).toBeGreaterThanOrEqual(4);
    expect(calls.writes.reduce((a, b) => a + b, 0)).toBe(COUNT);
    expect(calls.writes.length).toBeLessThan(COUNT / 2);
    await Promise.all([other.close(), store.close()]);
  });

  it('reads a model version once for a batch of results made for it', async () => {
    const store = await storeWithDevice(engine);
    let reads = 0;
    const counting = new Proxy(store, {
      get: (target, name, receiver) => {
        if (name === 'getModelVersion') reads++;
        const value = Reflect.get(target, name, receiver) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const done: ResultRecord[] = [];
    const loop = new DecryptionLoop({ store: counting, decryptor: Object.assign(new StandIn(), { concurrency: 8 }), worker: 'w1', pollMs: 10, onDone: (r) => done.push(r) });
    for (let i = 0; i < 5; i++) await accept(store, `frame-${i}`, [i, 9, 3, 2]);
    loop.start();
    await expect.poll(() => done.length).toBe(5);
    await loop.stop();
    expect(done.map((r) => r.label)).toEqual([1, 1, 1, 1, 1]);
    expect(reads).toBe(1);
    await store.close();
  });

  it('marks failed a result whose scores do not fit its model, and keeps going when the store is closed under it', async () => {
    const store = await storeWithDevice(engine);
    const done: ResultRecord[] = [];
    const lines: string[] = [];
    const loop = new DecryptionLoop({ store, decryptor: new StandIn(), worker: 'w1', pollMs: 10, onDone: (r) => done.push(r), log: (l) => lines.push(l) });
    await accept(store, 'short', [1, 2]);
    loop.start();
    await expect.poll(() => done.length).toBe(1);
    expect(done[0]).toMatchObject({ state: 'failed', error: "E_CIPHERTEXT: the encrypted result does not hold this model's scores (2 values, the model has 4 outputs)" });
    await store.close();
    await expect.poll(() => lines.some((l) => /cannot claim results \(retrying in 10 ms\): StoreError: claimResults: the store is closed/.test(l))).toBe(true);
    await loop.stop();
  });
});

describe('the decryption loop', () => {
  it('refuses bad options with a clear error', () => {
    const base = { store: {} as Store, decryptor: new StandIn(), worker: 'w', onDone: () => undefined };
    expect(() => new DecryptionLoop({ ...base, worker: '' })).toThrow(/worker must be 1–200 printable ASCII/);
    expect(() => new DecryptionLoop({ ...base, worker: 'has space' })).toThrow(/worker/);
    expect(() => new DecryptionLoop({ ...base, claimTimeoutMs: 0 })).toThrow(/claimTimeoutMs must be an integer from 1/);
    expect(() => new DecryptionLoop({ ...base, maxAttempts: 0 })).toThrow(/maxAttempts/);
    expect(() => new DecryptionLoop({ ...base, pollMs: 0.5 })).toThrow(/pollMs/);
    expect(() => new DecryptionLoop({ ...base, decryptor: Object.assign(new StandIn(), { concurrency: 0 }) })).toThrow(/concurrency must be an integer from 1/);
  });
});
