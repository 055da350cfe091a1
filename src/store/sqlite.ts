/**
 * The SQLite implementation of the Store (better-sqlite3, one connection per store).
 *
 * - WAL journal, `synchronous = FULL`: a method resolves only after its transaction is
 *   durably committed, so the backend can acknowledge a result as soon as it resolves.
 * - Foreign keys on, STRICT tables, CHECK constraints for every enum, hash and JSON column,
 *   and triggers that keep results and audit events append-only and device states moving
 *   forward only (pending → active → revoked, pending → revoked).
 * - Every write is one IMMEDIATE transaction (the write lock is taken up front, so two
 *   processes never deadlock upgrading a read lock); a busy connection waits up to
 *   `BUSY_TIMEOUT_MS` and then fails with E_BUSY.
 * - Versioned migrations (`MIGRATIONS`), each applied in its own transaction and recorded
 *   in `schema_migrations`. A database from a newer version of the code is refused before
 *   anything is written to it.
 *
 * better-sqlite3 is synchronous: methods run to completion one at a time inside this
 * process, and the async signatures are what a PostgreSQL store will need.
 */
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { fail, StoreError, type StoreErrorCode } from './errors';
import type {
  AuditEvent,
  DeviceRecord,
  DeviceStatus,
  KeyPairRecord,
  ModelStatus,
  ModelVersion,
  NewResult,
  RangeFlag,
  RecordOutcome,
  ResultRecord,
  SigningKeyRecord,
  Store,
} from './types';

export { StoreError, type StoreErrorCode } from './errors';

/** How long a statement waits for another connection's lock before failing with E_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const HEX64_CHECK = (column: string): string =>
  `length(${column}) = 64 AND ${column} NOT GLOB '*[^0-9a-f]*'`;
const JSON_CHECK = (column: string, type: 'object' | 'array'): string =>
  `json_valid(${column}) AND json_type(${column}) = '${type}'`;

/** The largest noise budget a result may record (far above any SEAL modulus allows); the CHECKs of migrations 2 and 3 say the same. */
const MAX_NOISE_BUDGET_BITS = 4096;

/** Every flag a result may carry; migration 3's CHECK says the same. */
const RANGE_FLAGS: readonly RangeFlag[] = ['out-of-range'];

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

/** @internal `openSqliteStore` with another migration list: for tests of the migration runner. */
export async function openSqliteStoreWithMigrations(path: string, migrations: readonly Migration[]): Promise<Store> {
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
    db.pragma('synchronous = FULL');
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
  return new SqliteStore(db);
}

function checkMigrationList(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) fail('E_SCHEMA', `migration ${i} has version ${m.version}, expected ${i + 1}`);
  });
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

interface AppliedRow {
  version: number;
  name: string;
}

function appliedMigrations(db: Database.Database): AppliedRow[] | null {
  const exists = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
    .get();
  if (!exists) return null;
  return db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all() as AppliedRow[];
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

function checkApplied(applied: AppliedRow[], path: string, migrations: readonly Migration[]): void {
  const known = migrations.length;
  const newest = applied.reduce((max, row) => Math.max(max, row.version), 0);
  if (newest > known) {
    fail(
      'E_SCHEMA',
      `${path} has schema version ${newest}, newer than the ${known} this version of sealed-edge knows: ` +
        'upgrade sealed-edge (the database was left unchanged)',
    );
  }
  applied.forEach((row, i) => {
    const expected = migrations[i];
    if (row.version !== i + 1 || !expected || expected.name !== row.name) {
      fail(
        'E_SCHEMA',
        `${path}: recorded migration ${row.version} '${row.name}' does not match this code's ` +
          `migration ${i + 1} '${expected?.name ?? '?'}'`,
      );
    }
  });
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
// Input validation: every bad value becomes E_INVALID before anything is written.

const ID_RE = /^[\x21-\x7e]{1,200}$/; // printable ASCII, no spaces
const MODEL_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/; // also a directory name and a URL segment
const HEX64_RE = /^[0-9a-f]{64}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const BASE64URL_P256_RE = /^[A-Za-z0-9_-]{43}$/;
const MAX_JSON_BYTES = 1 << 20;
const MAX_JSON_DEPTH = 32;
const MAX_SCORES = 1 << 16;

function invalid(message: string): never {
  fail('E_INVALID', message);
}

function checkId(value: unknown, what: string): string {
  if (typeof value !== 'string' || !ID_RE.test(value)) {
    invalid(`${what} must be 1–200 printable ASCII characters without spaces, got ${describe(value)}`);
  }
  return value;
}

function checkModelId(value: unknown, what = 'modelId'): string {
  if (typeof value !== 'string' || !MODEL_ID_RE.test(value)) {
    invalid(`${what} must be 1–128 characters of [A-Za-z0-9._-] starting with a letter or digit, got ${describe(value)}`);
  }
  return value;
}

function checkText(value: unknown, what: string, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max || CONTROL_RE.test(value)) {
    invalid(`${what} must be a non-empty string of at most ${max} characters without control characters, got ${describe(value)}`);
  }
  return value;
}

function checkHex64(value: unknown, what: string): string {
  if (typeof value !== 'string' || !HEX64_RE.test(value)) {
    invalid(`${what} must be a SHA-256 as 64 lowercase hex digits, got ${describe(value)}`);
  }
  return value;
}

function checkInt(value: unknown, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    invalid(`${what} must be an integer from ${min} to ${max}, got ${describe(value)}`);
  }
  return value;
}

function checkTimestamp(value: unknown, what: string): string {
  if (typeof value !== 'string' || !ISO_RE.test(value) || Number.isNaN(Date.parse(value))) {
    invalid(`${what} must be an ISO 8601 UTC timestamp as Date.toISOString() writes it, got ${describe(value)}`);
  }
  return value;
}

function checkBytes(value: unknown, what: string, exactLength?: number): Buffer {
  if (!(value instanceof Uint8Array)) invalid(`${what} must be a Uint8Array, got ${describe(value)}`);
  if (value.byteLength === 0) invalid(`${what} must not be empty`);
  if (exactLength !== undefined && value.byteLength !== exactLength) {
    invalid(`${what} must be ${exactLength} bytes, got ${value.byteLength}`);
  }
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Values that survive JSON.stringify → JSON.parse unchanged (undefined object members are dropped). */
function checkJsonValue(value: unknown, what: string, depth: number): void {
  if (depth > MAX_JSON_DEPTH) invalid(`${what} nests deeper than ${MAX_JSON_DEPTH} levels`);
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) invalid(`${what} holds a non-finite number`);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      if (item === undefined) invalid(`${what}[${i}] is undefined`);
      checkJsonValue(item, `${what}[${i}]`, depth + 1);
    });
    return;
  }
  if (isPlainObject(value)) {
    for (const [key, item] of Object.entries(value)) {
      if (item !== undefined) checkJsonValue(item, `${what}.${key}`, depth + 1);
    }
    return;
  }
  invalid(`${what} holds a value JSON cannot keep (${describe(value)})`);
}

function jsonObject(value: unknown, what: string): string {
  if (!isPlainObject(value)) invalid(`${what} must be a plain object, got ${describe(value)}`);
  checkJsonValue(value, what, 0);
  return jsonText(value, what);
}

function jsonText(value: unknown, what: string): string {
  const text = JSON.stringify(value);
  if (Buffer.byteLength(text, 'utf8') > MAX_JSON_BYTES) invalid(`${what} is larger than ${MAX_JSON_BYTES} bytes as JSON`);
  return text;
}

function checkMetrics(value: unknown): string {
  if (!isPlainObject(value)) invalid(`protectMetrics must be a plain object, got ${describe(value)}`);
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== 'number' || !Number.isFinite(item)) invalid(`protectMetrics.${key} must be a finite number, got ${describe(item)}`);
  }
  return jsonText(value, 'protectMetrics');
}

function checkRangeFlag(value: unknown): RangeFlag {
  if (!RANGE_FLAGS.includes(value as RangeFlag)) invalid(`rangeFlag must be null or one of ${RANGE_FLAGS.map((f) => `'${f}'`).join(', ')}, got ${describe(value)}`);
  return value as RangeFlag;
}

function checkScores(value: unknown): string {
  if (!Array.isArray(value)) invalid(`scores must be an array of numbers, got ${describe(value)}`);
  if (value.length > MAX_SCORES) invalid(`scores holds ${value.length} values, more than ${MAX_SCORES}`);
  value.forEach((item, i) => {
    if (typeof item !== 'number' || !Number.isFinite(item)) invalid(`scores[${i}] must be a finite number, got ${describe(item)}`);
  });
  return jsonText(value, 'scores');
}

/** An ECDSA P-256 public key, as WebCrypto exports it; a private key ('d') is refused. */
function checkPublicJwk(value: unknown): string {
  if (!isPlainObject(value)) invalid(`publicKeyJwk must be a JWK object, got ${describe(value)}`);
  if ('d' in value) invalid('publicKeyJwk holds a private key (d): only the public key may be stored');
  if (value.kty !== 'EC' || value.crv !== 'P-256') invalid('publicKeyJwk must be an EC P-256 key (kty "EC", crv "P-256")');
  for (const coordinate of ['x', 'y'] as const) {
    const c = value[coordinate];
    if (typeof c !== 'string' || !BASE64URL_P256_RE.test(c)) {
      invalid(`publicKeyJwk.${coordinate} must be 32 bytes in base64url (43 characters)`);
    }
  }
  const text = jsonObject(value, 'publicKeyJwk');
  if (text.length > 4096) invalid('publicKeyJwk is larger than 4096 bytes');
  return text;
}

function checkOptions(value: unknown, allowed: readonly string[], what: string): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) invalid(`${what} options must be an object, got ${describe(value)}`);
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) invalid(`${what}: unknown option '${key}'`);
  }
  return value;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Uint8Array) return `${value.constructor.name}(${value.byteLength})`;
  return typeof value === 'object' ? (value.constructor?.name ?? 'an object') : typeof value;
}

function now(): string {
  return new Date().toISOString();
}

/** A plain Uint8Array copy of a Buffer from SQLite (never a view of better-sqlite3's memory). */
function bytes(value: Buffer): Uint8Array {
  return new Uint8Array(value);
}

// ---------------------------------------------------------------------------------------
// Rows

interface ModelVersionRow {
  model_id: string;
  version: number;
  key_id: string;
  status: ModelStatus;
  created_at: string;
  bundle_dir: string;
  manifest_sha256: string;
  outputs: number;
  protect_metrics: string;
}

interface KeyPairRow {
  id: string;
  model_id: string;
  created_at: string;
  wrapped_secret_key: Buffer;
  device_keys: Buffer;
}

interface SigningKeyRow {
  id: string;
  created_at: string;
  public_key: Buffer;
  wrapped_private_key: Buffer;
}

interface DeviceRow {
  id: string;
  name: string;
  status: DeviceStatus;
  created_at: string;
  enrolled_at: string | null;
  public_key_jwk: string | null;
}

interface ResultRow {
  id: number;
  device_id: string;
  model_id: string;
  version: number;
  key_id: string;
  idempotency_key: string;
  body_sha256: string;
  label: number | null;
  scores: string;
  noise_budget_bits: number | null;
  range_flag: RangeFlag | null;
  received_at: string;
  receipt: string;
}

interface AuditRow {
  id: number;
  at: string;
  actor: string;
  event: string;
  details: string;
}

function toModelVersion(row: ModelVersionRow): ModelVersion {
  return {
    modelId: row.model_id,
    version: row.version,
    keyId: row.key_id,
    status: row.status,
    createdAt: row.created_at,
    bundleDir: row.bundle_dir,
    manifestSha256: row.manifest_sha256,
    outputs: row.outputs,
    protectMetrics: JSON.parse(row.protect_metrics) as Record<string, number>,
  };
}

function toKeyPair(row: KeyPairRow): KeyPairRecord {
  return {
    keyId: row.id,
    modelId: row.model_id,
    createdAt: row.created_at,
    wrappedSecretKey: bytes(row.wrapped_secret_key),
    deviceKeys: bytes(row.device_keys),
  };
}

function toSigningKey(row: SigningKeyRow): SigningKeyRecord {
  return {
    id: row.id,
    createdAt: row.created_at,
    publicKey: bytes(row.public_key),
    wrappedPrivateKey: bytes(row.wrapped_private_key),
  };
}

function toDevice(row: DeviceRow): DeviceRecord {
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    createdAt: row.created_at,
    enrolledAt: row.enrolled_at,
    publicKeyJwk: row.public_key_jwk === null ? null : (JSON.parse(row.public_key_jwk) as JsonWebKey),
  };
}

function toResult(row: ResultRow): ResultRecord {
  return {
    id: row.id,
    deviceId: row.device_id,
    modelId: row.model_id,
    version: row.version,
    keyId: row.key_id,
    idempotencyKey: row.idempotency_key,
    bodySha256: row.body_sha256,
    label: row.label,
    scores: JSON.parse(row.scores) as number[],
    noiseBudgetBits: row.noise_budget_bits,
    rangeFlag: row.range_flag,
    receivedAt: row.received_at,
    receipt: JSON.parse(row.receipt) as Record<string, unknown>,
  };
}

function toAudit(row: AuditRow): AuditEvent {
  return {
    id: row.id,
    at: row.at,
    actor: row.actor,
    event: row.event,
    details: JSON.parse(row.details) as Record<string, unknown>,
  };
}

const MODEL_VERSION_COLUMNS =
  'model_id, version, key_id, status, created_at, bundle_dir, manifest_sha256, outputs, protect_metrics';
const DEVICE_COLUMNS = 'id, name, status, created_at, enrolled_at, public_key_jwk';
const RESULT_COLUMNS =
  'id, device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, noise_budget_bits, range_flag, received_at, receipt';

/** @internal The connection settings of a store opened here: for tests and diagnostics. */
export function connectionSettings(store: Store): Record<string, unknown> {
  if (!(store instanceof SqliteStore)) fail('E_INVALID', 'connectionSettings: not a SQLite store');
  return store.settings();
}

// ---------------------------------------------------------------------------------------
// The store

class SqliteStore implements Store {
  private db: Database.Database | null;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(db: Database.Database) {
    this.db = db;
  }

  /** Runs `fn` against the open database, turning every failure into a StoreError. */
  private run<T>(what: string, fn: (db: Database.Database) => T): T {
    const db = this.db;
    if (!db || !db.open) fail('E_CLOSED', `${what}: the store is closed`);
    try {
      return fn(db);
    } catch (e) {
      throw translate(e, what);
    }
  }

  /** `fn` in one IMMEDIATE transaction: all of it is committed, or none of it. */
  private write<T>(what: string, fn: (db: Database.Database) => T): T {
    return this.run(what, (db) => db.transaction(() => fn(db)).immediate());
  }

  private stmt(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      const db = this.db;
      if (!db) fail('E_CLOSED', 'the store is closed');
      statement = db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  settings(): Record<string, unknown> {
    return this.run('settings', (db) => ({
      journalMode: db.pragma('journal_mode', { simple: true }),
      synchronous: db.pragma('synchronous', { simple: true }),
      foreignKeys: db.pragma('foreign_keys', { simple: true }),
      busyTimeout: db.pragma('busy_timeout', { simple: true }),
    }));
  }

  async schemaVersion(): Promise<number> {
    return this.run('schemaVersion', () => {
      const row = this.stmt('SELECT max(version) AS v FROM schema_migrations').get() as { v: number | null };
      return row.v ?? 0;
    });
  }

  // --- models and key pairs ----------------------------------------------------------

  async addModelVersion(
    version: Omit<ModelVersion, 'version' | 'createdAt' | 'status'>,
    keyPair: Omit<KeyPairRecord, 'createdAt' | 'modelId'>,
  ): Promise<ModelVersion> {
    if (!isPlainObject(version)) invalid('addModelVersion: the version must be an object');
    if (!isPlainObject(keyPair)) invalid('addModelVersion: the key pair must be an object');
    const modelId = checkModelId(version.modelId);
    const keyId = checkId(version.keyId, 'keyId');
    if (keyPair.keyId !== keyId) {
      invalid(`addModelVersion: the key pair's keyId ${describe(keyPair.keyId)} differs from the version's keyId "${keyId}"`);
    }
    const bundleDir = checkText(version.bundleDir, 'bundleDir', 4096);
    const manifestSha256 = checkHex64(version.manifestSha256, 'manifestSha256');
    const outputs = checkInt(version.outputs, 'outputs', 1, 1 << 20);
    const metrics = checkMetrics(version.protectMetrics);
    const secret = checkBytes(keyPair.wrappedSecretKey, 'wrappedSecretKey');
    const deviceKeys = checkBytes(keyPair.deviceKeys, 'deviceKeys');

    return this.write('addModelVersion', () => {
      const at = now();
      if (this.stmt('SELECT 1 FROM key_pairs WHERE id = ?').get(keyId)) {
        fail('E_CONFLICT', `addModelVersion: key id "${keyId}" is already stored`);
      }
      this.stmt('INSERT INTO models (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING').run(modelId, at);
      const { next } = this.stmt(
        'SELECT coalesce(max(version), 0) + 1 AS next FROM model_versions WHERE model_id = ?',
      ).get(modelId) as { next: number };
      this.stmt(
        'INSERT INTO key_pairs (id, model_id, created_at, wrapped_secret_key, device_keys) VALUES (?, ?, ?, ?, ?)',
      ).run(keyId, modelId, at, secret, deviceKeys);
      this.stmt(
        `INSERT INTO model_versions (model_id, version, key_id, status, created_at, bundle_dir, manifest_sha256, outputs, protect_metrics)
         VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?)`,
      ).run(modelId, next, keyId, at, bundleDir, manifestSha256, outputs, metrics);
      return this.modelVersionRow(modelId, next)!;
    });
  }

  private modelVersionRow(modelId: string, version: number): ModelVersion | null {
    const row = this.stmt(`SELECT ${MODEL_VERSION_COLUMNS} FROM model_versions WHERE model_id = ? AND version = ?`).get(
      modelId,
      version,
    ) as ModelVersionRow | undefined;
    return row ? toModelVersion(row) : null;
  }

  async getModelVersion(modelId: string, version: number): Promise<ModelVersion | null> {
    checkModelId(modelId);
    checkInt(version, 'version', 1);
    return this.run('getModelVersion', () => this.modelVersionRow(modelId, version));
  }

  /** The highest version of the model, whatever its status (callers check `status`). */
  async latestModelVersion(modelId: string): Promise<ModelVersion | null> {
    checkModelId(modelId);
    return this.run('latestModelVersion', () => {
      const row = this.stmt(
        `SELECT ${MODEL_VERSION_COLUMNS} FROM model_versions WHERE model_id = ? ORDER BY version DESC LIMIT 1`,
      ).get(modelId) as ModelVersionRow | undefined;
      return row ? toModelVersion(row) : null;
    });
  }

  /** Every version, ordered by model id then version. */
  async listModelVersions(modelId?: string): Promise<ModelVersion[]> {
    if (modelId !== undefined) checkModelId(modelId);
    return this.run('listModelVersions', () => {
      const rows = this.stmt(
        `SELECT ${MODEL_VERSION_COLUMNS} FROM model_versions WHERE @modelId IS NULL OR model_id = @modelId ORDER BY model_id, version`,
      ).all({ modelId: modelId ?? null }) as ModelVersionRow[];
      return rows.map(toModelVersion);
    });
  }

  /** Marks the version retired (idempotent); an unknown version is E_NOT_FOUND. */
  async retireModelVersion(modelId: string, version: number): Promise<ModelVersion> {
    checkModelId(modelId);
    checkInt(version, 'version', 1);
    return this.write('retireModelVersion', () => {
      this.stmt(
        `UPDATE model_versions SET status = 'retired', retired_at = ?
         WHERE model_id = ? AND version = ? AND status <> 'retired'`,
      ).run(now(), modelId, version);
      const updated = this.modelVersionRow(modelId, version);
      if (!updated) fail('E_NOT_FOUND', `retireModelVersion: model "${modelId}" has no version ${version}`);
      return updated;
    });
  }

  async getKeyPair(keyId: string): Promise<KeyPairRecord | null> {
    checkId(keyId, 'keyId');
    return this.run('getKeyPair', () => {
      const row = this.stmt(
        'SELECT id, model_id, created_at, wrapped_secret_key, device_keys FROM key_pairs WHERE id = ?',
      ).get(keyId) as KeyPairRow | undefined;
      return row ? toKeyPair(row) : null;
    });
  }

  // --- signing keys --------------------------------------------------------------------

  /** The most recently added signing key. */
  async activeSigningKey(): Promise<SigningKeyRecord | null> {
    return this.run('activeSigningKey', () => {
      const row = this.stmt(
        'SELECT id, created_at, public_key, wrapped_private_key FROM signing_keys ORDER BY seq DESC LIMIT 1',
      ).get() as SigningKeyRow | undefined;
      return row ? toSigningKey(row) : null;
    });
  }

  async addSigningKey(key: Omit<SigningKeyRecord, 'createdAt'>): Promise<SigningKeyRecord> {
    if (!isPlainObject(key)) invalid('addSigningKey: the key must be an object');
    const id = checkId(key.id, 'signing key id');
    const publicKey = checkBytes(key.publicKey, 'publicKey', 32);
    const wrapped = checkBytes(key.wrappedPrivateKey, 'wrappedPrivateKey');
    return this.write('addSigningKey', () => {
      if (this.stmt('SELECT 1 FROM signing_keys WHERE id = ?').get(id)) {
        fail('E_CONFLICT', `addSigningKey: signing key "${id}" already exists`);
      }
      const at = now();
      this.stmt('INSERT INTO signing_keys (id, created_at, public_key, wrapped_private_key) VALUES (?, ?, ?, ?)').run(
        id,
        at,
        publicKey,
        wrapped,
      );
      return { id, createdAt: at, publicKey: new Uint8Array(publicKey), wrappedPrivateKey: new Uint8Array(wrapped) };
    });
  }

  // --- devices -------------------------------------------------------------------------

  private deviceRow(id: string): DeviceRecord | null {
    const row = this.stmt(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = ?`).get(id) as DeviceRow | undefined;
    return row ? toDevice(row) : null;
  }

  async addDevice(device: { id: string; name: string; tokenSha256: string }): Promise<DeviceRecord> {
    if (!isPlainObject(device)) invalid('addDevice: the device must be an object');
    const id = checkId(device.id, 'device id');
    const name = checkText(device.name, 'device name', 200);
    const token = checkHex64(device.tokenSha256, 'tokenSha256');
    return this.write('addDevice', () => {
      if (this.stmt('SELECT 1 FROM devices WHERE id = ?').get(id)) {
        fail('E_CONFLICT', `addDevice: device "${id}" already exists`);
      }
      if (this.stmt('SELECT 1 FROM devices WHERE token_sha256 = ?').get(token)) {
        fail('E_CONFLICT', 'addDevice: this enrollment token was already issued');
      }
      this.stmt(
        "INSERT INTO devices (id, name, status, created_at, token_sha256) VALUES (?, ?, 'pending', ?, ?)",
      ).run(id, name, now(), token);
      return this.deviceRow(id)!;
    });
  }

  /**
   * Activates the pending device whose token hash this is and stores its public key; the
   * token is marked used in the same statement, so it works once. Null for an unknown,
   * used or revoked token.
   */
  async enrollDevice(tokenSha256: string, publicKeyJwk: JsonWebKey): Promise<DeviceRecord | null> {
    const token = checkHex64(tokenSha256, 'tokenSha256');
    const jwk = checkPublicJwk(publicKeyJwk);
    return this.write('enrollDevice', () => {
      const at = now();
      const row = this.stmt(
        `UPDATE devices SET status = 'active', public_key_jwk = ?, enrolled_at = ?, token_used_at = ?
         WHERE token_sha256 = ? AND status = 'pending' AND token_used_at IS NULL
         RETURNING ${DEVICE_COLUMNS}`,
      ).get(jwk, at, at, token) as DeviceRow | undefined;
      return row ? toDevice(row) : null;
    });
  }

  async getDevice(id: string): Promise<DeviceRecord | null> {
    checkId(id, 'device id');
    return this.run('getDevice', () => this.deviceRow(id));
  }

  /** Every device, in the order they were added. */
  async listDevices(): Promise<DeviceRecord[]> {
    return this.run('listDevices', () =>
      (this.stmt(`SELECT ${DEVICE_COLUMNS} FROM devices ORDER BY seq`).all() as DeviceRow[]).map(toDevice),
    );
  }

  /** Revokes a pending or active device (idempotent); an unknown device is E_NOT_FOUND. */
  async revokeDevice(id: string): Promise<DeviceRecord> {
    checkId(id, 'device id');
    return this.write('revokeDevice', () => {
      this.stmt("UPDATE devices SET status = 'revoked', revoked_at = ? WHERE id = ? AND status <> 'revoked'").run(
        now(),
        id,
      );
      const device = this.deviceRow(id);
      if (!device) fail('E_NOT_FOUND', `revokeDevice: no device "${id}"`);
      return device;
    });
  }

  // --- results -------------------------------------------------------------------------

  /**
   * Looks up (deviceId, idempotencyKey) and inserts under the same write lock: 'replayed'
   * (same body hash) or 'conflict' (another body) return the stored result and write
   * nothing. A new result needs an existing device and model version whose key id matches
   * (E_NOT_FOUND otherwise), and either a label below the version's output count or a
   * range flag (no label). Whether the device is active or the version retired, and
   * whether scores are in range, is the caller's policy.
   */
  async recordResult(result: NewResult): Promise<RecordOutcome> {
    if (!isPlainObject(result)) invalid('recordResult: the result must be an object');
    const deviceId = checkId(result.deviceId, 'deviceId');
    const modelId = checkModelId(result.modelId);
    const version = checkInt(result.version, 'version', 1);
    const keyId = checkId(result.keyId, 'keyId');
    const idempotencyKey = checkId(result.idempotencyKey, 'idempotencyKey');
    const bodySha256 = checkHex64(result.bodySha256, 'bodySha256');
    const label = result.label === null ? null : checkInt(result.label, 'label', 0, (1 << 20) - 1);
    const scores = checkScores(result.scores);
    const noiseBudgetBits =
      result.noiseBudgetBits === undefined || result.noiseBudgetBits === null ? null : checkInt(result.noiseBudgetBits, 'noiseBudgetBits', 0, MAX_NOISE_BUDGET_BITS);
    const rangeFlag = result.rangeFlag === undefined || result.rangeFlag === null ? null : checkRangeFlag(result.rangeFlag);
    if ((label === null) !== (rangeFlag !== null)) {
      invalid(rangeFlag === null ? 'recordResult: a result without a label must carry a range flag' : 'recordResult: a flagged result has no label');
    }
    const receivedAt = checkTimestamp(result.receivedAt, 'receivedAt');
    const receipt = jsonObject(result.receipt, 'receipt');

    return this.write('recordResult', (): RecordOutcome => {
      const existing = this.stmt(
        `SELECT ${RESULT_COLUMNS} FROM results WHERE device_id = ? AND idempotency_key = ?`,
      ).get(deviceId, idempotencyKey) as ResultRow | undefined;
      if (existing) {
        const stored = toResult(existing);
        return { kind: stored.bodySha256 === bodySha256 ? 'replayed' : 'conflict', result: stored };
      }
      if (!this.stmt('SELECT 1 FROM devices WHERE id = ?').get(deviceId)) {
        fail('E_NOT_FOUND', `recordResult: no device "${deviceId}"`);
      }
      const mv = this.stmt('SELECT key_id, outputs FROM model_versions WHERE model_id = ? AND version = ?').get(
        modelId,
        version,
      ) as { key_id: string; outputs: number } | undefined;
      if (!mv) fail('E_NOT_FOUND', `recordResult: model "${modelId}" has no version ${version}`);
      if (mv.key_id !== keyId) {
        fail('E_NOT_FOUND', `recordResult: key "${keyId}" does not belong to model "${modelId}" version ${version}`);
      }
      if (label !== null && label >= mv.outputs) {
        invalid(`recordResult: label ${label} is out of range for a model with ${mv.outputs} outputs`);
      }
      const row = this.stmt(
        `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, label, scores, noise_budget_bits, range_flag, received_at, receipt)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         RETURNING ${RESULT_COLUMNS}`,
      ).get(deviceId, modelId, version, keyId, idempotencyKey, bodySha256, label, scores, noiseBudgetBits, rangeFlag, receivedAt, receipt) as ResultRow;
      return { kind: 'created', result: toResult(row) };
    });
  }

  /** Results by ascending id: those after `afterId`, of one device if given, at most `limit`. */
  async listResults(options?: { deviceId?: string; afterId?: number; limit?: number }): Promise<ResultRecord[]> {
    const o = checkOptions(options, ['deviceId', 'afterId', 'limit'], 'listResults');
    const deviceId = o.deviceId === undefined ? null : checkId(o.deviceId, 'deviceId');
    const afterId = o.afterId === undefined ? 0 : checkInt(o.afterId, 'afterId', 0);
    const limit = o.limit === undefined ? -1 : checkInt(o.limit, 'limit', 0);
    return this.run('listResults', () => {
      const rows = this.stmt(
        `SELECT ${RESULT_COLUMNS} FROM results
         WHERE (@deviceId IS NULL OR device_id = @deviceId) AND id > @afterId
         ORDER BY id LIMIT @limit`,
      ).all({ deviceId, afterId, limit }) as ResultRow[];
      return rows.map(toResult);
    });
  }

  async countResults(): Promise<number> {
    return this.run('countResults', () => (this.stmt('SELECT count(*) AS n FROM results').get() as { n: number }).n);
  }

  // --- audit ---------------------------------------------------------------------------

  async audit(actor: string, event: string, details: Record<string, unknown> = {}): Promise<void> {
    const a = checkText(actor, 'actor', 200);
    const e = checkText(event, 'event', 200);
    const d = jsonObject(details, 'details');
    this.write('audit', () => {
      this.stmt('INSERT INTO audit_events (at, actor, event, details) VALUES (?, ?, ?, ?)').run(now(), a, e, d);
    });
  }

  /** The latest `limit` events (all when omitted), oldest first. */
  async listAudit(options?: { limit?: number }): Promise<AuditEvent[]> {
    const o = checkOptions(options, ['limit'], 'listAudit');
    const limit = o.limit === undefined ? -1 : checkInt(o.limit, 'limit', 0);
    return this.run('listAudit', () => {
      const rows = this.stmt(
        'SELECT id, at, actor, event, details FROM (SELECT * FROM audit_events ORDER BY id DESC LIMIT ?) ORDER BY id',
      ).all(limit) as AuditRow[];
      return rows.map(toAudit);
    });
  }

  // --- maintenance ---------------------------------------------------------------------

  async integrityCheck(): Promise<string> {
    return this.run('integrityCheck', (db) => {
      const rows = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
      return rows.map((r) => r.integrity_check).join('\n');
    });
  }

  /** Closes the database (idempotent); every other method then fails with E_CLOSED. */
  async close(): Promise<void> {
    const db = this.db;
    this.db = null;
    this.statements.clear();
    if (db?.open) {
      try {
        db.close();
      } catch (e) {
        throw translate(e, 'close');
      }
    }
  }
}
