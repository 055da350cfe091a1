/**
 * What instances sharing one store rely on, on every engine: results announced when they
 * are written (PostgreSQL LISTEN/NOTIFY to every connection; SQLite to this process), read
 * back by id, and per-device rate buckets kept in the database.
 */
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { StoreError } from '../../src/store/errors';
import type { SqlStore } from '../../src/store/sql';
import type { RateLimit, ResultWatcher, Store } from '../../src/store/types';
import { expectStoreError, pendingResult, type TestEngine, testEngines } from './store-engines';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');
const CLAIM = { limit: 10, claimTimeoutMs: 60_000, maxAttempts: 3 };

async function storeWithDevice(engine: TestEngine): Promise<{ store: Store; location: string }> {
  const location = await engine.location('shared');
  const store = await engine.open(location);
  await store.addModelVersion(
    { modelId: 'mnist', keyId: 'k1', bundleDir: 'b', manifestSha256: sha('m'), outputs: 10, protectMetrics: {} },
    { keyId: 'k1', wrappedSecretKey: new Uint8Array(randomBytes(8)), deviceKeys: new Uint8Array(randomBytes(8)) },
  );
  for (const id of ['dev-1', 'dev-2']) {
    await store.addDevice({ id, name: id, tokenSha256: sha(id) });
    await store.enrollDevice(sha(id), { kty: 'EC', crv: 'P-256', x: randomBytes(32).toString('base64url'), y: randomBytes(32).toString('base64url') });
  }
  return { store, location };
}

/** A watcher that keeps what it hears. */
function listener(): ResultWatcher & { ids: number[]; events: string[] } {
  const heard = {
    ids: [] as number[],
    events: [] as string[],
    onResults: (ids: number[]) => heard.ids.push(...ids),
    onLost: () => heard.events.push('lost'),
    onResumed: () => heard.events.push('resumed'),
  };
  return heard;
}

describe.each(testEngines())('instances sharing the $name store', (engine) => {
  it('announces each result when it is written (decrypted, failed, abandoned or recorded), never while pending', async () => {
    const { store } = await storeWithDevice(engine);
    const heard = listener();
    const watch = await store.watchResults(heard);
    for (let i = 0; i < 4; i++) await store.acceptResult(pendingResult(`frame-${i}`));
    const { claimed } = await store.claimResults({ ...CLAIM, worker: 'w' });
    await store.completeResult(claimed[0]!.id, 1, { label: 3, scores: [0, 0, 0, 1] });
    await store.completeResult(claimed[1]!.id, 1, { error: 'E_CIPHERTEXT: refused' });
    // A refused write announces nothing.
    await expect(store.completeResult(claimed[0]!.id, 1, { label: 3, scores: [1] })).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await new Promise((done) => setTimeout(done, 5));
    const abandoned = await store.claimResults({ ...CLAIM, worker: 'w2', claimTimeoutMs: 1, maxAttempts: 1 });
    expect(abandoned.abandoned.map((r) => r.id)).toEqual([3, 4]);
    const recorded = await store.recordResult({ ...pendingResult('direct'), label: 1, scores: [0, 1] });
    await expect.poll(() => heard.ids).toEqual([1, 2, 3, 4, recorded.result.id]);
    expect(heard.events).toEqual([]);
    await watch.close();
    await watch.close();
    await store.acceptResult(pendingResult('after'));
    const [late] = (await store.claimResults({ ...CLAIM, worker: 'w3' })).claimed;
    await store.completeResult(late!.id, 1, { label: 0, scores: [1] });
    await new Promise((done) => setTimeout(done, 100));
    expect(heard.ids).toHaveLength(5);
    await store.close();
  });

  it('announces to watchers on other connections to the same database; a watcher that throws does not undo the write', async () => {
    const { store, location } = await storeWithDevice(engine);
    const other = await engine.open(location);
    const heard = listener();
    const watch = await other.watchResults(heard);
    const thrower = await store.watchResults({
      onResults: () => {
        throw new Error('a broken watcher');
      },
    });
    await store.acceptResult(pendingResult('frame-1'));
    const [claim] = (await store.claimResults({ ...CLAIM, worker: 'w' })).claimed;
    expect((await store.completeResult(claim!.id, 1, { label: 2, scores: [0, 0, 1] })).state).toBe('decrypted');
    await expect.poll(() => heard.ids).toEqual([claim!.id]);
    expect(await other.getResults(heard.ids)).toMatchObject([{ id: claim!.id, state: 'decrypted', label: 2 }]);
    await thrower.close();
    await watch.close();
    await other.close();
    await store.close();
  });

  it('writes a batch of statements all or nothing: a failing statement leaves nothing of those before it, and the connections go on serving', async () => {
    const { store } = await storeWithDevice(engine);
    const { engine: sql } = store as SqlStore;
    const event = (actor: string) => ({ sql: "INSERT INTO audit_events (at, actor, event, details) VALUES ('2026-01-01T00:00:00.000Z', ?, 'batch', '{}')", params: [actor] });
    const count = { sql: 'SELECT count(*) AS n FROM audit_events', params: [] };
    // The empty actor breaks a CHECK: the event before it is rolled back with it, every time (more times than the pool has connections).
    for (let i = 0; i < 12; i++) await expectStoreError(sql.batch('batch test', [event('first'), event(''), count]), 'E_INVALID', /^batch test: /);
    expect(await store.listAudit()).toEqual([]);
    expect(await sql.batch('batch test', [event('a'), event('b'), count])).toEqual([[], [], [{ n: 2 }]]);
    expect((await store.listAudit()).map((e) => e.actor)).toEqual(['a', 'b']);
    expect((await store.acceptResult(pendingResult('after'))).kind).toBe('created');
    // Batches called together (SQLite commits them as one group): each stands or falls alone.
    const together = await Promise.allSettled([sql.batch('one', [event('c')]), sql.batch('two', [event('x'), event('')]), sql.batch('three', [event('d'), count])]);
    expect(together.map((answer) => (answer.status === 'fulfilled' ? answer.value : (answer.reason as StoreError).message.split(':')[0]))).toEqual([[[]], 'two', [[], [{ n: 4 }]]]);
    expect((await store.listAudit()).map((e) => e.actor)).toEqual(['a', 'b', 'c', 'd']);
    await store.close();
    await expectStoreError(sql.batch('batch test', [count]), 'E_CLOSED');
  });

  it('accepts concurrent results as it would one at a time: one row and one ciphertext per key, replays and conflicts told apart, refusals storing nothing', async () => {
    const { store, location } = await storeWithDevice(engine);
    const calls = [
      ...Array.from({ length: 10 }, (_, i) => pendingResult(`c-${i}`)),
      ...Array.from({ length: 10 }, (_, i) => pendingResult(`c-${i}`)),
      ...Array.from({ length: 5 }, (_, i) => ({ ...pendingResult(`c-${i}`), bodySha256: sha(`another body ${i}`) })),
      ...Array.from({ length: 5 }, (_, i) => ({ ...pendingResult(`n-${i}`), deviceId: 'nobody' })),
    ];
    const answers = await Promise.allSettled(calls.map((call) => store.acceptResult(call)));
    const refused = answers.slice(25).map((answer) => answer.status === 'rejected' && (answer.reason as StoreError).message);
    expect(refused).toEqual(Array.from({ length: 5 }, () => 'acceptResult: no device "nobody"'));
    const outcomes = answers.slice(0, 25).map((answer, i) => {
      if (answer.status !== 'fulfilled') throw answer.reason;
      return { key: calls[i]!.idempotencyKey, body: calls[i]!.bodySha256, ...answer.value };
    });
    for (let i = 0; i < 10; i++) {
      const mine = outcomes.filter((o) => o.key === `c-${i}`);
      const created = mine.filter((o) => o.kind === 'created');
      expect(created, `c-${i}`).toHaveLength(1);
      for (const o of mine) {
        expect(o.result).toEqual(created[0]!.result);
        if (o !== created[0]) expect(o.kind).toBe(o.body === created[0]!.body ? 'replayed' : 'conflict');
      }
    }
    await store.close();
    const reopened = await engine.open(location);
    expect(await reopened.countResults()).toBe(10);
    const { claimed } = await reopened.claimResults({ ...CLAIM, limit: 100, worker: 'w' });
    expect(claimed.map((c) => Buffer.from(c.ciphertext).toString('hex')).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => Buffer.from(pendingResult(`c-${i}`).ciphertext).toString('hex')).sort(),
    );
    await reopened.close();
  });

  it('reads results by id, in id order, leaving out unknown ids; refuses bad ids', async () => {
    const { store } = await storeWithDevice(engine);
    for (let i = 0; i < 3; i++) await store.acceptResult(pendingResult(`frame-${i}`));
    expect((await store.getResults([3, 1, 99, 1])).map((r) => [r.id, r.idempotencyKey])).toEqual([
      [1, 'frame-0'],
      [3, 'frame-2'],
    ]);
    expect(await store.getResults([])).toEqual([]);
    await expectStoreError(store.getResults([0]), 'E_INVALID', /id must be an integer/);
    await expectStoreError(store.getResults([1.5]), 'E_INVALID', /id/);
    await expectStoreError(store.getResults('1' as unknown as number[]), 'E_INVALID', /ids must be an array/);
    await expectStoreError(store.getResults(Array.from({ length: 1001 }, (_, i) => i + 1)), 'E_INVALID', /at most 1000 ids/);
    await expectStoreError(store.watchResults({} as ResultWatcher), 'E_INVALID', /onResults/);
    await store.close();
  });

  it('keeps one token bucket per device for every connection: a burst, then refusals, then the refill', async () => {
    const { store, location } = await storeWithDevice(engine);
    const other = await engine.open(location);
    const limit = (nowMs: number): RateLimit => ({ burst: 3, perSecond: 2, nowMs });
    const t0 = 1_700_000_000_000;
    // Three at once, alternating connections as requests alternate instances.
    expect(await Promise.all([store.takeRateToken('dev-1', limit(t0)), other.takeRateToken('dev-1', limit(t0)), store.takeRateToken('dev-1', limit(t0))])).toEqual([true, true, true]);
    expect(await other.takeRateToken('dev-1', limit(t0))).toBe(false);
    expect(await store.takeRateToken('dev-1', limit(t0 + 100))).toBe(false);
    // Another device has its own bucket.
    expect(await other.takeRateToken('dev-2', limit(t0))).toBe(true);
    // 2 per second: one token after 500 ms (a refused request took nothing).
    expect(await other.takeRateToken('dev-1', limit(t0 + 500))).toBe(true);
    expect(await store.takeRateToken('dev-1', limit(t0 + 500))).toBe(false);
    // A clock behind the bucket's refills nothing (instances' clocks differ a little).
    expect(await store.takeRateToken('dev-1', limit(t0 - 60_000))).toBe(false);
    // Never above the burst, however long the device was quiet.
    const later = t0 + 3_600_000;
    const taken = [];
    for (let i = 0; i < 5; i++) taken.push(await (i % 2 ? other : store).takeRateToken('dev-1', limit(later)));
    expect(taken).toEqual([true, true, true, false, false]);
    // Fractional rates and bursts.
    expect(await store.takeRateToken('dev-2', { burst: 1.5, perSecond: 0.5, nowMs: later })).toBe(true);
    expect(await store.takeRateToken('dev-2', { burst: 1.5, perSecond: 0.5, nowMs: later })).toBe(false);
    expect(await store.takeRateToken('dev-2', { burst: 1.5, perSecond: 0.5, nowMs: later + 2000 })).toBe(true);
    await other.close();
    await store.close();
  });

  it('refuses bad rate-limit input and writes no bucket', async () => {
    const { store } = await storeWithDevice(engine);
    const ok = { burst: 2, perSecond: 1, nowMs: 1000 };
    await expectStoreError(store.takeRateToken('', ok), 'E_INVALID', /deviceId/);
    await expectStoreError(store.takeRateToken('dev-1', { ...ok, burst: 0.5 }), 'E_INVALID', /burst must be a finite number from 1/);
    await expectStoreError(store.takeRateToken('dev-1', { ...ok, perSecond: 0 }), 'E_INVALID', /perSecond must be a finite number from above 0/);
    await expectStoreError(store.takeRateToken('dev-1', { ...ok, perSecond: Number.POSITIVE_INFINITY }), 'E_INVALID', /perSecond/);
    await expectStoreError(store.takeRateToken('dev-1', { ...ok, nowMs: -1 }), 'E_INVALID', /nowMs/);
    await expectStoreError(store.takeRateToken('dev-1', { ...ok, nowMs: 1.5 }), 'E_INVALID', /nowMs/);
    await expectStoreError(store.takeRateToken('dev-1', { ...ok, extra: 1 } as RateLimit), 'E_INVALID', /unknown option 'extra'/);
    await expectStoreError(store.takeRateToken('dev-1', undefined as unknown as RateLimit), 'E_INVALID', /burst/);
    // A device the store does not know has no bucket.
    await expectStoreError(store.takeRateToken('nobody', ok), 'E_INVALID');
    // The bucket of dev-1 was never written: a full burst is there.
    expect([await store.takeRateToken('dev-1', ok), await store.takeRateToken('dev-1', ok), await store.takeRateToken('dev-1', ok)]).toEqual([true, true, false]);
    await store.close();
  });

  it('keeps the device’s capture time; filters results by device, model version and receipt time, either order; counts them for the cockpit', async () => {
    const { store } = await storeWithDevice(engine);
    await store.addModelVersion(
      { modelId: 'mnist', keyId: 'k2', bundleDir: 'b', manifestSha256: sha('m2'), outputs: 10, protectMetrics: {} },
      { keyId: 'k2', wrappedSecretKey: new Uint8Array(randomBytes(8)), deviceKeys: new Uint8Array(randomBytes(8)) },
    );
    const at = (minute: number, second = 0) => new Date(Date.UTC(2026, 2, 1, 12, minute, second)).toISOString();
    const add = (key: string, deviceId: string, version: number, receivedAt: string, capturedAt?: string | null) =>
      store.acceptResult({ ...pendingResult(key), deviceId, version, keyId: `k${version}`, receivedAt, capturedAt });
    const a = await add('a', 'dev-1', 1, at(0, 10), at(0, 1));
    await add('b', 'dev-2', 1, at(0, 20), null);
    await add('c', 'dev-1', 2, at(1, 5), at(0, 0));
    await add('d', 'dev-2', 2, at(2, 30));
    expect(a.result.capturedAt).toBe(at(0, 1));
    expect((await store.listResults()).map((r) => [r.idempotencyKey, r.capturedAt])).toEqual([
      ['a', at(0, 1)],
      ['b', null],
      ['c', at(0, 0)],
      ['d', null],
    ]);
    const keys = async (query: Parameters<Store['listResults']>[0]) => (await store.listResults(query)).map((r) => r.idempotencyKey);
    expect(await keys({ deviceId: 'dev-1' })).toEqual(['a', 'c']);
    expect(await keys({ modelId: 'mnist', version: 2 })).toEqual(['c', 'd']);
    expect(await keys({ since: at(0, 20), until: at(2, 30) })).toEqual(['b', 'c']);
    expect(await keys({ order: 'desc', limit: 3 })).toEqual(['d', 'c', 'b']);
    expect(await keys({ deviceId: 'dev-2', modelId: 'mnist', version: 1, order: 'desc' })).toEqual(['b']);
    await expectStoreError(store.listResults({ version: 1 }), 'E_INVALID', /version filters a model: give modelId too/);
    await expectStoreError(store.listResults({ since: '2026-03-01' }), 'E_INVALID', /since must be an ISO 8601 UTC timestamp/);
    await expectStoreError(store.listResults({ order: 'up' as 'asc' }), 'E_INVALID', /order must be 'asc' or 'desc'/);
    await expectStoreError(store.acceptResult({ ...pendingResult('bad-capture'), capturedAt: 'yesterday' }), 'E_INVALID', /capturedAt must be an ISO 8601 UTC timestamp/);

    // Decrypt two, fail one; one stays pending.
    const { claimed } = await store.claimResults({ ...CLAIM, worker: 'w', limit: 3 });
    await store.completeResult(claimed[0]!.id, 1, { label: 7, scores: [0] });
    await store.completeResult(claimed[1]!.id, 1, { label: null, scores: [1e6], rangeFlag: 'out-of-range' });
    await store.completeResult(claimed[2]!.id, 1, { error: 'E_CIPHERTEXT: refused' });
    const stats = await store.resultStats({ since: at(0), nowMs: Date.parse(at(2, 50)) });
    expect(stats).toEqual({
      since: at(0),
      outcomes: { '7': 1, 'out-of-range': 1, failed: 1, pending: 1 },
      devices: [
        { deviceId: 'dev-1', results: 2, lastMinute: 0, lastReceivedAt: at(1, 5), lastCapturedAt: at(0, 1) },
        { deviceId: 'dev-2', results: 2, lastMinute: 1, lastReceivedAt: at(2, 30), lastCapturedAt: null },
      ],
      timeline: [
        { minute: '2026-03-01T12:00', outcomes: { '7': 1, 'out-of-range': 1 } },
        { minute: '2026-03-01T12:01', outcomes: { failed: 1 } },
        { minute: '2026-03-01T12:02', outcomes: { pending: 1 } },
      ],
    });
    expect((await store.resultStats({ since: at(1) })).outcomes).toEqual({ failed: 1, pending: 1 });
    await expectStoreError(store.resultStats({ since: 'now' }), 'E_INVALID', /since/);
    await expectStoreError(store.resultStats({ since: at(0), nowMs: -5 }), 'E_INVALID', /nowMs/);
    await store.close();
  });

  it.runIf(engine.name === 'postgres')('PostgreSQL: stores in other schemas of the database are not heard; a lost feed says so, comes back and announces again', async () => {
    const { store, location } = await storeWithDevice(engine);
    const elsewhere = await storeWithDevice(engine);
    const heard = listener();
    const watch = await store.watchResults(heard);
    await elsewhere.store.acceptResult(pendingResult('elsewhere'));
    const [foreign] = (await elsewhere.store.claimResults({ ...CLAIM, worker: 'w' })).claimed;
    await elsewhere.store.completeResult(foreign!.id, 1, { label: 1, scores: [0, 1] });
    await elsewhere.store.close();

    // The server ends the listening connection (as a restart would).
    const admin = new pg.Client({ connectionString: location });
    await admin.connect();
    const killed = await admin.query("SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()");
    expect(killed.rows.length).toBeGreaterThanOrEqual(1);
    await expect.poll(() => heard.events, { timeout: 10_000 }).toEqual(['lost', 'resumed']);
    await store.acceptResult(pendingResult('after-resume'));
    const [claim] = (await store.claimResults({ ...CLAIM, worker: 'w' })).claimed;
    await store.completeResult(claim!.id, 1, { label: 4, scores: [0, 0, 0, 0, 1] });
    await expect.poll(() => heard.ids).toEqual([claim!.id]);
    await admin.end();
    await watch.close();
    await store.close();
  });
});
