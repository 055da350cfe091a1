import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSY_TIMEOUT_MS,
  connectionSettings,
  MIGRATIONS,
  openSqliteStore,
  openSqliteStoreWithMigrations,
  SCHEMA_VERSION,
  type Migration,
} from '../../src/store/sqlite';
import type { NewResult, Store } from '../../src/store/types';
import { resultFor } from './store-writer';
import { expectStoreError, type TestEngine, testEngines } from './store-engines';

const WRITER = resolve(__dirname, 'store-writer.ts');

let dir: string;
let counter = 0;
const dbPath = (name = 'store') => join(dir, `${name}-${++counter}.sqlite`);
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
const fileSha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sealed-edge-store-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const jwk = (): JsonWebKey => ({
  kty: 'EC',
  crv: 'P-256',
  x: randomBytes(32).toString('base64url'),
  y: randomBytes(32).toString('base64url'),
  ext: true,
  key_ops: ['verify'],
});

function versionInput(modelId: string, keyId: string) {
  return {
    version: {
      modelId,
      keyId,
      bundleDir: `public/models/${modelId}`,
      manifestSha256: sha(`manifest ${keyId}`),
      outputs: 10,
      protectMetrics: { encryptSeconds: 12.5, bundleBytes: 26_214_400, peakRssBytes: 1.5e9 },
    },
    keyPair: { keyId, wrappedSecretKey: new Uint8Array(randomBytes(1000)), deviceKeys: new Uint8Array(randomBytes(5000)) },
  };
}

const engines = testEngines();
const sqlite = engines[0]!;

/** A store with one model version and one active device, ready for results. */
async function storeWithDevice(engine: TestEngine = sqlite) {
  const path = await engine.location();
  const store = await engine.open(path);
  const { version, keyPair } = versionInput('mnist', 'k1');
  await store.addModelVersion(version, keyPair);
  await store.addDevice({ id: 'dev-1', name: 'Kiosk 1', tokenSha256: sha('token-1') });
  await store.enrollDevice(sha('token-1'), jwk());
  return { store, path };
}

const result = (idempotencyKey: string, body = idempotencyKey, deviceId = 'dev-1'): NewResult => ({
  deviceId,
  modelId: 'mnist',
  version: 1,
  keyId: 'k1',
  idempotencyKey,
  bodySha256: sha(body),
  label: 3,
  scores: [0.1, -0.2, 0.3, 4.5, 0, 0, 0, 0, 0, 1e-9],
  receivedAt: new Date().toISOString(),
  receipt: { idempotencyKey, accepted: true },
});

describe('opening and migrations', () => {
  it('applies the migrations once, records them and turns WAL on', async () => {
    const path = dbPath();
    const store = await openSqliteStore(path);
    expect(await store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBe(MIGRATIONS.length);
    await store.close();

    const raw = new Database(path, { readonly: true });
    const rows = raw.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all() as Array<{
      version: number;
      name: string;
      applied_at: string;
    }>;
    expect(rows.map((r) => [r.version, r.name])).toEqual(MIGRATIONS.map((m) => [m.version, m.name]));
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    const tables = (raw.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>).map(
      (t) => t.name,
    );
    for (const t of ['models', 'model_versions', 'key_pairs', 'signing_keys', 'devices', 'results', 'audit_events', 'schema_migrations']) {
      expect(tables).toContain(t);
    }
    raw.close();

    // Reopening an up-to-date database applies nothing.
    const again = await openSqliteStore(path);
    expect(await again.schemaVersion()).toBe(SCHEMA_VERSION);
    await again.close();
    const raw2 = new Database(path, { readonly: true });
    const rows2 = raw2.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all();
    raw2.close();
    expect(rows2).toEqual(rows);
  });

  it('sets WAL, synchronous = NORMAL (the store fsyncs the WAL itself: store-durable.test.ts), foreign keys and a busy timeout on its connection', async () => {
    const store = await openSqliteStore(dbPath());
    expect(await connectionSettings(store)).toEqual({ journalMode: 'wal', synchronous: 1, foreignKeys: 1, busyTimeout: BUSY_TIMEOUT_MS });
    await store.close();
    // Foreign keys are enforced: a result for an unknown device is refused, not stored.
    const { store: s2 } = await storeWithDevice();
    await expectStoreError(s2.recordResult(result('k', 'k', 'nobody')), 'E_NOT_FOUND');
    await s2.close();
  });

  it('refuses a database from a newer schema without modifying it', async () => {
    const path = dbPath();
    const store = await openSqliteStore(path);
    await store.addDevice({ id: 'd', name: 'd', tokenSha256: sha('t') });
    await store.close();
    const raw = new Database(path);
    raw.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
      SCHEMA_VERSION + 1,
      'from the future',
      new Date().toISOString(),
    );
    raw.close();
    const before = fileSha(path);
    const filesBefore = readdirSync(dir).filter((f) => f.startsWith(path.split('/').pop()!)).sort();

    const error = await expectStoreError(openSqliteStore(path), 'E_SCHEMA');
    expect(error.message).toMatch(/newer/);
    expect(fileSha(path)).toBe(before);
    expect(readdirSync(dir).filter((f) => f.startsWith(path.split('/').pop()!)).sort()).toEqual(filesBefore);
    const check = new Database(path, { readonly: true });
    expect(check.prepare('SELECT max(version) AS v FROM schema_migrations').get()).toEqual({ v: SCHEMA_VERSION + 1 });
    check.close();
  });

  it('applies new migration steps in order, one transaction each, and rolls back a failing step', async () => {
    const path = dbPath();
    const m1: Migration = { version: 1, name: 'one', sql: 'CREATE TABLE a (x INTEGER NOT NULL) STRICT;' };
    const m2: Migration = { version: 2, name: 'two', sql: 'CREATE TABLE b (y TEXT NOT NULL) STRICT; INSERT INTO a VALUES (1);' };
    const bad: Migration = { version: 3, name: 'bad', sql: 'CREATE TABLE c (z INTEGER); INSERT INTO nowhere VALUES (1);' };

    const s1 = await openSqliteStoreWithMigrations(path, [m1]);
    expect(await s1.schemaVersion()).toBe(1);
    await s1.close();
    const s2 = await openSqliteStoreWithMigrations(path, [m1, m2]);
    expect(await s2.schemaVersion()).toBe(2);
    await s2.close();
    const s2again = await openSqliteStoreWithMigrations(path, [m1, m2]);
    await s2again.close();
    await expectStoreError(openSqliteStoreWithMigrations(path, [m1, m2, bad]), 'E_OPEN');

    const raw = new Database(path, { readonly: true });
    expect(raw.prepare('SELECT count(*) AS n FROM a').get()).toEqual({ n: 1 }); // m2 ran once
    expect(raw.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'c'").get()).toEqual({ n: 0 });
    expect(raw.prepare('SELECT max(version) AS v FROM schema_migrations').get()).toEqual({ v: 2 });
    raw.close();

    // A database whose recorded steps differ from the code's is refused.
    await expectStoreError(openSqliteStoreWithMigrations(path, [m1, { ...m2, name: 'another two' }]), 'E_SCHEMA');
  });

  it('migrates a database created by schema 1, keeping every row; its results have no noise budget and no flag', async () => {
    const path = dbPath('schema-1');
    const previous = MIGRATIONS.slice(0, 1);
    const old = await openSqliteStoreWithMigrations(path, previous);
    expect(await old.schemaVersion()).toBe(1);
    const { version, keyPair } = versionInput('mnist', 'k1');
    await old.addModelVersion(version, keyPair);
    await old.addDevice({ id: 'dev-1', name: 'Kiosk 1', tokenSha256: sha('token-1') });
    await old.enrollDevice(sha('token-1'), jwk());
    await old.audit('owner', 'model.protected', { modelId: 'mnist' });
    await old.close();
    // Results as schema 1 stored them, with its columns: this code's store no longer writes that shape.
    const raw = new Database(path);
    const insert = raw.prepare(
      `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const olds = ['old-1', 'old-2', 'old-3'].map((key) => result(key));
    for (const r of olds) insert.run(r.deviceId, r.modelId, r.version, r.keyId, r.idempotencyKey, r.bodySha256, r.label, JSON.stringify(r.scores), r.receivedAt, JSON.stringify(r.receipt));
    raw.close();

    const store = await openSqliteStore(path);
    expect(await store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBe(7);
    expect((await store.listResults()).map(({ id, ...r }) => [id, r])).toEqual(
      olds.map((r, i) => [i + 1, { ...r, state: 'decrypted', noiseBudgetBits: null, rangeFlag: null, capturedAt: null, decryptedAt: r.receivedAt, error: null }]),
    );
    expect(await store.getKeyPair('k1')).toMatchObject({ modelId: 'mnist', deviceKeys: keyPair.deviceKeys });
    expect((await store.getDevice('dev-1'))?.status).toBe('active');
    expect((await store.listAudit()).map((e) => e.event)).toEqual(['model.protected']);
    // An old result is still recognized by its idempotency key; new results record a budget (BGV) or none (CKKS).
    expect((await store.recordResult(result('old-2'))).kind).toBe('replayed');
    expect((await store.recordResult({ ...result('bgv-1'), noiseBudgetBits: 17 })).result).toMatchObject({ id: 4, noiseBudgetBits: 17 });
    expect((await store.recordResult({ ...result('ckks-1'), noiseBudgetBits: null })).result).toMatchObject({ id: 5, noiseBudgetBits: null });
    expect((await store.recordResult(result('ckks-2'))).result.noiseBudgetBits).toBeNull();
    expect(await store.integrityCheck()).toBe('ok');
    await store.close();

    const check = new Database(path, { readonly: true });
    expect(check.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all()).toEqual([
      { version: 1, name: 'initial schema' },
      { version: 2, name: 'result noise budget' },
      { version: 3, name: 'result range flag' },
      { version: 4, name: 'results pending decryption' },
      { version: 5, name: 'device rate buckets' },
      { version: 6, name: 'result capture time' },
      { version: 7, name: 'result ciphertexts apart' },
    ]);
    expect(check.prepare('SELECT count(*) AS n FROM results').get()).toEqual({ n: 6 });
    check.close();
    // The column keeps its constraint, and results stay append-only.
    const writer = new Database(path);
    expect(() =>
      writer
        .prepare(
          "INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, noise_budget_bits, received_at, receipt, state, attempts, decrypted_at) VALUES ('dev-1', 'mnist', 1, 'k1', 'raw', ?, 0, '[]', -3, 'now', '{}', 'decrypted', 0, 'now')",
        )
        .run(sha('raw')),
    ).toThrow(/CHECK constraint/);
    expect(() => writer.prepare('UPDATE results SET noise_budget_bits = 1 WHERE id = 1').run()).toThrow(/never modified/);
    writer.close();
  });

  it('migrates a database of schema 2 to the range flag: every row keeps its id, label and noise budget; the rebuilt table keeps its rules', async () => {
    const path = dbPath('schema-2');
    const old = await openSqliteStoreWithMigrations(path, MIGRATIONS.slice(0, 2));
    expect(await old.schemaVersion()).toBe(2);
    const { version, keyPair } = versionInput('mnist', 'k1');
    await old.addModelVersion(version, keyPair);
    await old.addDevice({ id: 'dev-1', name: 'Kiosk 1', tokenSha256: sha('token-1') });
    await old.enrollDevice(sha('token-1'), jwk());
    await old.close();
    // Results as schema 2 stored them (a label always, a noise budget for BGV); the last is
    // deleted so that the id counter runs ahead of the rows, as AUTOINCREMENT allows.
    const raw = new Database(path);
    const insert = raw.prepare(
      `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, noise_budget_bits, received_at, receipt)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const olds = [{ ...result('old-1'), noiseBudgetBits: 21 }, { ...result('old-2'), label: 0, noiseBudgetBits: null }, { ...result('old-3'), noiseBudgetBits: 0 }];
    for (const r of [...olds, result('deleted-4')]) {
      insert.run(r.deviceId, r.modelId, r.version, r.keyId, r.idempotencyKey, r.bodySha256, r.label, JSON.stringify(r.scores), r.noiseBudgetBits ?? null, r.receivedAt, JSON.stringify(r.receipt));
    }
    raw.prepare('DELETE FROM results WHERE id = 4').run();
    raw.close();

    const store = await openSqliteStore(path);
    expect(await store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect((await store.listResults()).map(({ id, ...r }) => [id, r])).toEqual(
      olds.map((r, i) => [i + 1, { ...r, state: 'decrypted', rangeFlag: null, capturedAt: null, decryptedAt: r.receivedAt, error: null }]),
    );
    expect((await store.recordResult(result('old-3'))).kind).toBe('replayed');
    const flagged = await store.recordResult({ ...result('flagged-1'), label: null, rangeFlag: 'out-of-range' });
    expect(flagged.result).toMatchObject({ id: 5, label: null, rangeFlag: 'out-of-range', noiseBudgetBits: null });
    expect((await store.recordResult(result('labelled-1'))).result).toMatchObject({ id: 6, label: 3, rangeFlag: null });
    expect(await store.integrityCheck()).toBe('ok');
    await store.close();

    const check = new Database(path);
    check.pragma('foreign_keys = ON');
    expect(check.prepare("SELECT name FROM sqlite_master WHERE tbl_name LIKE 'results%' AND type IN ('table', 'index', 'trigger') AND name NOT LIKE 'sqlite_%' ORDER BY name").all()).toEqual([
      { name: 'results' },
      { name: 'results_by_device' },
      { name: 'results_by_received' },
      { name: 'results_identity_fixed' },
      { name: 'results_no_delete' },
      { name: 'results_pending' },
      { name: 'results_written_once' },
    ]);
    expect(check.prepare("SELECT seq FROM sqlite_sequence WHERE name LIKE 'results%'").all()).toEqual([{ seq: 6 }]);
    expect(check.pragma('foreign_key_check')).toEqual([]);
    const row = (label: number | null, flag: string | null, device = 'dev-1', key = `raw-${label}-${flag}-${device}`) =>
      check
        .prepare(
          "INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, range_flag, received_at, receipt, state, attempts, decrypted_at) VALUES (?, 'mnist', 1, 'k1', ?, ?, ?, '[]', ?, 'now', '{}', 'decrypted', 0, 'now')",
        )
        .run(device, key, sha(key), label, flag);
    expect(() => row(null, null)).toThrow(/CHECK constraint/);
    expect(() => row(2, 'out-of-range')).toThrow(/CHECK constraint/);
    expect(() => row(null, 'overflow')).toThrow(/CHECK constraint/);
    expect(() => row(-1, null)).toThrow(/CHECK constraint/);
    expect(() => row(null, 'out-of-range', 'nobody')).toThrow(/FOREIGN KEY constraint/);
    expect(() => row(2, null, 'dev-1', 'old-1')).toThrow(/UNIQUE constraint/);
    expect(() => check.prepare('UPDATE results SET label = 1 WHERE id = 5').run()).toThrow(/never modified/);
    expect(() => check.prepare('DELETE FROM results WHERE id = 5').run()).toThrow(/never deleted/);
    expect(check.prepare('SELECT count(*) AS n FROM results').get()).toEqual({ n: 5 });
    check.close();
  });

  it('migrates a database of schema 6 to ciphertexts apart: every result keeps its row, every stored ciphertext its bytes, and pending ones are still claimed with them', async () => {
    const path = dbPath('schema-6');
    const old = await openSqliteStoreWithMigrations(path, MIGRATIONS.slice(0, 6));
    expect(await old.schemaVersion()).toBe(6);
    const { version, keyPair } = versionInput('mnist', 'k1');
    await old.addModelVersion(version, keyPair);
    await old.addDevice({ id: 'dev-1', name: 'Kiosk 1', tokenSha256: sha('token-1') });
    await old.enrollDevice(sha('token-1'), jwk());
    await old.close();
    // Rows as schema 6 stored them, the ciphertext in the row: pending (unclaimed, and
    // claimed once by a worker that died), decrypted and failed with their ciphertexts,
    // and one decrypted before it was stored (no ciphertext).
    const ciphertexts = [150_000, 115_000, 64, 1].map((n) => new Uint8Array(randomBytes(n)));
    const raw = new Database(path);
    const insert = raw.prepare(
      `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt, noise_budget_bits, range_flag,
                            state, ciphertext, claimed_by, claimed_at, attempts, decrypted_at, error, captured_at)
       VALUES ('dev-1', 'mnist', 1, 'k1', ?, ?, ?, ?, ?, '{"ok":true}', NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const at = (s: number) => `2026-11-28T10:00:0${s}.000Z`;
    insert.run('pending-1', sha('pending-1'), null, null, at(1), 'pending', ciphertexts[0], null, null, 0, null, null, at(0));
    insert.run('claimed-2', sha('claimed-2'), null, null, at(2), 'pending', ciphertexts[1], 'w-dead', at(3), 1, null, null, null);
    insert.run('decrypted-3', sha('decrypted-3'), 7, '[0.5,7]', at(3), 'decrypted', ciphertexts[2], 'w-1', at(4), 1, at(5), null, at(2));
    insert.run('failed-4', sha('failed-4'), null, null, at(4), 'failed', ciphertexts[3], 'w-1', at(5), 1, at(6), 'E_CIPHERTEXT: refused', null);
    insert.run('inline-5', sha('inline-5'), 2, '[2]', at(5), 'decrypted', null, null, null, 0, at(5), null, null);
    raw.close();
    const reader = await openSqliteStoreWithMigrations(path, MIGRATIONS.slice(0, 6));
    const before = await reader.listResults();
    await reader.close();
    expect(before.map((r) => [r.id, r.state])).toEqual([
      [1, 'pending'],
      [2, 'pending'],
      [3, 'decrypted'],
      [4, 'failed'],
      [5, 'decrypted'],
    ]);

    const store = await openSqliteStore(path);
    expect(await store.schemaVersion()).toBe(7);
    expect(await store.listResults()).toEqual(before);
    expect(await store.integrityCheck()).toBe('ok');
    const check = new Database(path, { readonly: true });
    const kept = check.prepare('SELECT result_id, ciphertext FROM result_ciphertexts ORDER BY result_id').all() as Array<{ result_id: number; ciphertext: Buffer }>;
    expect(kept.map((row) => row.result_id)).toEqual([1, 2, 3, 4]);
    kept.forEach((row, i) => expect(Buffer.compare(row.ciphertext, Buffer.from(ciphertexts[i]!)), `ciphertext of result ${row.result_id}`).toBe(0));
    expect(check.prepare("SELECT name FROM pragma_table_info('results') WHERE name = 'ciphertext'").all()).toEqual([]);
    check.close();

    // The pending results are claimed with their ciphertexts, byte for byte (the dead worker's claim has expired), and completed once.
    const claims = await store.claimResults({ worker: 'w-new', limit: 10, claimTimeoutMs: 0, maxAttempts: 3 });
    expect(claims.abandoned).toEqual([]);
    expect(claims.claimed.map((c) => [c.id, c.attempt, c.receivedAt])).toEqual([
      [1, 1, at(1)],
      [2, 2, at(2)],
    ]);
    claims.claimed.forEach((c, i) => expect(Buffer.compare(Buffer.from(c.ciphertext), Buffer.from(ciphertexts[i]!))).toBe(0));
    const written = await store.completeResults(claims.claimed.map((c) => ({ id: c.id, attempt: c.attempt, outcome: { label: c.ciphertext[0]! % 10, scores: [c.ciphertext[1]!] } })));
    expect(written.map((r) => 'state' in r && [r.id, r.state, r.label, r.scores, r.capturedAt])).toEqual([
      [1, 'decrypted', ciphertexts[0]![0]! % 10, [ciphertexts[0]![1]!], at(0)],
      [2, 'decrypted', ciphertexts[1]![0]! % 10, [ciphertexts[1]![1]!], null],
    ]);
    // A new result takes the next id, and its ciphertext is claimed back exactly.
    const fresh = new Uint8Array(randomBytes(1000));
    const accepted = await store.acceptResult({ deviceId: 'dev-1', modelId: 'mnist', version: 1, keyId: 'k1', idempotencyKey: 'new-6', bodySha256: sha('new-6'), ciphertext: fresh, receivedAt: at(9), receipt: {} });
    expect([accepted.kind, accepted.result.id]).toEqual(['created', 6]);
    const again = await store.claimResults({ worker: 'w-new', limit: 10, claimTimeoutMs: 60_000, maxAttempts: 3 });
    expect(again.claimed.map((c) => [c.id, Buffer.compare(Buffer.from(c.ciphertext), Buffer.from(fresh))])).toEqual([[6, 0]]);
    await store.close();

    // The rebuilt table keeps its indexes, triggers and counter; the ciphertexts are append-only and belong to a result.
    const writer = new Database(path);
    writer.pragma('foreign_keys = ON');
    expect(
      writer.prepare("SELECT name FROM sqlite_master WHERE tbl_name LIKE 'result%' AND type IN ('table', 'index', 'trigger') AND name NOT LIKE 'sqlite_%' ORDER BY name").all(),
    ).toEqual([
      { name: 'result_ciphertexts' },
      { name: 'result_ciphertexts_no_delete' },
      { name: 'result_ciphertexts_no_update' },
      { name: 'results' },
      { name: 'results_by_device' },
      { name: 'results_by_received' },
      { name: 'results_identity_fixed' },
      { name: 'results_no_delete' },
      { name: 'results_pending' },
      { name: 'results_written_once' },
    ]);
    expect(writer.prepare("SELECT seq FROM sqlite_sequence WHERE name LIKE 'result%'").all()).toEqual([{ seq: 6 }]);
    expect(writer.pragma('foreign_key_check')).toEqual([]);
    expect(() => writer.prepare("UPDATE result_ciphertexts SET ciphertext = x'00' WHERE result_id = 6").run()).toThrow(/result ciphertexts are never modified/);
    expect(() => writer.prepare('DELETE FROM result_ciphertexts WHERE result_id = 6').run()).toThrow(/result ciphertexts are never deleted/);
    expect(() => writer.prepare("INSERT INTO result_ciphertexts (result_id, ciphertext) VALUES (99, x'00')").run()).toThrow(/FOREIGN KEY constraint/);
    expect(() => writer.prepare("INSERT INTO result_ciphertexts (result_id, ciphertext) VALUES (5, x'')").run()).toThrow(/CHECK constraint/);
    expect(() => writer.prepare(`UPDATE results SET receipt = '{"changed":true}' WHERE id = 6`).run()).toThrow(/only a pending result is claimed and completed/);
    expect(() => writer.prepare("UPDATE results SET label = 1 WHERE id = 3").run()).toThrow(/never modified once decrypted/);
    expect(() => writer.prepare("UPDATE results SET state = 'decrypted' WHERE id = 6").run()).toThrow(/CHECK constraint/);
    writer.close();
  });

  it('gives clear errors for a missing directory, a foreign database and a non-database file', async () => {
    const missing = join(dir, 'no-such-dir', 'db.sqlite');
    const e = await expectStoreError(openSqliteStore(missing), 'E_OPEN');
    expect(e.message).toMatch(/does not exist/);
    expect(existsSync(join(dir, 'no-such-dir'))).toBe(false);

    const foreign = dbPath('foreign');
    const raw = new Database(foreign);
    raw.exec('CREATE TABLE stuff (x)');
    raw.close();
    const before = fileSha(foreign);
    await expectStoreError(openSqliteStore(foreign), 'E_SCHEMA');
    expect(fileSha(foreign)).toBe(before);

    const junk = dbPath('junk');
    writeFileSync(junk, randomBytes(4096));
    await expectStoreError(openSqliteStore(junk), 'E_OPEN');
    await expectStoreError(openSqliteStore(''), 'E_INVALID');
  });

  it('works in memory for tests', async () => {
    const store = await openSqliteStore(':memory:');
    expect(await store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(await store.integrityCheck()).toBe('ok');
    await store.close();
  });
});

describe.each(engines)('the $name store', (engine) => {
    it('keeps data across reopening', async () => {
      const { store, path } = await storeWithDevice(engine);
      await store.recordResult(result('a'));
      await store.audit('owner', 'model.protected', { modelId: 'mnist' });
      await store.close();
      const reopened = await engine.open(path);
      expect((await reopened.latestModelVersion('mnist'))?.version).toBe(1);
      expect((await reopened.getDevice('dev-1'))?.status).toBe('active');
      expect(await reopened.countResults()).toBe(1);
      expect((await reopened.listAudit()).map((e) => e.event)).toEqual(['model.protected']);
      await reopened.close();
    });


  describe('models, key pairs and signing keys', () => {
    let store: Store;
    beforeAll(async () => {
      store = await engine.open(await engine.location());
    });
    afterAll(async () => {
      await store.close();
    });

    it('numbers versions per model and keeps each key pair byte-exact', async () => {
      const a1 = versionInput('mnist', 'key-a1');
      const a2 = versionInput('mnist', 'key-a2');
      const b1 = versionInput('cifar', 'key-b1');
      const v1 = await store.addModelVersion(a1.version, a1.keyPair);
      const w1 = await store.addModelVersion(b1.version, b1.keyPair);
      const v2 = await store.addModelVersion(a2.version, a2.keyPair);
      expect([v1.version, v2.version, w1.version]).toEqual([1, 2, 1]);
      expect(v1).toMatchObject({ ...a1.version, version: 1, status: 'active' });
      expect(new Date(v1.createdAt).toISOString()).toBe(v1.createdAt);
      expect(await store.getModelVersion('mnist', 2)).toEqual(v2);
      expect(await store.getModelVersion('mnist', 3)).toBeNull();
      expect(await store.latestModelVersion('mnist')).toEqual(v2);
      expect(await store.latestModelVersion('nothing')).toBeNull();
      expect((await store.listModelVersions()).map((v) => `${v.modelId}@${v.version}`)).toEqual(['cifar@1', 'mnist@1', 'mnist@2']);
      expect((await store.listModelVersions('mnist')).map((v) => v.keyId)).toEqual(['key-a1', 'key-a2']);

      const pair = await store.getKeyPair('key-a2');
      expect(pair).not.toBeNull();
      expect(pair!.modelId).toBe('mnist');
      expect(pair!.wrappedSecretKey.constructor).toBe(Uint8Array);
      expect(pair!.deviceKeys.constructor).toBe(Uint8Array);
      expect(Buffer.from(pair!.wrappedSecretKey).equals(Buffer.from(a2.keyPair.wrappedSecretKey))).toBe(true);
      expect(Buffer.from(pair!.deviceKeys).equals(Buffer.from(a2.keyPair.deviceKeys))).toBe(true);
      expect(await store.getKeyPair('nope')).toBeNull();

      // A subarray view in is stored as exactly its bytes.
      const big = new Uint8Array(randomBytes(64));
      const c = versionInput('view', 'key-view');
      await store.addModelVersion(c.version, { ...c.keyPair, wrappedSecretKey: big.subarray(8, 40) });
      expect(Buffer.from((await store.getKeyPair('key-view'))!.wrappedSecretKey).equals(Buffer.from(big.subarray(8, 40)))).toBe(true);
    });

    it('refuses a reused key id without storing anything', async () => {
      const dup = versionInput('mnist', 'key-a1');
      await expectStoreError(store.addModelVersion(dup.version, dup.keyPair), 'E_CONFLICT');
      expect((await store.listModelVersions('mnist')).length).toBe(2);
      const other = versionInput('fresh', 'key-a1');
      await expectStoreError(store.addModelVersion(other.version, other.keyPair), 'E_CONFLICT');
      expect(await store.latestModelVersion('fresh')).toBeNull();
    });

    it('retires a version, idempotently, and refuses an unknown one', async () => {
      const retired = await store.retireModelVersion('mnist', 1);
      expect(retired.status).toBe('retired');
      expect((await store.getModelVersion('mnist', 1))?.status).toBe('retired');
      expect((await store.getModelVersion('mnist', 2))?.status).toBe('active');
      expect((await store.retireModelVersion('mnist', 1)).status).toBe('retired');
      await expectStoreError(store.retireModelVersion('mnist', 99), 'E_NOT_FOUND');
      await expectStoreError(store.retireModelVersion('ghost', 1), 'E_NOT_FOUND');
      // A retired version still keeps its key pair (old results stay decryptable).
      expect(await store.getKeyPair('key-a1')).not.toBeNull();
    });

    it('keeps signing keys; the newest is the active one', async () => {
      expect(await store.activeSigningKey()).toBeNull();
      const pub = new Uint8Array(randomBytes(32));
      const wrapped = new Uint8Array(randomBytes(80));
      const added = await store.addSigningKey({ id: 'sig-1', publicKey: pub, wrappedPrivateKey: wrapped });
      const active = await store.activeSigningKey();
      expect(active).toEqual(added);
      expect(active!.publicKey.constructor).toBe(Uint8Array);
      expect(Buffer.from(active!.publicKey).equals(Buffer.from(pub))).toBe(true);
      expect(Buffer.from(active!.wrappedPrivateKey).equals(Buffer.from(wrapped))).toBe(true);
      await expectStoreError(store.addSigningKey({ id: 'sig-1', publicKey: pub, wrappedPrivateKey: wrapped }), 'E_CONFLICT');
      await store.addSigningKey({ id: 'sig-2', publicKey: new Uint8Array(randomBytes(32)), wrappedPrivateKey: wrapped });
      expect((await store.activeSigningKey())?.id).toBe('sig-2');
      await expectStoreError(store.addSigningKey({ id: 'sig-3', publicKey: new Uint8Array(31), wrappedPrivateKey: wrapped }), 'E_INVALID');
    });

    it('refuses malformed model versions with E_INVALID and writes nothing', async () => {
      const good = versionInput('valid', 'key-valid');
      const cases: Array<[string, Parameters<Store['addModelVersion']>]> = [
        ['model id with a slash', [{ ...good.version, modelId: '../etc' }, good.keyPair]],
        ['empty model id', [{ ...good.version, modelId: '' }, good.keyPair]],
        ['manifest hash not hex', [{ ...good.version, manifestSha256: 'zz' }, good.keyPair]],
        ['uppercase manifest hash', [{ ...good.version, manifestSha256: sha('m').toUpperCase() }, good.keyPair]],
        ['zero outputs', [{ ...good.version, outputs: 0 }, good.keyPair]],
        ['fractional outputs', [{ ...good.version, outputs: 2.5 }, good.keyPair]],
        ['NaN metric', [{ ...good.version, protectMetrics: { t: Number.NaN } }, good.keyPair]],
        ['string metric', [{ ...good.version, protectMetrics: { t: '1' as unknown as number } }, good.keyPair]],
        ['empty bundle dir', [{ ...good.version, bundleDir: '' }, good.keyPair]],
        ['key ids differ', [good.version, { ...good.keyPair, keyId: 'other' }]],
        ['empty secret key', [good.version, { ...good.keyPair, wrappedSecretKey: new Uint8Array(0) }]],
        ['secret key not bytes', [good.version, { ...good.keyPair, wrappedSecretKey: 'secret' as unknown as Uint8Array }]],
        ['null version', [null as never, good.keyPair]],
      ];
      for (const [what, args] of cases) {
        await expect(store.addModelVersion(...args), what).rejects.toMatchObject({ name: 'StoreError', code: 'E_INVALID' });
      }
      expect(await store.latestModelVersion('valid')).toBeNull();
      expect(await store.getKeyPair('key-valid')).toBeNull();
      await expectStoreError(store.getModelVersion('mnist', 0), 'E_INVALID');
      await expectStoreError(store.getModelVersion('mnist', 1.5), 'E_INVALID');
      await expectStoreError(store.getKeyPair(42 as unknown as string), 'E_INVALID');
    });
  });

  describe('devices', () => {
    it('goes pending → active once per token → revoked', async () => {
      const store = await engine.open(await engine.location());
      const token = sha('one-time token');
      const pending = await store.addDevice({ id: 'kiosk-7', name: 'Lobby kiosk', tokenSha256: token });
      expect(pending).toMatchObject({ id: 'kiosk-7', name: 'Lobby kiosk', status: 'pending', enrolledAt: null, publicKeyJwk: null });
      expect(await store.enrollDevice(sha('wrong token'), jwk())).toBeNull();
      expect((await store.getDevice('kiosk-7'))?.status).toBe('pending');

      const key = jwk();
      const enrolled = await store.enrollDevice(token, key);
      expect(enrolled).toMatchObject({ id: 'kiosk-7', status: 'active', publicKeyJwk: key });
      expect(enrolled!.enrolledAt).not.toBeNull();
      expect(await store.getDevice('kiosk-7')).toEqual(enrolled);

      // The token works once: a second enrollment (another key) is refused and changes nothing.
      expect(await store.enrollDevice(token, jwk())).toBeNull();
      expect((await store.getDevice('kiosk-7'))?.publicKeyJwk).toEqual(key);
      // … and it can never be issued again.
      await expectStoreError(store.addDevice({ id: 'kiosk-8', name: 'Copy', tokenSha256: token }), 'E_CONFLICT');
      await expectStoreError(store.addDevice({ id: 'kiosk-7', name: 'Again', tokenSha256: sha('x') }), 'E_CONFLICT');

      const revoked = await store.revokeDevice('kiosk-7');
      expect(revoked.status).toBe('revoked');
      expect(revoked.publicKeyJwk).toEqual(key);
      expect((await store.revokeDevice('kiosk-7')).status).toBe('revoked');
      expect(await store.enrollDevice(token, jwk())).toBeNull();
      expect((await store.getDevice('kiosk-7'))?.status).toBe('revoked');
      await expectStoreError(store.revokeDevice('ghost'), 'E_NOT_FOUND');
      expect(await store.getDevice('ghost')).toBeNull();

      // A pending device revoked before enrollment can no longer enroll.
      await store.addDevice({ id: 'kiosk-9', name: 'Spare', tokenSha256: sha('spare') });
      await store.revokeDevice('kiosk-9');
      expect(await store.enrollDevice(sha('spare'), jwk())).toBeNull();

      expect((await store.listDevices()).map((d) => [d.id, d.status])).toEqual([
        ['kiosk-7', 'revoked'],
        ['kiosk-9', 'revoked'],
      ]);
      await store.close();
    });

    it('stores only public P-256 keys and refuses malformed devices', async () => {
      const store = await engine.open(await engine.location());
      await store.addDevice({ id: 'd1', name: 'd1', tokenSha256: sha('t1') });
      const priv = { ...jwk(), d: randomBytes(32).toString('base64url') };
      await expectStoreError(store.enrollDevice(sha('t1'), priv), 'E_INVALID');
      await expectStoreError(store.enrollDevice(sha('t1'), { kty: 'RSA', n: 'x', e: 'AQAB' }), 'E_INVALID');
      await expectStoreError(store.enrollDevice(sha('t1'), { kty: 'EC', crv: 'P-256', x: 'short', y: 'short' }), 'E_INVALID');
      await expectStoreError(store.enrollDevice(sha('t1'), null as unknown as JsonWebKey), 'E_INVALID');
      await expectStoreError(store.enrollDevice('not a hash', jwk()), 'E_INVALID');
      // None of that used the token.
      expect((await store.enrollDevice(sha('t1'), jwk()))?.status).toBe('active');

      await expectStoreError(store.addDevice({ id: '', name: 'x', tokenSha256: sha('a') }), 'E_INVALID');
      await expectStoreError(store.addDevice({ id: 'has space', name: 'x', tokenSha256: sha('b') }), 'E_INVALID');
      await expectStoreError(store.addDevice({ id: 'ok', name: '', tokenSha256: sha('c') }), 'E_INVALID');
      await expectStoreError(store.addDevice({ id: 'ok', name: 'line\nbreak', tokenSha256: sha('c') }), 'E_INVALID');
      await expectStoreError(store.addDevice({ id: 'ok', name: 'ok', tokenSha256: 'token-in-clear' }), 'E_INVALID');
      await expectStoreError(store.getDevice(undefined as unknown as string), 'E_INVALID');
      expect((await store.listDevices()).length).toBe(1);
      await store.close();
    });
  });

  describe('results', () => {
    it('creates, replays the same body and flags a different body as a conflict, storing one row', async () => {
      const { store } = await storeWithDevice(engine);
      const first = await store.recordResult(result('idem-1', 'body A'));
      expect(first.kind).toBe('created');
      expect(first.result).toMatchObject({ ...result('idem-1', 'body A'), receivedAt: first.result.receivedAt, id: 1 });

      const replay = await store.recordResult({ ...result('idem-1', 'body A'), receivedAt: new Date(Date.now() + 5000).toISOString() });
      expect(replay).toEqual({ kind: 'replayed', result: first.result });

      const conflict = await store.recordResult({ ...result('idem-1', 'body B'), label: 7 });
      expect(conflict).toEqual({ kind: 'conflict', result: first.result });
      expect(await store.countResults()).toBe(1);
      expect(await store.listResults()).toEqual([first.result]);

      // The same idempotency key from another device is another result.
      await store.addDevice({ id: 'dev-2', name: 'Kiosk 2', tokenSha256: sha('token-2') });
      await store.enrollDevice(sha('token-2'), jwk());
      expect((await store.recordResult(result('idem-1', 'body A', 'dev-2'))).kind).toBe('created');
      expect(await store.countResults()).toBe(2);
      await store.close();
    });

    it('lists results by ascending id with deviceId, afterId and limit', async () => {
      const { store } = await storeWithDevice(engine);
      await store.addDevice({ id: 'dev-2', name: 'Kiosk 2', tokenSha256: sha('token-2') });
      await store.enrollDevice(sha('token-2'), jwk());
      for (let i = 0; i < 10; i++) await store.recordResult(result(`r-${i}`, `r-${i}`, i % 2 === 0 ? 'dev-1' : 'dev-2'));

      const all = await store.listResults();
      expect(all.map((r) => r.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect((await store.listResults({ deviceId: 'dev-2' })).map((r) => r.idempotencyKey)).toEqual(['r-1', 'r-3', 'r-5', 'r-7', 'r-9']);
      expect((await store.listResults({ afterId: 7 })).map((r) => r.id)).toEqual([8, 9, 10]);
      expect((await store.listResults({ limit: 3 })).map((r) => r.id)).toEqual([1, 2, 3]);
      expect((await store.listResults({ deviceId: 'dev-1', afterId: 3, limit: 2 })).map((r) => r.id)).toEqual([5, 7]);
      expect(await store.listResults({ limit: 0 })).toEqual([]);
      expect(await store.listResults({ deviceId: 'nobody' })).toEqual([]);
      expect(await store.countResults()).toBe(10);

      await expectStoreError(store.listResults({ limit: -1 }), 'E_INVALID');
      await expectStoreError(store.listResults({ afterId: 1.5 }), 'E_INVALID');
      await expectStoreError(store.listResults({ deviceId: '' }), 'E_INVALID');
      await expectStoreError(store.listResults({ after: 3 } as never), 'E_INVALID');
      await store.close();
    });

    it('refuses bad results with a StoreError and stores nothing', async () => {
      const { store } = await storeWithDevice(engine);
      const good = result('good');
      const bad: Array<[string, NewResult]> = [
        ['unknown model version', { ...good, version: 2 }],
        ['unknown model', { ...good, modelId: 'ghost' }],
        ['key of another version', { ...good, keyId: 'k2' }],
        ['unknown device', { ...good, deviceId: 'ghost' }],
      ];
      for (const [what, r] of bad) {
        await expect(store.recordResult(r), what).rejects.toMatchObject({ name: 'StoreError', code: 'E_NOT_FOUND' });
      }
      const invalid: Array<[string, unknown]> = [
        ['label out of range', { ...good, label: 10 }],
        ['negative label', { ...good, label: -1 }],
        ['fractional label', { ...good, label: 1.5 }],
        ['NaN score', { ...good, scores: [1, Number.NaN] }],
        ['infinite score', { ...good, scores: [Number.POSITIVE_INFINITY] }],
        ['scores not an array', { ...good, scores: 'none' }],
        ['body hash not hex', { ...good, bodySha256: 'abc' }],
        ['empty idempotency key', { ...good, idempotencyKey: '' }],
        ['idempotency key too long', { ...good, idempotencyKey: 'x'.repeat(201) }],
        ['receivedAt not ISO', { ...good, receivedAt: 'yesterday' }],
        ['receipt not an object', { ...good, receipt: [1, 2] }],
        ['receipt with a bigint', { ...good, receipt: { n: 1n } }],
        ['receipt with a function', { ...good, receipt: { f: () => 1 } }],
        ['receipt with a cycle', { ...good, receipt: (() => { const o: Record<string, unknown> = {}; o.self = o; return o; })() }],
        ['version zero', { ...good, version: 0 }],
        ['negative noise budget', { ...good, noiseBudgetBits: -1 }],
        ['fractional noise budget', { ...good, noiseBudgetBits: 16.5 }],
        ['noise budget beyond any modulus', { ...good, noiseBudgetBits: 5000 }],
        ['noise budget as text', { ...good, noiseBudgetBits: '17' }],
        ['no label and no flag', { ...good, label: null }],
        ['a label and a flag', { ...good, rangeFlag: 'out-of-range' }],
        ['an unknown flag', { ...good, label: null, rangeFlag: 'overflow' }],
        ['a flag that is not text', { ...good, label: null, rangeFlag: 1 }],
        ['missing fields', { deviceId: 'dev-1' }],
        ['null', null],
      ];
      for (const [what, r] of invalid) {
        await expect(store.recordResult(r as NewResult), what).rejects.toMatchObject({ name: 'StoreError', code: 'E_INVALID' });
      }
      expect(await store.countResults()).toBe(0);
      // Undefined receipt members are simply not stored.
      const ok = await store.recordResult({ ...good, receipt: { a: 1, b: undefined } });
      expect(ok.result.receipt).toEqual({ a: 1 });
      expect(await store.countResults()).toBe(1);
      expect(await store.integrityCheck()).toBe('ok');
      await store.close();
    });

    it('stores a flagged result without a label, and replays it as it was stored', async () => {
      const { store } = await storeWithDevice(engine);
      const flagged = { ...result('flagged'), label: null, rangeFlag: 'out-of-range' as const };
      const created = await store.recordResult(flagged);
      expect(created).toMatchObject({ kind: 'created', result: { id: 1, label: null, rangeFlag: 'out-of-range', scores: flagged.scores } });
      expect(await store.recordResult(flagged)).toEqual({ kind: 'replayed', result: created.result });
      expect((await store.recordResult({ ...result('labelled'), rangeFlag: null })).result).toMatchObject({ label: 3, rangeFlag: null });
      expect((await store.listResults()).map((r) => [r.label, r.rangeFlag])).toEqual([
        [null, 'out-of-range'],
        [3, null],
      ]);
      await store.close();
    });

    it('stores exactly one row for 50 concurrent calls with the same idempotency key', async () => {
      const { store, path } = await storeWithDevice(engine);
      const same = await Promise.all(Array.from({ length: 50 }, () => store.recordResult(result('burst', 'one body'))));
      expect(same.filter((o) => o.kind === 'created').length).toBe(1);
      expect(same.filter((o) => o.kind === 'replayed').length).toBe(49);
      expect(new Set(same.map((o) => o.result.id)).size).toBe(1);

      const differing = await Promise.all(Array.from({ length: 50 }, (_, i) => store.recordResult(result('burst-2', `body ${i}`))));
      expect(differing.filter((o) => o.kind === 'created').length).toBe(1);
      expect(differing.filter((o) => o.kind === 'conflict').length).toBe(49);

      // Two connections to the same file, interleaved.
      const other = await engine.open(path);
      const mixed = await Promise.all(
        Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? store : other).recordResult(result('burst-3', 'same'))),
      );
      expect(mixed.filter((o) => o.kind === 'created').length).toBe(1);
      await other.close();

      expect(await store.countResults()).toBe(3);
      expect(await store.integrityCheck()).toBe('ok');
      await store.close();
    });
  });

  describe('audit events', () => {
    it('appends events and lists the latest ones oldest first', async () => {
      const store = await engine.open(await engine.location());
      await store.audit('owner', 'model.protected', { modelId: 'mnist', version: 1 });
      await store.audit('cli', 'device.added');
      await store.audit('kiosk-1', 'device.enrolled', { nested: { list: [1, 'two', null, true] } });
      const all = await store.listAudit();
      expect(all.map((e) => [e.id, e.actor, e.event])).toEqual([
        [1, 'owner', 'model.protected'],
        [2, 'cli', 'device.added'],
        [3, 'kiosk-1', 'device.enrolled'],
      ]);
      expect(all[0]!.details).toEqual({ modelId: 'mnist', version: 1 });
      expect(all[1]!.details).toEqual({});
      expect(all[2]!.details).toEqual({ nested: { list: [1, 'two', null, true] } });
      expect(new Date(all[0]!.at).toISOString()).toBe(all[0]!.at);
      expect((await store.listAudit({ limit: 2 })).map((e) => e.id)).toEqual([2, 3]);

      await expectStoreError(store.audit('', 'x'), 'E_INVALID');
      await expectStoreError(store.audit('a', ''), 'E_INVALID');
      await expectStoreError(store.audit('a', 'b', { n: Number.NaN }), 'E_INVALID');
      await expectStoreError(store.audit('a', 'b', 'details' as never), 'E_INVALID');
      await expectStoreError(store.listAudit({ limit: -5 }), 'E_INVALID');
      expect((await store.listAudit()).length).toBe(3);
      await store.close();
    });
  });

  describe('closing', () => {
    it('fails every method with E_CLOSED after close()', async () => {
      const store = await engine.open(await engine.location());
      await store.close();
      await store.close(); // idempotent
      await expectStoreError(store.schemaVersion(), 'E_CLOSED');
      await expectStoreError(store.listResults(), 'E_CLOSED');
      await expectStoreError(store.addDevice({ id: 'a', name: 'a', tokenSha256: sha('a') }), 'E_CLOSED');
      await expectStoreError(store.integrityCheck(), 'E_CLOSED');
    });
  });

  describe('processes', () => {
    function runWriter(args: string[]) {
      return spawn(process.execPath, ['--import', 'tsx', WRITER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    }

    it('leaves a sound database with only complete rows when a writer is killed mid-way', async () => {
      const { store, path } = await storeWithDevice(engine);
      await store.close();

      const child = runWriter([path, 'dev-1', 'mnist', 'k1', 'forever']);
      const acked: string[] = [];
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<NodeJS.Signals | number | null>((done) => child.on('exit', (code, signal) => done(signal ?? code)));
      await new Promise<void>((done, failed) => {
        let buffer = '';
        const target = 150 + Math.floor(Math.random() * 100);
        child.stdout.on('data', (d: Buffer) => {
          buffer += d.toString();
          const lines = buffer.split('\n');
          buffer = lines.pop()!;
          for (const line of lines) {
            const [, , key] = line.split(' ');
            if (key) acked.push(key);
          }
          if (acked.length >= target && !child.killed) {
            child.kill('SIGKILL');
            done();
          }
        });
        child.on('exit', () => failed(new Error(`writer exited early: ${stderr}`)));
      });
      expect(await exited).toBe('SIGKILL');

      const reopened = await engine.open(path);
      expect(await reopened.integrityCheck()).toBe('ok');
      const rows = await reopened.listResults();
      const keys = new Set(rows.map((r) => r.idempotencyKey));
      for (const key of acked) expect(keys.has(key), `acknowledged ${key} is stored`).toBe(true);
      expect(rows.length).toBeGreaterThanOrEqual(acked.length);
      // The writer is sequential: what is stored is a prefix of what it wrote, with no gaps.
      const indices = rows.map((r) => Number(r.idempotencyKey.split('-').pop())).sort((a, b) => a - b);
      expect(indices).toEqual(rows.map((_, i) => i));
      for (const row of rows) {
        const expected = resultFor('dev-1', 'mnist', 'k1', row.idempotencyKey);
        expect({ ...row, receivedAt: expected.receivedAt, decryptedAt: null, id: 0 }).toEqual({ ...expected, state: 'decrypted', rangeFlag: null, capturedAt: null, decryptedAt: null, error: null, id: 0 });
      }
      // The database is still writable after the crash.
      expect((await reopened.recordResult(result('after-crash'))).kind).toBe('created');
      await reopened.close();
    });

    it('stores each idempotency key once when two processes race on the same keys', async () => {
      const { store, path } = await storeWithDevice(engine);
      await store.close();
      const run = (child: ReturnType<typeof runWriter>) =>
        new Promise<Record<string, number>>((done, failed) => {
          let out = '';
          let err = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.stderr.on('data', (d: Buffer) => (err += d.toString()));
          child.on('exit', (code) => (code === 0 ? done(JSON.parse(out) as Record<string, number>) : failed(new Error(err))));
        });
      const outcomes = await Promise.all([run(runWriter([path, 'dev-1', 'mnist', 'k1', 'race', '60'])), run(runWriter([path, 'dev-1', 'mnist', 'k1', 'race', '60']))]);
      const created = outcomes.reduce((n, o) => n + (o.created ?? 0), 0);
      const replayed = outcomes.reduce((n, o) => n + (o.replayed ?? 0), 0);
      expect(created).toBe(60);
      expect(replayed).toBe(60);
      const reopened = await engine.open(path);
      expect(await reopened.countResults()).toBe(60);
      expect(await reopened.integrityCheck()).toBe('ok');
      await reopened.close();
    });
  });
});
