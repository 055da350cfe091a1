import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { runCli } from '../node-run';
import { openStore } from '../../src/store/open';
import { MIGRATIONS, openPostgresStore, openPostgresStoreWithMigrations, SCHEMA_VERSION } from '../../src/store/postgres';
import type { Migration } from '../../src/store/sql';
import { expectStoreError, POSTGRES_URL, postgresDatabase, postgresSchema } from './store-engines';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

/** A port nothing listens on: bound, then closed. */
function closedPort(): number {
  const r = spawnSync(process.execPath, ['-e', "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return runCli(args, { env: { ...process.env, SEALED_EDGE_DATABASE_URL: '', SEALED_EDGE_KEK: '5a'.repeat(32), ...env }, timeout: 60_000 });
}

describe('database URLs', () => {
  it('refuses a malformed URL with E_INVALID and an unreachable or missing database with E_OPEN, hiding the password', async () => {
    await expectStoreError(openPostgresStore('postgres://'), 'E_INVALID');
    await expectStoreError(openPostgresStore('postgres://host-only'), 'E_INVALID');
    await expectStoreError(openPostgresStore('postgres://u:p@[::1/db'), 'E_INVALID');
    await expectStoreError(openPostgresStore('mysql://u@h/db'), 'E_INVALID');
    await expectStoreError(openStore('mysql://u@h/db'), 'E_INVALID');
    const port = closedPort();
    const error = await expectStoreError(openPostgresStore(`postgres://owner:hunter2@127.0.0.1:${port}/sealed`), 'E_OPEN');
    expect(error.message).toMatch(new RegExp(`cannot connect to the database postgres://owner:\\*\\*\\*@127.0.0.1:${port}/sealed: .*ECONNREFUSED`));
    expect(error.message).not.toMatch(/hunter2/);
  });

  it('serve, device and model stop at start-up with one clear line for a wrong or unreachable --store or SEALED_EDGE_DATABASE_URL', async () => {
    const data = join(mkdtempSync(join(tmpdir(), 'sealed-edge-store-cli-')), 'data');
    const port = closedPort();
    const unreachable = `postgres://owner:hunter2@127.0.0.1:${port}/sealed`;
    for (const args of [['serve', '--port', '0'], ['device', 'list'], ['model', 'list']]) {
      const r = await cli([...args, '--data', data, '--store', unreachable]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.err).toMatch(new RegExp(`^sealed-edge ${args[0]}: E_OPEN: cannot connect to the database postgres://owner:\\*\\*\\*@127\\.0\\.0\\.1:${port}/sealed: .*ECONNREFUSED.*\\n$`));
      expect(r.err).not.toMatch(/hunter2/);
    }
    expect(await cli(['serve', '--data', data, '--store', 'mysql://u@h/db'])).toMatchObject({ code: 1, err: expect.stringMatching(/^sealed-edge serve: E_INVALID: a mysql:\/\/ database is not supported/) });
    expect(await cli(['device', 'list', '--data', data, '--store', ''])).toMatchObject({ code: 1, err: expect.stringMatching(/E_INVALID: --store must be a postgres:\/\/ URL or a SQLite file path/) });
    expect(await cli(['device', 'list', '--data', data], { SEALED_EDGE_DATABASE_URL: 'sqlite.db' })).toMatchObject({ code: 1, err: expect.stringMatching(/E_INVALID: SEALED_EDGE_DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL/) });
    expect(await cli(['model', 'list', '--data', data], { SEALED_EDGE_DATABASE_URL: unreachable })).toMatchObject({ code: 1, err: expect.stringMatching(/E_OPEN: cannot connect/) });
  });
});

describe.skipIf(POSTGRES_URL === undefined)('the PostgreSQL engine', () => {
  const database = postgresDatabase();
  const query = async <T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query<T>(sql, params)).rows;
    } finally {
      await client.end();
    }
  };
  /** Every row of every table in the schema, as text: to show that nothing changed. */
  const snapshot = async (url: string): Promise<string> => {
    const tables = await query<{ t: string }>(url, "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1");
    const parts: string[] = [];
    for (const { t } of tables) parts.push(t, JSON.stringify(await query(url, `SELECT * FROM ${t} ORDER BY 1`)));
    return parts.join('\n');
  };

  it('applies its migrations once, records them, and reopens an up-to-date database without applying anything', async () => {
    const url = await postgresSchema(database.url());
    const store = await openPostgresStore(url);
    expect(await store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(await store.integrityCheck()).toBe('ok');
    await store.close();
    const rows = await query<{ version: number; name: string; applied_at: string }>(url, 'SELECT version, name, applied_at FROM schema_migrations ORDER BY version');
    expect(rows.map((r) => [r.version, r.name])).toEqual(MIGRATIONS.map((m) => [m.version, m.name]));
    const again = await openPostgresStore(url);
    await again.close();
    expect(await query(url, 'SELECT version, name, applied_at FROM schema_migrations ORDER BY version')).toEqual(rows);
  });

  it('applies each step once when several instances open a fresh database at the same time', async () => {
    const url = await postgresSchema(database.url());
    const stores = await Promise.all(Array.from({ length: 4 }, () => openPostgresStore(url)));
    for (const s of stores) expect(await s.schemaVersion()).toBe(SCHEMA_VERSION);
    await Promise.all(stores.map((s) => s.close()));
    expect(await query(url, 'SELECT count(*)::int AS n FROM schema_migrations')).toEqual([{ n: SCHEMA_VERSION }]);
  });

  it('refuses a database from a newer schema, or another application’s, without modifying it', async () => {
    const url = await postgresSchema(database.url());
    const store = await openPostgresStore(url);
    await store.addDevice({ id: 'd', name: 'd', tokenSha256: sha('t') });
    await store.close();
    await query(url, 'INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [SCHEMA_VERSION + 1, 'from the future', new Date().toISOString()]);
    const before = await snapshot(url);
    const error = await expectStoreError(openPostgresStore(url), 'E_SCHEMA');
    expect(error.message).toContain(`has schema version ${SCHEMA_VERSION + 1}, newer than the ${SCHEMA_VERSION} this version of sealed-edge knows: upgrade sealed-edge (the database was left unchanged)`);
    expect(await snapshot(url)).toBe(before);

    const foreign = await postgresSchema(database.url(), 'foreign');
    await query(foreign, 'CREATE TABLE stuff (x INTEGER)');
    const foreignBefore = await snapshot(foreign);
    expect((await expectStoreError(openPostgresStore(foreign), 'E_SCHEMA')).message).toMatch(/holds tables \(e\.g\. 'stuff'\).*not a sealed-edge database/);
    expect(await snapshot(foreign)).toBe(foreignBefore);
  });

  it('applies new steps in order, one transaction each, rolls back a failing step and refuses a history that differs', async () => {
    const url = await postgresSchema(database.url());
    const m1: Migration = { version: 1, name: 'one', sql: 'CREATE TABLE a (x INTEGER NOT NULL)' };
    const m2: Migration = { version: 2, name: 'two', sql: 'CREATE TABLE b (y TEXT NOT NULL); INSERT INTO a VALUES (1);' };
    const bad: Migration = { version: 3, name: 'bad', sql: 'CREATE TABLE c (z INTEGER); INSERT INTO nowhere VALUES (1);' };
    await (await openPostgresStoreWithMigrations(url, [m1])).close();
    await (await openPostgresStoreWithMigrations(url, [m1, m2])).close();
    await (await openPostgresStoreWithMigrations(url, [m1, m2])).close();
    await expectStoreError(openPostgresStoreWithMigrations(url, [m1, m2, bad]), 'E_OPEN');
    expect(await query(url, 'SELECT count(*)::int AS n FROM a')).toEqual([{ n: 1 }]);
    expect(await query(url, "SELECT to_regclass('c') AS c")).toEqual([{ c: null }]);
    expect(await query(url, 'SELECT max(version) AS v FROM schema_migrations')).toEqual([{ v: 2 }]);
    await expectStoreError(openPostgresStoreWithMigrations(url, [m1, { ...m2, name: 'another two' }]), 'E_SCHEMA');
  });

  it('enforces its rules in the database too: unique idempotency keys per device, append-only results and audit, forward-only devices, one-time tokens', async () => {
    const url = await postgresSchema(database.url());
    const store = await openPostgresStore(url);
    await store.addModelVersion(
      { modelId: 'mnist', keyId: 'k1', bundleDir: 'b', manifestSha256: sha('m'), outputs: 10, protectMetrics: {} },
      { keyId: 'k1', wrappedSecretKey: new Uint8Array(randomBytes(8)), deviceKeys: new Uint8Array(randomBytes(8)) },
    );
    await store.addDevice({ id: 'dev-1', name: 'Kiosk', tokenSha256: sha('token') });
    const jwk = { kty: 'EC', crv: 'P-256', x: randomBytes(32).toString('base64url'), y: randomBytes(32).toString('base64url') };
    expect(await store.enrollDevice(sha('token'), jwk)).toMatchObject({ status: 'active' });
    expect(await store.enrollDevice(sha('token'), jwk)).toBeNull();
    await store.recordResult({ deviceId: 'dev-1', modelId: 'mnist', version: 1, keyId: 'k1', idempotencyKey: 'i1', bodySha256: sha('b'), label: 1, scores: [0, 1], receivedAt: new Date().toISOString(), receipt: {} });
    await store.audit('owner', 'x');
    await store.close();

    const raw = new pg.Client({ connectionString: url });
    await raw.connect();
    const fails = async (sql: string, pattern: RegExp) => {
      await expect(raw.query(sql), sql).rejects.toThrow(pattern);
    };
    const insert = (key: string, label: string, flag: string) =>
      `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, range_flag, received_at, receipt, state, attempts, decrypted_at)
       VALUES ('dev-1', 'mnist', 1, 'k1', '${key}', '${sha(key)}', ${label}, '[]', ${flag}, 'now', '{}', 'decrypted', 0, 'now')`;
    await fails(insert('i1', '2', 'NULL'), /duplicate key value violates unique constraint/);
    await fails(insert('i2', 'NULL', 'NULL'), /check constraint/);
    await fails(insert('i3', '2', "'out-of-range'"), /check constraint/);
    await fails(insert('i4', 'NULL', "'overflow'"), /check constraint/);
    await fails("UPDATE results SET label = 2", /results are never modified/);
    await fails('DELETE FROM results', /results are never deleted/);
    await fails(
      "INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, scores, received_at, receipt, state, attempts) VALUES ('dev-1', 'mnist', 1, 'k1', 'p1', '" +
        sha('p1') +
        "', '[1]', 'now', '{}', 'pending', 0)",
      /check constraint/,
    );
    await fails("UPDATE audit_events SET actor = 'x'", /audit events are append-only/);
    await fails('DELETE FROM audit_events', /audit events are append-only/);
    await fails("UPDATE devices SET status = 'pending', enrolled_at = NULL, token_used_at = NULL, public_key_jwk = NULL", /a device status only moves forward/);
    await fails(`UPDATE devices SET token_sha256 = '${sha('other')}'`, /an enrollment token hash never changes/);
    await fails(`INSERT INTO devices (id, name, status, created_at, token_sha256) VALUES ('dev-2', 'again', 'pending', 'now', '${sha('token')}')`, /duplicate key value/);
    await fails("INSERT INTO audit_events (at, actor, event, details) VALUES ('now', 'a', 'b', '[1]')", /check constraint/);
    await fails("INSERT INTO audit_events (at, actor, event, details) VALUES ('now', 'a', 'b', 'not json')", /invalid input syntax for type json/);
    expect((await raw.query('SELECT count(*)::int AS n FROM results')).rows).toEqual([{ n: 1 }]);
    await raw.end();
  });

  it('migrates results stored before ingest was apart from decryption: each becomes decrypted at its receipt time, and stays written once', async () => {
    const url = await postgresSchema(database.url());
    const old = await openPostgresStoreWithMigrations(url, MIGRATIONS.slice(0, 1));
    await old.addModelVersion(
      { modelId: 'mnist', keyId: 'k1', bundleDir: 'b', manifestSha256: sha('m'), outputs: 10, protectMetrics: {} },
      { keyId: 'k1', wrappedSecretKey: new Uint8Array(randomBytes(8)), deviceKeys: new Uint8Array(randomBytes(8)) },
    );
    await old.addDevice({ id: 'dev-1', name: 'Kiosk', tokenSha256: sha('token') });
    await old.close();
    // Rows as step 1 stored them: this code's store no longer writes that shape.
    const at = '2026-01-02T03:04:05.678Z';
    await query(
      url,
      `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, range_flag, received_at, receipt)
       VALUES ('dev-1', 'mnist', 1, 'k1', 'old-1', $1, 4, '[1,2]', NULL, $2, '{}'), ('dev-1', 'mnist', 1, 'k1', 'old-2', $3, NULL, '[9]', 'out-of-range', $2, '{}')`,
      [sha('old-1'), at, sha('old-2')],
    );
    const store = await openPostgresStore(url);
    expect(await store.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBe(5);
    expect(await store.listResults()).toMatchObject([
      { id: 1, state: 'decrypted', label: 4, scores: [1, 2], rangeFlag: null, decryptedAt: at, error: null },
      { id: 2, state: 'decrypted', label: null, scores: [9], rangeFlag: 'out-of-range', decryptedAt: at, error: null },
    ]);
    expect((await store.claimResults({ worker: 'w', limit: 10, claimTimeoutMs: 0, maxAttempts: 3 })).claimed).toEqual([]);
    await expect(store.completeResult(1, 1, { error: 'x' })).rejects.toMatchObject({ code: 'E_CONFLICT' });
    expect(await store.integrityCheck()).toBe('ok');
    await store.close();
    await expect(query(url, 'UPDATE results SET error = NULL')).rejects.toThrow(/results are never modified once decrypted/);
    // The defaults that filled the old rows are gone: every new row says its state.
    expect(await query(url, "SELECT column_name, column_default FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'results' AND column_name IN ('state', 'attempts') ORDER BY 1")).toEqual([
      { column_name: 'attempts', column_default: null },
      { column_name: 'state', column_default: null },
    ]);
  });

  it('migrates a database of step 4 to ciphertexts apart: every result keeps its row, every stored ciphertext its bytes, and pending ones are still claimed with them', async () => {
    const url = await postgresSchema(database.url());
    const old = await openPostgresStoreWithMigrations(url, MIGRATIONS.slice(0, 4));
    await old.addModelVersion(
      { modelId: 'mnist', keyId: 'k1', bundleDir: 'b', manifestSha256: sha('m'), outputs: 10, protectMetrics: {} },
      { keyId: 'k1', wrappedSecretKey: new Uint8Array(randomBytes(8)), deviceKeys: new Uint8Array(randomBytes(8)) },
    );
    await old.addDevice({ id: 'dev-1', name: 'Kiosk', tokenSha256: sha('token') });
    await old.close();
    // Rows as step 4 stored them, the ciphertext in the row: pending (unclaimed, and claimed
    // once by a worker that died), decrypted and failed with their ciphertexts, and one
    // decrypted before it was stored (no ciphertext).
    const ciphertexts = [150_000, 115_000, 64, 1].map((n) => randomBytes(n));
    const at = (s: number) => `2026-11-28T10:00:0${s}.000Z`;
    const insert = (key: string, label: number | null, scores: string | null, state: string, ciphertext: Buffer | null, claimedBy: string | null, claimedAt: string | null, attempts: number, decryptedAt: string | null, error: string | null, capturedAt: string | null) =>
      query(
        url,
        `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt, state, ciphertext, claimed_by, claimed_at, attempts, decrypted_at, error, captured_at)
         VALUES ('dev-1', 'mnist', 1, 'k1', $1, $2, $3, $4, $5, '{"ok":true}', $6, $7, $8, $9, $10, $11, $12, $13)`,
        [key, sha(key), label, scores, at(Number(key.at(-1))), state, ciphertext, claimedBy, claimedAt, attempts, decryptedAt, error, capturedAt],
      );
    await insert('pending-1', null, null, 'pending', ciphertexts[0]!, null, null, 0, null, null, at(0));
    await insert('claimed-2', null, null, 'pending', ciphertexts[1]!, 'w-dead', at(3), 1, null, null, null);
    await insert('decrypted-3', 7, '[0.5,7]', 'decrypted', ciphertexts[2]!, 'w-1', at(4), 1, at(5), null, at(2));
    await insert('failed-4', null, null, 'failed', ciphertexts[3]!, 'w-1', at(5), 1, at(6), 'E_CIPHERTEXT: refused', null);
    await insert('inline-5', 2, '[2]', 'decrypted', null, null, null, 0, at(5), null, null);
    const reader = await openPostgresStoreWithMigrations(url, MIGRATIONS.slice(0, 4));
    const before = await reader.listResults();
    await reader.close();
    expect(before.map((r) => [r.id, r.state])).toEqual([
      [1, 'pending'],
      [2, 'pending'],
      [3, 'decrypted'],
      [4, 'failed'],
      [5, 'decrypted'],
    ]);

    const store = await openPostgresStore(url);
    expect(await store.schemaVersion()).toBe(5);
    expect(await store.listResults()).toEqual(before);
    expect(await store.integrityCheck()).toBe('ok');
    const kept = await query<{ result_id: string; ciphertext: Buffer }>(url, 'SELECT result_id::text, ciphertext FROM result_ciphertexts ORDER BY result_id');
    expect(kept.map((row) => row.result_id)).toEqual(['1', '2', '3', '4']);
    kept.forEach((row, i) => expect(Buffer.compare(row.ciphertext, ciphertexts[i]!), `ciphertext of result ${row.result_id}`).toBe(0));
    expect(await query(url, "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'results' AND column_name = 'ciphertext'")).toEqual([]);

    // The pending results are claimed with their ciphertexts, byte for byte (the dead worker's claim has expired), and completed once.
    const claims = await store.claimResults({ worker: 'w-new', limit: 10, claimTimeoutMs: 0, maxAttempts: 3 });
    expect(claims.abandoned).toEqual([]);
    expect(claims.claimed.map((c) => [c.id, c.attempt, c.receivedAt])).toEqual([
      [1, 1, at(1)],
      [2, 2, at(2)],
    ]);
    claims.claimed.forEach((c, i) => expect(Buffer.compare(Buffer.from(c.ciphertext), ciphertexts[i]!)).toBe(0));
    const written = await store.completeResults(claims.claimed.map((c) => ({ id: c.id, attempt: c.attempt, outcome: { label: c.ciphertext[0]! % 10, scores: [c.ciphertext[1]!] } })));
    expect(written.map((r) => 'state' in r && [r.id, r.state, r.label, r.scores, r.capturedAt])).toEqual([
      [1, 'decrypted', ciphertexts[0]![0]! % 10, [ciphertexts[0]![1]!], at(0)],
      [2, 'decrypted', ciphertexts[1]![0]! % 10, [ciphertexts[1]![1]!], null],
    ]);
    // A new result takes the next id, and its ciphertext is claimed back exactly.
    const fresh = randomBytes(1000);
    const accepted = await store.acceptResult({ deviceId: 'dev-1', modelId: 'mnist', version: 1, keyId: 'k1', idempotencyKey: 'new-6', bodySha256: sha('new-6'), ciphertext: fresh, receivedAt: at(9), receipt: {} });
    expect([accepted.kind, accepted.result.id]).toEqual(['created', 6]);
    const again = await store.claimResults({ worker: 'w-new', limit: 10, claimTimeoutMs: 60_000, maxAttempts: 3 });
    expect(again.claimed.map((c) => [c.id, Buffer.compare(Buffer.from(c.ciphertext), fresh)])).toEqual([[6, 0]]);
    await store.close();

    // The ciphertexts are append-only and belong to a result; a pending row still holds nothing decrypted.
    await expect(query(url, "UPDATE result_ciphertexts SET ciphertext = '\\x00' WHERE result_id = 6")).rejects.toThrow(/result ciphertexts are never modified/);
    await expect(query(url, 'DELETE FROM result_ciphertexts WHERE result_id = 6')).rejects.toThrow(/result ciphertexts are never deleted/);
    await expect(query(url, "INSERT INTO result_ciphertexts (result_id, ciphertext) VALUES (99, '\\x00')")).rejects.toThrow(/foreign key constraint/);
    await expect(query(url, "INSERT INTO result_ciphertexts (result_id, ciphertext) VALUES (5, '')")).rejects.toThrow(/check constraint/);
    await expect(query(url, `UPDATE results SET receipt = '{"changed":true}' WHERE id = 6`)).rejects.toThrow(/only a pending result is claimed and completed/);
    await expect(query(url, 'UPDATE results SET label = 1 WHERE id = 6')).rejects.toThrow(/check constraint/);
    await expect(query(url, 'UPDATE results SET label = 1 WHERE id = 3')).rejects.toThrow(/never modified once decrypted/);
  });

  it('fails a call with E_UNAVAILABLE, not the process, when the server cuts its connections, and the next call opens fresh ones', async () => {
    const url = await postgresSchema(database.url());
    const store = await openPostgresStore(url);
    await store.addDevice({ id: 'd1', name: 'd1', tokenSha256: sha('t1') });
    const name = new URL(database.url()).pathname.slice(1);
    await database.admin().query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    const first = await store.listDevices().then(
      () => 'ok',
      (e: { code?: string }) => e.code,
    );
    expect(['ok', 'E_UNAVAILABLE']).toContain(first);
    expect(await store.listDevices()).toHaveLength(1);
    await store.close();
    await expectStoreError(store.listDevices(), 'E_CLOSED');
  });

  it('device and model commands work against PostgreSQL with --store', async () => {
    return postgresSchema(database.url(), 'cli').then(async (url) => {
      const data = join(mkdtempSync(join(tmpdir(), 'sealed-edge-store-cli-')), 'data');
      const added = await cli(['device', 'add', 'kiosk-pg', '--data', data, '--store', url, '--json']);
      expect(added.err).toBe('');
      expect(JSON.parse(added.out)).toMatchObject({ name: 'kiosk-pg', token: expect.any(String) });
      const listed = await cli(['device', 'list', '--data', data, '--json'], { SEALED_EDGE_DATABASE_URL: url });
      expect(JSON.parse(listed.out)).toMatchObject([{ name: 'kiosk-pg', status: 'pending' }]);
      expect(await cli(['model', 'list', '--data', data, '--store', url])).toMatchObject({ code: 0, out: '' });
      expect(await cli(['model', 'retire', 'mnist', '1', '--data', data, '--store', url])).toMatchObject({ code: 1, err: expect.stringMatching(/E_NOT_FOUND/) });
    });
  });
});
