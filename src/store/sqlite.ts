/**
 * The SQLite engine of the Store (better-sqlite3, one connection per store): the embedded
 * default for one machine. The store's logic is shared with PostgreSQL (sql.ts); this
 * file holds what is SQLite's own.
 *
 * - WAL journal, `synchronous = NORMAL`, and the fsync done apart: after a COMMIT the
 *   connection goes on with the next call while the WAL file is fsynced on libuv's thread
 *   pool, and no method resolves (a read included) before an fsync begun after every
 *   commit it could see has completed. Durable as with `synchronous = FULL`, so the
 *   backend can acknowledge a result as soon as its call resolves; but FULL fsynced inside
 *   COMMIT, on the event loop (here 0.34 of a 0.86 ms commit per ingested result; more on
 *   a slower disk), and commits waiting for one fsync now share the next. What SQLite
 *   checkpoints into the database file it fsyncs itself before the WAL is reused.
 * - Foreign keys on, STRICT tables, CHECK constraints for every enum, hash and JSON column,
 *   and triggers that keep results and audit events append-only and device states moving
 *   forward only (pending → active → revoked, pending → revoked).
 * - Every write is one IMMEDIATE transaction (the write lock is taken up front, so two
 *   processes never deadlock upgrading a read lock); a busy connection waits up to
 *   `BUSY_TIMEOUT_MS` and then fails with E_BUSY. Batches (an ingested result each) that
 *   wait for the same turn share one transaction, a savepoint each (group commit).
 * - Versioned migrations (`MIGRATIONS`), each applied in its own transaction and recorded
 *   in `schema_migrations`. A database from a newer version of the code is refused before
 *   anything is written to it.
 *
 * better-sqlite3 is synchronous, but the shared logic awaits between statements: calls on
 * one store take turns (`exclusive`), so a transaction never interleaves with another
 * call on the same connection.
 */
import { statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { fail, StoreError, type StoreErrorCode } from './errors';
import {
  type AppliedMigration,
  checkApplied,
  checkMigrationList,
  type Engine,
  type Migration,
  type Queries,
  RESULT_STATE_CHECKS,
  RESULT_STATE_CHECKS_APART,
  RESULT_STATE_COLUMNS_APART,
  RESULT_STATE_COLUMNS,
  SqlStore,
  type Statement,
  tell,
} from './sql';
import type { ResultWatch, ResultWatcher, Store } from './types';
import { now } from './validate';

export { StoreError, type StoreErrorCode } from './errors';
export type { Migration } from './sql';

/** How long a statement waits for another connection's lock before failing with E_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;

const HEX64_CHECK = (column: string): string =>
  `length(${column}) = 64 AND ${column} NOT GLOB '*[^0-9a-f]*'`;
const JSON_CHECK = (column: string, type: 'object' | 'array'): string =>
  `json_valid(${column}) AND json_type(${column}) = '${type}'`;

/** The schema, in order. Append new steps; never edit a step that has shipped. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE models (
        id         TEXT PRIMARY KEY NOT NULL,
        created_at TEXT NOT NULL
      ) STRICT;

      CREATE TABLE key_pairs (
        id                 TEXT PRIMARY KEY NOT NULL,
        model_id           TEXT NOT NULL REFERENCES models (id),
        created_at         TEXT NOT NULL,
        wrapped_secret_key BLOB NOT NULL CHECK (length(wrapped_secret_key) > 0),
        device_keys        BLOB NOT NULL CHECK (length(device_keys) > 0),
        UNIQUE (id, model_id)
      ) STRICT;

      CREATE TABLE model_versions (
        model_id        TEXT NOT NULL REFERENCES models (id),
        version         INTEGER NOT NULL CHECK (version >= 1),
        key_id          TEXT NOT NULL UNIQUE,
        status          TEXT NOT NULL CHECK (status IN ('active', 'retired')),
        created_at      TEXT NOT NULL,
        retired_at      TEXT,
        bundle_dir      TEXT NOT NULL CHECK (length(bundle_dir) > 0),
        manifest_sha256 TEXT NOT NULL CHECK (${HEX64_CHECK('manifest_sha256')}),
        outputs         INTEGER NOT NULL CHECK (outputs >= 1),
        protect_metrics TEXT NOT NULL CHECK (${JSON_CHECK('protect_metrics', 'object')}),
        PRIMARY KEY (model_id, version),
        UNIQUE (model_id, version, key_id),
        FOREIGN KEY (key_id, model_id) REFERENCES key_pairs (id, model_id),
        CHECK ((status = 'retired') = (retired_at IS NOT NULL))
      ) STRICT;

      CREATE TABLE signing_keys (
        seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
        id                  TEXT NOT NULL UNIQUE,
        created_at          TEXT NOT NULL,
        public_key          BLOB NOT NULL CHECK (length(public_key) = 32),
        wrapped_private_key BLOB NOT NULL CHECK (length(wrapped_private_key) > 0)
      ) STRICT;

      CREATE TABLE devices (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        id             TEXT NOT NULL UNIQUE,
        name           TEXT NOT NULL CHECK (length(name) > 0),
        status         TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
        created_at     TEXT NOT NULL,
        -- The one-time enrollment token is kept only as its SHA-256, and stays in the row
        -- (UNIQUE) after use so that the same token can never be issued or used again.
        token_sha256   TEXT NOT NULL UNIQUE CHECK (${HEX64_CHECK('token_sha256')}),
        token_used_at  TEXT,
        enrolled_at    TEXT,
        revoked_at     TEXT,
        public_key_jwk TEXT CHECK (public_key_jwk IS NULL OR (${JSON_CHECK('public_key_jwk', 'object')})),
        CHECK ((enrolled_at IS NULL) = (public_key_jwk IS NULL)),
        CHECK ((enrolled_at IS NULL) = (token_used_at IS NULL)),
        CHECK (status <> 'pending' OR (enrolled_at IS NULL AND revoked_at IS NULL)),
        CHECK (status <> 'active' OR (enrolled_at IS NOT NULL AND revoked_at IS NULL)),
        CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
      ) STRICT;

      CREATE TRIGGER devices_status_forward_only
      BEFORE UPDATE OF status ON devices
      WHEN NEW.status <> OLD.status AND NOT (
        (OLD.status = 'pending' AND NEW.status IN ('active', 'revoked')) OR
        (OLD.status = 'active' AND NEW.status = 'revoked'))
      BEGIN
        SELECT RAISE(ABORT, 'a device status only moves forward');
      END;

      CREATE TRIGGER devices_token_immutable
      BEFORE UPDATE OF token_sha256 ON devices
      WHEN NEW.token_sha256 <> OLD.token_sha256
      BEGIN
        SELECT RAISE(ABORT, 'an enrollment token hash never changes');
      END;

      CREATE TABLE results (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id       TEXT NOT NULL REFERENCES devices (id),
        model_id        TEXT NOT NULL,
        version         INTEGER NOT NULL,
        key_id          TEXT NOT NULL,
        idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
        body_sha256     TEXT NOT NULL CHECK (${HEX64_CHECK('body_sha256')}),
        label           INTEGER NOT NULL CHECK (label >= 0),
        scores          TEXT NOT NULL CHECK (${JSON_CHECK('scores', 'array')}),
        received_at     TEXT NOT NULL,
        receipt         TEXT NOT NULL CHECK (${JSON_CHECK('receipt', 'object')}),
        UNIQUE (device_id, idempotency_key),
        FOREIGN KEY (model_id, version, key_id) REFERENCES model_versions (model_id, version, key_id)
      ) STRICT;

      CREATE INDEX results_by_device ON results (device_id, id);

      CREATE TRIGGER results_append_only
      BEFORE UPDATE ON results
      BEGIN
        SELECT RAISE(ABORT, 'results are never modified');
      END;

      CREATE TABLE audit_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL CHECK (length(actor) > 0),
        event   TEXT NOT NULL CHECK (length(event) > 0),
        details TEXT NOT NULL CHECK (${JSON_CHECK('details', 'object')})
      ) STRICT;

      CREATE TRIGGER audit_events_no_update
      BEFORE UPDATE ON audit_events
      BEGIN
        SELECT RAISE(ABORT, 'audit events are append-only');
      END;

      CREATE TRIGGER audit_events_no_delete
      BEFORE DELETE ON audit_events
      BEGIN
        SELECT RAISE(ABORT, 'audit events are append-only');
      END;
    `,
  },
  {
    version: 2,
    name: 'result noise budget',
    // BGV results carry the noise budget left when they were decrypted; CKKS results and
    // every row stored before this step have none (NULL).
    sql: `
      ALTER TABLE results ADD COLUMN noise_budget_bits INTEGER
        CHECK (noise_budget_bits IS NULL OR noise_budget_bits BETWEEN 0 AND 4096);
    `,
  },
  {
    version: 3,
    name: 'result range flag',
    // A CKKS result whose scores lie outside the range its model was calibrated on is
    // stored flagged and without a label: label becomes nullable, exactly when range_flag
    // is set. SQLite cannot drop a NOT NULL, so the table is rebuilt: created anew, every
    // row copied with its id (each keeps its label and gets no flag), the AUTOINCREMENT
    // counter carried over, the old table dropped and the new one renamed, with its index
    // and trigger recreated.
    sql: `
      CREATE TABLE results_next (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id         TEXT NOT NULL REFERENCES devices (id),
        model_id          TEXT NOT NULL,
        version           INTEGER NOT NULL,
        key_id            TEXT NOT NULL,
        idempotency_key   TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
        body_sha256       TEXT NOT NULL CHECK (${HEX64_CHECK('body_sha256')}),
        label             INTEGER CHECK (label IS NULL OR label >= 0),
        scores            TEXT NOT NULL CHECK (${JSON_CHECK('scores', 'array')}),
        received_at       TEXT NOT NULL,
        receipt           TEXT NOT NULL CHECK (${JSON_CHECK('receipt', 'object')}),
        noise_budget_bits INTEGER CHECK (noise_budget_bits IS NULL OR noise_budget_bits BETWEEN 0 AND 4096),
        range_flag        TEXT CHECK (range_flag IS NULL OR range_flag IN ('out-of-range')),
        UNIQUE (device_id, idempotency_key),
        FOREIGN KEY (model_id, version, key_id) REFERENCES model_versions (model_id, version, key_id),
        CHECK ((label IS NULL) = (range_flag IS NOT NULL))
      ) STRICT;

      INSERT INTO results_next (id, device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt, noise_budget_bits)
      SELECT id, device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt, noise_budget_bits
      FROM results ORDER BY id;

      DELETE FROM sqlite_sequence WHERE name = 'results_next';
      UPDATE sqlite_sequence SET name = 'results_next' WHERE name = 'results';
      DROP TABLE results;
      ALTER TABLE results_next RENAME TO results;

      CREATE INDEX results_by_device ON results (device_id, id);

      CREATE TRIGGER results_append_only
      BEFORE UPDATE ON results
      BEGIN
        SELECT RAISE(ABORT, 'results are never modified');
      END;
    `,
  },
  {
    version: 4,
    name: 'results pending decryption',
    // Ingest apart from decryption: a result is stored 'pending' with its ciphertext when
    // the device is answered; a decryption worker claims it (claimed_by, claimed_at,
    // attempts) and writes its label and scores once ('decrypted'), or why it could not
    // ('failed'). Rows stored before this step were decrypted before they were stored:
    // they become 'decrypted' at their received_at, without a ciphertext. scores becomes
    // nullable (none until decrypted), so the table is rebuilt as in step 3. The triggers
    // let a pending row be claimed and completed and nothing else: a decrypted or failed
    // row never changes, identity, ciphertext and receipt never change, no row is deleted.
    sql: `
      CREATE TABLE results_next (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id         TEXT NOT NULL REFERENCES devices (id),
        model_id          TEXT NOT NULL,
        version           INTEGER NOT NULL,
        key_id            TEXT NOT NULL,
        idempotency_key   TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
        body_sha256       TEXT NOT NULL CHECK (${HEX64_CHECK('body_sha256')}),
        label             INTEGER CHECK (label IS NULL OR label >= 0),
        scores            TEXT CHECK (scores IS NULL OR (${JSON_CHECK('scores', 'array')})),
        received_at       TEXT NOT NULL,
        receipt           TEXT NOT NULL CHECK (${JSON_CHECK('receipt', 'object')}),
        noise_budget_bits INTEGER CHECK (noise_budget_bits IS NULL OR noise_budget_bits BETWEEN 0 AND 4096),
        range_flag        TEXT CHECK (range_flag IS NULL OR range_flag IN ('out-of-range')),
        ${RESULT_STATE_COLUMNS('BLOB').join(',\n        ')},
        UNIQUE (device_id, idempotency_key),
        FOREIGN KEY (model_id, version, key_id) REFERENCES model_versions (model_id, version, key_id),
        ${RESULT_STATE_CHECKS.join(',\n        ')}
      ) STRICT;

      INSERT INTO results_next (id, device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt,
                                noise_budget_bits, range_flag, state, attempts, decrypted_at)
      SELECT id, device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt,
             noise_budget_bits, range_flag, 'decrypted', 0, received_at
      FROM results ORDER BY id;

      DELETE FROM sqlite_sequence WHERE name = 'results_next';
      UPDATE sqlite_sequence SET name = 'results_next' WHERE name = 'results';
      DROP TABLE results;
      ALTER TABLE results_next RENAME TO results;

      CREATE INDEX results_by_device ON results (device_id, id);
      CREATE INDEX results_pending ON results (id) WHERE state = 'pending';

      CREATE TRIGGER results_written_once
      BEFORE UPDATE ON results
      WHEN OLD.state <> 'pending'
      BEGIN
        SELECT RAISE(ABORT, 'results are never modified once decrypted (or failed)');
      END;

      CREATE TRIGGER results_identity_fixed
      BEFORE UPDATE ON results
      WHEN NEW.id IS NOT OLD.id OR NEW.device_id IS NOT OLD.device_id OR NEW.model_id IS NOT OLD.model_id
        OR NEW.version IS NOT OLD.version OR NEW.key_id IS NOT OLD.key_id OR NEW.idempotency_key IS NOT OLD.idempotency_key
        OR NEW.body_sha256 IS NOT OLD.body_sha256 OR NEW.received_at IS NOT OLD.received_at OR NEW.receipt IS NOT OLD.receipt
        OR NEW.ciphertext IS NOT OLD.ciphertext OR NEW.attempts < OLD.attempts
      BEGIN
        SELECT RAISE(ABORT, 'results are never modified: only a pending result is claimed and completed');
      END;

      CREATE TRIGGER results_no_delete
      BEFORE DELETE ON results
      BEGIN
        SELECT RAISE(ABORT, 'results are never deleted');
      END;
    `,
  },
  {
    version: 5,
    name: 'device rate buckets',
    // Per-device token buckets kept in the database (takeRateToken), as on PostgreSQL. The
    // backend on SQLite keeps its buckets in memory instead (one instance per database:
    // see Backend), so this table serves the same store API on both engines.
    sql: `
      CREATE TABLE device_rates (
        device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices (id),
        tokens    REAL NOT NULL,
        at_ms     INTEGER NOT NULL CHECK (at_ms >= 0)
      ) STRICT;
    `,
  },
  {
    version: 6,
    name: 'result capture time',
    // When the device captured the frame, by its clock (null when it did not say, and for
    // every row stored before): fixed like the rest of a result's identity. An index on
    // the receipt time for the cockpit's windows.
    sql: `
      ALTER TABLE results ADD COLUMN captured_at TEXT;
      CREATE INDEX results_by_received ON results (received_at);
      DROP TRIGGER results_identity_fixed;
      CREATE TRIGGER results_identity_fixed
      BEFORE UPDATE ON results
      WHEN NEW.id IS NOT OLD.id OR NEW.device_id IS NOT OLD.device_id OR NEW.model_id IS NOT OLD.model_id
        OR NEW.version IS NOT OLD.version OR NEW.key_id IS NOT OLD.key_id OR NEW.idempotency_key IS NOT OLD.idempotency_key
        OR NEW.body_sha256 IS NOT OLD.body_sha256 OR NEW.received_at IS NOT OLD.received_at OR NEW.receipt IS NOT OLD.receipt
        OR NEW.ciphertext IS NOT OLD.ciphertext OR NEW.attempts < OLD.attempts OR NEW.captured_at IS NOT OLD.captured_at
      BEGIN
        SELECT RAISE(ABORT, 'results are never modified: only a pending result is claimed and completed');
      END;
    `,
  },
  {
    version: 7,
    name: 'result ciphertexts apart',
    // SQLite rewrites a whole row, its overflow pages included, on every UPDATE: a pending
    // result's ~115 KB ciphertext was written again when the result was claimed and again
    // when it was completed. The ciphertext moves to a table of its own, written once with
    // the result (in the same transaction) and never changed or deleted after; claims and
    // completions rewrite only the small results row. The results table is rebuilt without
    // its ciphertext column (its CHECKs name it), as in step 4: every row copied with its
    // id, every stored ciphertext copied to result_ciphertexts under its result's id, the
    // AUTOINCREMENT counter carried over, the indexes and triggers recreated (the identity
    // trigger without the ciphertext, which no longer is in the row).
    sql: `
      CREATE TABLE results_next (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id         TEXT NOT NULL REFERENCES devices (id),
        model_id          TEXT NOT NULL,
        version           INTEGER NOT NULL,
        key_id            TEXT NOT NULL,
        idempotency_key   TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
        body_sha256       TEXT NOT NULL CHECK (${HEX64_CHECK('body_sha256')}),
        label             INTEGER CHECK (label IS NULL OR label >= 0),
        scores            TEXT CHECK (scores IS NULL OR (${JSON_CHECK('scores', 'array')})),
        received_at       TEXT NOT NULL,
        receipt           TEXT NOT NULL CHECK (${JSON_CHECK('receipt', 'object')}),
        noise_budget_bits INTEGER CHECK (noise_budget_bits IS NULL OR noise_budget_bits BETWEEN 0 AND 4096),
        range_flag        TEXT CHECK (range_flag IS NULL OR range_flag IN ('out-of-range')),
        ${RESULT_STATE_COLUMNS_APART.join(',\n        ')},
        captured_at       TEXT,
        UNIQUE (device_id, idempotency_key),
        FOREIGN KEY (model_id, version, key_id) REFERENCES model_versions (model_id, version, key_id),
        ${RESULT_STATE_CHECKS_APART.join(',\n        ')}
      ) STRICT;

      INSERT INTO results_next (id, device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt,
                                noise_budget_bits, range_flag, state, claimed_by, claimed_at, attempts, decrypted_at, error, captured_at)
      SELECT id, device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, received_at, receipt,
             noise_budget_bits, range_flag, state, claimed_by, claimed_at, attempts, decrypted_at, error, captured_at
      FROM results ORDER BY id;

      -- Created referring to results_next, which the rename below turns into results.
      CREATE TABLE result_ciphertexts (
        result_id  INTEGER PRIMARY KEY NOT NULL REFERENCES results_next (id),
        ciphertext BLOB NOT NULL CHECK (length(ciphertext) > 0)
      ) STRICT;

      INSERT INTO result_ciphertexts (result_id, ciphertext)
      SELECT id, ciphertext FROM results WHERE ciphertext IS NOT NULL ORDER BY id;

      DELETE FROM sqlite_sequence WHERE name = 'results_next';
      UPDATE sqlite_sequence SET name = 'results_next' WHERE name = 'results';
      DROP TABLE results;
      ALTER TABLE results_next RENAME TO results;

      CREATE INDEX results_by_device ON results (device_id, id);
      CREATE INDEX results_pending ON results (id) WHERE state = 'pending';
      CREATE INDEX results_by_received ON results (received_at);

      CREATE TRIGGER results_written_once
      BEFORE UPDATE ON results
      WHEN OLD.state <> 'pending'
      BEGIN
        SELECT RAISE(ABORT, 'results are never modified once decrypted (or failed)');
      END;

      CREATE TRIGGER results_identity_fixed
      BEFORE UPDATE ON results
      WHEN NEW.id IS NOT OLD.id OR NEW.device_id IS NOT OLD.device_id OR NEW.model_id IS NOT OLD.model_id
        OR NEW.version IS NOT OLD.version OR NEW.key_id IS NOT OLD.key_id OR NEW.idempotency_key IS NOT OLD.idempotency_key
        OR NEW.body_sha256 IS NOT OLD.body_sha256 OR NEW.received_at IS NOT OLD.received_at OR NEW.receipt IS NOT OLD.receipt
        OR NEW.attempts < OLD.attempts OR NEW.captured_at IS NOT OLD.captured_at
      BEGIN
        SELECT RAISE(ABORT, 'results are never modified: only a pending result is claimed and completed');
      END;

      CREATE TRIGGER results_no_delete
      BEFORE DELETE ON results
      BEGIN
        SELECT RAISE(ABORT, 'results are never deleted');
      END;

      CREATE TRIGGER result_ciphertexts_no_update
      BEFORE UPDATE ON result_ciphertexts
      BEGIN
        SELECT RAISE(ABORT, 'result ciphertexts are never modified');
      END;

      CREATE TRIGGER result_ciphertexts_no_delete
      BEFORE DELETE ON result_ciphertexts
      BEGIN
        SELECT RAISE(ABORT, 'result ciphertexts are never deleted');
      END;
    `,
  },
];

/** The schema version this code creates and understands. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

/**
 * Opens (creating if needed) the store at `path`, a file in an existing directory, or
 * ':memory:' for tests. Applies any pending migrations; refuses a database whose schema is
 * newer than this code (E_SCHEMA) without writing to it.
 */
export function openSqliteStore(path: string): Promise<Store> {
  return openSqliteStoreWithMigrations(path, MIGRATIONS);
}

/**
 * @internal `openSqliteStore` with another migration list (tests of the migration runner),
 * or another way to make commits durable (tests that hold or fail it; see SqliteEngine).
 */
export async function openSqliteStoreWithMigrations(path: string, migrations: readonly Migration[], sync?: () => Promise<void>): Promise<Store> {
  checkMigrationList(migrations);
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    fail('E_INVALID', 'the database path must be a non-empty string');
  }
  const memory = path === ':memory:';
  if (!memory) checkDirectory(path);

  let db: Database.Database;
  try {
    db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
  } catch (e) {
    throw translate(e, `cannot open the database ${path}`, 'E_OPEN');
  }
  try {
    // Read-only inspection first: nothing is written to a database we are going to refuse
    // (switching to WAL rewrites the file header).
    inspect(db, path, migrations);
    if (!memory) {
      const mode = String(db.pragma('journal_mode = WAL', { simple: true })).toLowerCase();
      if (mode !== 'wal') fail('E_OPEN', `${path}: SQLite could not switch to WAL journaling (got '${mode}')`);
    }
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    if (db.pragma('foreign_keys', { simple: true }) !== 1) fail('E_OPEN', `${path}: foreign keys cannot be enabled`);
    migrate(db, path, migrations);
  } catch (e) {
    try {
      db.close();
    } catch {
      // Already failing: the first error is the one to report.
    }
    throw translate(e, `cannot open the database ${path}`, 'E_OPEN');
  }
  // What the migrations committed is durable before the store is used.
  if (!memory) {
    try {
      await syncWal(resolve(path));
    } catch (e) {
      db.close();
      throw translate(e, `${path}: the migrated database could not be made durable`, 'E_OPEN');
    }
  }
  return new SqlStore(new SqliteEngine(db, path, sync));
}


/**
 * fsyncs the WAL of the database at `path` (opened each time: SQLite may delete and create
 * it again). Without a WAL file, what was committed is in the database file, which SQLite
 * fsynced when it checkpointed: that file is fsynced instead.
 */
async function syncWal(path: string): Promise<void> {
  let file;
  try {
    file = await open(`${path}-wal`, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    file = await open(path, 'r');
  }
  try {
    await file.sync();
  } finally {
    await file.close();
  }
}

function checkDirectory(path: string): void {
  const dir = dirname(resolve(path));
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    fail('E_OPEN', `the data directory ${dir} does not exist: create it before opening ${path}`);
  }
  if (!isDir) fail('E_OPEN', `${dir} is not a directory: cannot open ${path}`);
}


function appliedMigrations(db: Database.Database): AppliedMigration[] | null {
  const exists = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
    .get();
  if (!exists) return null;
  return db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all() as AppliedMigration[];
}

/** Refuses, without writing, a database that is not ours or that is newer than `migrations`. */
function inspect(db: Database.Database, path: string, migrations: readonly Migration[]): void {
  const applied = appliedMigrations(db);
  if (applied === null) {
    const other = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' LIMIT 1")
      .get() as { name: string } | undefined;
    if (other) {
      fail('E_SCHEMA', `${path} holds tables (e.g. '${other.name}') but no schema_migrations: not a sealed-edge database`);
    }
    return;
  }
  checkApplied(applied, path, migrations);
}


function migrate(db: Database.Database, path: string, migrations: readonly Migration[]): void {
  for (const migration of migrations) {
    // One transaction per step; the applied list is re-read under the write lock, so two
    // processes opening a fresh database at once apply each step exactly once.
    db.transaction(() => {
      db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version    INTEGER PRIMARY KEY NOT NULL CHECK (version >= 1),
        name       TEXT NOT NULL,
        applied_at TEXT NOT NULL
      ) STRICT`);
      const applied = appliedMigrations(db) ?? [];
      checkApplied(applied, path, migrations);
      if (applied.some((row) => row.version === migration.version)) return;
      db.exec(migration.sql);
      const violations = db.prepare('PRAGMA foreign_key_check').all();
      if (violations.length > 0) {
        fail('E_SCHEMA', `${path}: migration ${migration.version} '${migration.name}' leaves foreign-key violations`);
      }
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
        migration.version,
        migration.name,
        now(),
      );
    }).immediate();
  }
}

// ---------------------------------------------------------------------------------------
// Errors

function translate(e: unknown, context: string, fallback: StoreErrorCode = 'E_DB'): StoreError {
  if (e instanceof StoreError) return e;
  if (e instanceof Database.SqliteError) {
    const code = e.code;
    let mapped: StoreErrorCode = fallback;
    if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') mapped = 'E_CONFLICT';
    else if (code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_TOOBIG' || code === 'SQLITE_MISMATCH') mapped = 'E_INVALID';
    else if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) mapped = 'E_BUSY';
    else if (code.startsWith('SQLITE_CORRUPT')) mapped = 'E_CORRUPT';
    else if (code === 'SQLITE_NOTADB') mapped = 'E_OPEN';
    else if (code.startsWith('SQLITE_CANTOPEN')) mapped = 'E_OPEN';
    return new StoreError(mapped, `${context}: ${e.message} (${code})`, { cause: e });
  }
  if (e instanceof Error && /directory does not exist/i.test(e.message)) {
    return new StoreError('E_OPEN', `${context}: ${e.message}`, { cause: e });
  }
  const message = e instanceof Error ? e.message : String(e);
  return new StoreError(fallback, `${context}: ${message}`, { cause: e });
}


// ---------------------------------------------------------------------------------------
// The engine

/**
 * The end of the line of calls waiting for a database file, per file, shared by every
 * connection to it in this process; and who hears the results written to it (watch).
 */
interface Line {
  turn: Promise<unknown>;
  watchers: Set<ResultWatcher>;
  /** Commits made on the file by this process, and how many of them an fsync has covered. */
  commits: number;
  synced: number;
  /** The fsync under way, if any, and how many commits it covers. */
  syncing: { done: Promise<void>; covers: number } | null;
}
const lines = new Map<string, Line>();

/** A batch waiting for its group's transaction. */
interface Batch {
  what: string;
  statements: readonly Statement[];
  resolve(rows: unknown[][]): void;
  reject(error: StoreError): void;
}

class SqliteEngine implements Engine {
  readonly name = 'sqlite';
  readonly skipLocked = '';
  readonly forUpdate = '';
  /** BLOBs come as Buffers; each is copied (its memory may be the driver's). */
  readonly ciphertexts = { select: (column: string) => column, decode: (value: unknown) => new Uint8Array(value as Buffer) };
  private db: Database.Database | null;
  private readonly statements = new Map<string, Database.Statement>();
  private readonly line: Line;
  private readonly queries: Queries;
  /** Results the current write transaction announces when it commits. */
  private announced: number[] = [];
  /** The batches waiting for their turn together (batch), or null when none waits. */
  private group: Batch[] | null = null;
  /** The feeds this connection opened: closed with it. */
  private readonly watches = new Set<ResultWatcher>();

  /**
   * Calls take turns per file rather than per connection: a second connection's BEGIN
   * IMMEDIATE would otherwise block this process's event loop in SQLite's busy wait while
   * the first connection's transaction waits for that same loop to go on. `sync` makes
   * the file's committed transactions durable (by default an fsync of its WAL; none for
   * ':memory:'); tests pass their own to hold or fail it.
   */
  constructor(
    db: Database.Database,
    path: string,
    private readonly sync: (() => Promise<void>) | null = path === ':memory:' ? null : () => syncWal(resolve(path)),
  ) {
    this.db = db;
    const key = path === ':memory:' ? null : resolve(path);
    let line = key === null ? undefined : lines.get(key);
    if (line === undefined) {
      line = { turn: Promise.resolve(), watchers: new Set(), commits: 0, synced: 0, syncing: null };
      if (key !== null) lines.set(key, line);
    }
    this.line = line;
    const prepared = (sql: string, params: readonly unknown[]) => ({ statement: this.stmt(sql), params: params as unknown[] });
    this.queries = {
      all: async <T>(sql: string, params: readonly unknown[] = []) => {
        const s = prepared(sql, params);
        return s.statement.all(...s.params) as T[];
      },
      get: async <T>(sql: string, params: readonly unknown[] = []) => {
        const s = prepared(sql, params);
        return s.statement.get(...s.params) as T | undefined;
      },
      run: async (sql: string, params: readonly unknown[] = []) => {
        const s = prepared(sql, params);
        s.statement.run(...s.params);
      },
    };
  }

  /** Runs `fn` when every earlier call on this file has finished. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.line.turn.then(fn, fn);
    this.line.turn = result.catch(() => undefined);
    return result;
  }

  private open(what: string): Database.Database {
    const db = this.db;
    if (!db || !db.open) fail('E_CLOSED', `${what}: the store is closed`);
    return db;
  }

  private stmt(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.open('prepare').prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  /**
   * Resolves once an fsync begun after the file's first `commits` commits has completed
   * (at once without a WAL, or when one already has). Commits made while an fsync is under
   * way wait for the next, which serves all of them.
   */
  private async durable(what: string, commits: number): Promise<void> {
    const line = this.line;
    while (this.sync !== null && line.synced < commits) {
      if (line.syncing === null) {
        const covers = line.commits;
        const done = this.sync().then(
          () => {
            // One fsync at a time, each begun after the last: `covers` only grows.
            line.synced = covers;
            line.syncing = null;
          },
          (e: unknown) => {
            line.syncing = null;
            throw translate(e, `${what}: committed, but the write-ahead log could not be made durable`);
          },
        );
        line.syncing = { done, covers };
      }
      const { done, covers } = line.syncing;
      // An fsync begun before this commit does not cover it, and its failure is not this call's.
      if (covers >= commits) await done;
      else await done.catch(() => undefined);
    }
  }

  /** `fn` when the file is free, then the wait for every commit it could see to be durable. */
  private settled<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return this.exclusive(fn).then(async (value) => {
      await this.durable(what, this.line.commits);
      return value;
    });
  }

  /** `fn` outside a transaction; `commits`: its statement writes, SQLite committing it by itself. */
  private statement<T>(what: string, fn: (q: Queries) => Promise<T>, commits: boolean): Promise<T> {
    return this.settled(what, async () => {
      this.open(what);
      try {
        const value = await fn(this.queries);
        if (commits) this.line.commits++;
        return value;
      } catch (e) {
        throw translate(e, what);
      }
    });
  }

  read<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T> {
    return this.statement(what, fn, false);
  }

  /** An autocommit statement: SQLite commits it as its own transaction (durable when this resolves). */
  single<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T> {
    return this.statement(what, fn, true);
  }

  /** `fn` in one IMMEDIATE transaction; its announced results reach the watchers once it is durable. */
  write<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T> {
    let ids: number[] = [];
    return this.settled(what, async () => {
      const db = this.open(what);
      try {
        db.exec('BEGIN IMMEDIATE');
      } catch (e) {
        throw translate(e, what);
      }
      this.announced = [];
      try {
        const value = await fn(this.queries);
        db.exec('COMMIT');
        this.line.commits++;
        ids = this.announced;
        this.announced = [];
        return value;
      } catch (e) {
        this.announced = [];
        if (db.inTransaction) db.exec('ROLLBACK');
        throw translate(e, what);
      }
    }).then((value) => {
      if (ids.length > 0) for (const watcher of [...this.line.watchers]) tell(watcher, ids);
      return value;
    });
  }

  /**
   * Group commit: the batches called while the file is busy wait together and, when their
   * turn comes, run in one transaction, each inside a savepoint of its own (a failing
   * batch is rolled back alone and rejects), and one COMMIT makes them all durable before
   * any resolves. Each ingested result is a batch: under load one commit, with its fsync
   * and its WAL frames, serves several results instead of one each.
   */
  batch(what: string, statements: readonly Statement[]): Promise<unknown[][]> {
    return new Promise((resolve, reject) => {
      const entry: Batch = { what, statements, resolve, reject };
      if (this.group !== null) {
        this.group.push(entry);
        return;
      }
      const group = [entry];
      this.group = group;
      void this.exclusive(async () => {
        this.group = null;
        const done = this.commitGroup(group);
        if (done.length === 0) return;
        // Outside the turn: the next group commits while this one's fsync runs.
        void this.durable(group[0]!.what, this.line.commits).then(
          () => done.forEach(({ entry, rows }) => entry.resolve(rows)),
          (e: StoreError) => done.forEach(({ entry }) => entry.reject(e)),
        );
      });
    });
  }

  /** Runs a group in one transaction (see batch); returns the batches committed, each with its rows. */
  private commitGroup(group: readonly Batch[]): Array<{ entry: Batch; rows: unknown[][] }> {
    let db: Database.Database;
    try {
      db = this.open(group[0]!.what);
      db.exec('BEGIN IMMEDIATE');
    } catch (e) {
      for (const entry of group) entry.reject(translate(e, entry.what));
      return [];
    }
    const done: Array<{ entry: Batch; rows: unknown[][] }> = [];
    try {
      for (const entry of group) {
        db.exec('SAVEPOINT batch');
        try {
          const rows = entry.statements.map(({ sql, params }) => {
            const statement = this.stmt(sql);
            if (statement.reader) return statement.all(...params);
            statement.run(...params);
            return [];
          });
          db.exec('RELEASE batch');
          done.push({ entry, rows });
        } catch (e) {
          db.exec('ROLLBACK TO batch');
          db.exec('RELEASE batch');
          entry.reject(translate(e, entry.what));
        }
      }
      db.exec('COMMIT');
      this.line.commits++;
    } catch (e) {
      // The transaction itself failed (the commit, or SQLite rolled it all back): none of
      // the group is stored. A batch already rejected keeps its own error.
      if (db.inTransaction) db.exec('ROLLBACK');
      for (const entry of group) entry.reject(translate(e, entry.what));
      return [];
    }
    return done;
  }

  /**
   * SQLite has no notifications between processes: the writes of this process are
   * announced to this process's watchers of the same file (one backend instance per
   * SQLite database; PostgreSQL is the engine for several).
   */
  async announce(_q: Queries, ids: readonly number[]): Promise<void> {
    this.announced.push(...ids);
  }

  async watch(watcher: ResultWatcher): Promise<ResultWatch> {
    this.open('watchResults');
    // A wrapper per call: the same watcher object may watch twice and stop once.
    const entry: ResultWatcher = { onResults: (ids) => watcher.onResults(ids) };
    this.line.watchers.add(entry);
    this.watches.add(entry);
    return {
      close: async () => {
        this.line.watchers.delete(entry);
        this.watches.delete(entry);
      },
    };
  }

  integrityCheck(): Promise<string> {
    return this.read('integrityCheck', async () => {
      const rows = this.open('integrityCheck').pragma('integrity_check') as Array<{ integrity_check: string }>;
      return rows.map((r) => r.integrity_check).join('\n');
    });
  }

  settings(): Promise<Record<string, unknown>> {
    return this.read('settings', async () => {
      const db = this.open('settings');
      return {
        journalMode: db.pragma('journal_mode', { simple: true }),
        synchronous: db.pragma('synchronous', { simple: true }),
        foreignKeys: db.pragma('foreign_keys', { simple: true }),
        busyTimeout: db.pragma('busy_timeout', { simple: true }),
      };
    });
  }

  /** Closes the database (idempotent) once the calls before it have finished. */
  close(): Promise<void> {
    return this.exclusive(async () => {
      const db = this.db;
      this.db = null;
      this.statements.clear();
      for (const entry of this.watches) this.line.watchers.delete(entry);
      this.watches.clear();
      if (db?.open) {
        try {
          db.close();
        } catch (e) {
          throw translate(e, 'close');
        }
      }
    });
  }
}

/** @internal The connection settings of a store opened here: for tests and diagnostics. */
export function connectionSettings(store: Store): Promise<Record<string, unknown>> {
  if (!(store instanceof SqlStore) || !(store.engine instanceof SqliteEngine)) fail('E_INVALID', 'connectionSettings: not a SQLite store');
  return store.engine.settings();
}
