/**
 * The store's logic, shared by every engine: validation, the SQL both engines understand,
 * and the mapping of rows to records. An engine (sqlite.ts, postgres.ts) only opens its
 * database, runs its migrations, translates its errors and runs statements, in a
 * transaction or not (`Engine`).
 *
 * The SQL here is written once, with `?` placeholders, and keeps to what SQLite and
 * PostgreSQL both accept (RETURNING, ON CONFLICT … DO NOTHING, no LIMIT -1). Where the
 * engines must differ, the engine says so (`forUpdate`).
 */
import { fail, StoreError } from './errors';
import type {
  AuditEvent,
  DeviceRecord,
  DeviceStatus,
  KeyPairRecord,
  ModelStatus,
  ModelVersion,
  Claims,
  CompletedResult,
  DecryptionOutcome,
  NewPendingResult,
  NewResult,
  RangeFlag,
  RateLimit,
  RecordOutcome,
  ResultRecord,
  ResultQuery,
  ResultState,
  ResultStats,
  ResultWatch,
  ResultWatcher,
  SigningKeyRecord,
  Store,
} from './types';
import {
  checkBytes,
  checkHex64,
  checkId,
  checkInt,
  checkMetrics,
  checkModelId,
  checkOptions,
  checkPublicJwk,
  checkRangeFlag,
  checkScores,
  checkText,
  checkTimestamp,
  describe,
  invalid,
  isPlainObject,
  jsonObject,
  MAX_NOISE_BUDGET_BITS,
  now,
} from './validate';

/** Statements against one connection (inside a transaction, for `Engine.write`). */
export interface Queries {
  all<T>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  get<T>(sql: string, params?: readonly unknown[]): Promise<T | undefined>;
  run(sql: string, params?: readonly unknown[]): Promise<void>;
}

/** One statement of a batch: its SQL (`?` placeholders) and parameters. */
export interface Statement {
  sql: string;
  params: readonly unknown[];
}

/** What an engine provides the shared store. Every failure comes out as a StoreError. */
export interface Engine {
  readonly name: 'sqlite' | 'postgres';
  /** Appended to a SELECT whose rows must stay locked until the transaction ends ('' where a write transaction locks the whole database). */
  readonly forUpdate: string;
  /** Appended to a SELECT of rows to claim: skips rows another transaction holds ('' where a write transaction locks the whole database). */
  readonly skipLocked: string;
  /**
   * How a result's ciphertext is read: the SELECT expression for the binary `column`, in
   * the form the engine's driver reads fastest, and the bytes of what it read (a
   * Uint8Array of its own, never a view of the driver's memory).
   */
  readonly ciphertexts: { select(column: string): string; decode(value: unknown): Uint8Array };
  /** `fn` outside a transaction; E_CLOSED once closed. */
  read<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T>;
  /** `fn` in one transaction: all of it is committed before this resolves, or none of it. */
  write<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T>;
  /**
   * `fn`, which runs a single statement, atomic and durable by itself, without BEGIN and
   * COMMIT around it (on PostgreSQL two round trips fewer): committed before this resolves.
   */
  single<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T>;
  /**
   * `statements` in one transaction, as `write` would run them one after the other, but
   * sent together where the engine can (PostgreSQL pipelines BEGIN, the statements and
   * COMMIT: one round trip): so no statement's parameters may depend on an earlier one's
   * rows. Resolves, once committed, to the rows of each statement (none for a statement
   * without RETURNING); all of it is committed, or none of it.
   */
  batch(what: string, statements: readonly Statement[]): Promise<unknown[][]>;
  /**
   * Inside a write transaction: announces these results to every watcher (watch) once
   * the transaction commits, and not at all if it rolls back.
   */
  announce(q: Queries, ids: readonly number[]): Promise<void>;
  /** Starts a feed of announced results (StoreError when it cannot be opened). */
  watch(watcher: ResultWatcher): Promise<ResultWatch>;
  /** 'ok' when the engine finds the database sound, else what it found. */
  integrityCheck(): Promise<string>;
  close(): Promise<void>;
}

/** Calls a watcher without letting its failure reach the store. */
export function tell(watcher: ResultWatcher, ids: number[]): void {
  try {
    watcher.onResults(ids);
  } catch {
    // A watcher's own failure is its own; the write it hears about is committed.
  }
}

// ---------------------------------------------------------------------------------------
// Migrations: each engine has its own list; the rules for checking one are shared.

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export interface AppliedMigration {
  version: number;
  name: string;
}

export function checkMigrationList(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) fail('E_SCHEMA', `migration ${i} has version ${m.version}, expected ${i + 1}`);
  });
}

/** Refuses a database whose recorded steps are newer than, or differ from, `migrations`. `where` names the database. */
export function checkApplied(applied: readonly AppliedMigration[], where: string, migrations: readonly Migration[]): void {
  const known = migrations.length;
  const newest = applied.reduce((max, row) => Math.max(max, row.version), 0);
  if (newest > known) {
    fail(
      'E_SCHEMA',
      `${where} has schema version ${newest}, newer than the ${known} this version of sealed-edge knows: ` +
        'upgrade sealed-edge (the database was left unchanged)',
    );
  }
  applied.forEach((row, i) => {
    const expected = migrations[i];
    if (row.version !== i + 1 || !expected || expected.name !== row.name) {
      fail(
        'E_SCHEMA',
        `${where}: recorded migration ${row.version} '${row.name}' does not match this code's ` +
          `migration ${i + 1} '${expected?.name ?? '?'}'`,
      );
    }
  });
}

/**
 * The columns a result's decryption adds (schema 4) on every engine, `bytes` the engine's
 * binary type: its state, the ciphertext it waits with, the current claim (worker,
 * when, how many claims so far), when it was decrypted or failed, and why it failed.
 */
export const RESULT_STATE_COLUMNS = (bytes: string): string[] => [
  "state TEXT NOT NULL CHECK (state IN ('pending', 'decrypted', 'failed'))",
  `ciphertext ${bytes} CHECK (ciphertext IS NULL OR length(ciphertext) > 0)`,
  'claimed_by TEXT CHECK (claimed_by IS NULL OR length(claimed_by) BETWEEN 1 AND 200)',
  'claimed_at TEXT',
  'attempts INTEGER NOT NULL CHECK (attempts >= 0)',
  'decrypted_at TEXT',
  'error TEXT CHECK (error IS NULL OR length(error) BETWEEN 1 AND 2000)',
];

/**
 * What each state of a result holds (schema 4), on every engine: pending, a ciphertext and
 * nothing decrypted; decrypted, scores and either a label or a range flag; failed, an error.
 */
export const RESULT_STATE_CHECKS: readonly string[] = [
  'CHECK ((claimed_by IS NULL) = (claimed_at IS NULL))',
  `CHECK (state <> 'pending' OR (ciphertext IS NOT NULL AND label IS NULL AND scores IS NULL AND range_flag IS NULL
     AND noise_budget_bits IS NULL AND error IS NULL AND decrypted_at IS NULL))`,
  `CHECK (state <> 'decrypted' OR (scores IS NOT NULL AND (label IS NULL) = (range_flag IS NOT NULL)
     AND error IS NULL AND decrypted_at IS NOT NULL))`,
  `CHECK (state <> 'failed' OR (label IS NULL AND scores IS NULL AND range_flag IS NULL AND noise_budget_bits IS NULL
     AND error IS NOT NULL AND decrypted_at IS NOT NULL))`,
];

/**
 * RESULT_STATE_COLUMNS without the ciphertext, and RESULT_STATE_CHECKS with a pending row's
 * rule that no longer names it: from SQLite's step 7 and PostgreSQL's step 5 a result's
 * ciphertext is kept in a table of its own (result_ciphertexts), written once when the
 * result is stored pending, so that claiming and completing the result rewrite its small
 * row rather than the ~115 KB ciphertext with it.
 */
export const RESULT_STATE_COLUMNS_APART: readonly string[] = RESULT_STATE_COLUMNS('').filter((column) => !column.startsWith('ciphertext '));
export const PENDING_CHECK_APART = `CHECK (state <> 'pending' OR (label IS NULL AND scores IS NULL AND range_flag IS NULL
     AND noise_budget_bits IS NULL AND error IS NULL AND decrypted_at IS NULL))`;
export const RESULT_STATE_CHECKS_APART: readonly string[] = RESULT_STATE_CHECKS.map((check, i) => (i === 1 ? PENDING_CHECK_APART : check));

/** A plain Uint8Array copy of the bytes a driver returns (never a view of its memory). */
function bytes(value: Uint8Array): Uint8Array {
  return new Uint8Array(value);
}

// ---------------------------------------------------------------------------------------
// Rows (the same columns on every engine: TEXT for JSON and timestamps, bytes for keys)

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
  wrapped_secret_key: Uint8Array;
  device_keys: Uint8Array;
}

interface SigningKeyRow {
  id: string;
  created_at: string;
  public_key: Uint8Array;
  wrapped_private_key: Uint8Array;
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
  state: ResultState;
  label: number | null;
  scores: string | null;
  noise_budget_bits: number | null;
  range_flag: RangeFlag | null;
  received_at: string;
  captured_at: string | null;
  decrypted_at: string | null;
  error: string | null;
  receipt: string;
}

interface ClaimedRow {
  id: number;
  device_id: string;
  model_id: string;
  version: number;
  key_id: string;
  attempts: number;
  received_at: string;
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
    state: row.state,
    label: row.label,
    scores: row.scores === null ? [] : (JSON.parse(row.scores) as number[]),
    noiseBudgetBits: row.noise_budget_bits,
    rangeFlag: row.range_flag,
    receivedAt: row.received_at,
    capturedAt: row.captured_at,
    decryptedAt: row.decrypted_at,
    error: row.error,
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
  'id, device_id, model_id, version, key_id, idempotency_key, body_sha256, state, label, scores, noise_budget_bits, range_flag, received_at, captured_at, decrypted_at, error, receipt';
/** RESULT_COLUMNS of the table aliased `r`. */
const RESULT_COLUMNS_OF_R = RESULT_COLUMNS.split(', ').map((column) => `r.${column}`).join(', ');
/** A row whose columns may all be null (an outer join that found nothing). */
type NullableRow<T> = { [K in keyof T]: T[K] | null };
/** A result's outcome as the cockpit counts it: its label, 'out-of-range', 'failed' or 'pending'. */
const OUTCOME = "CASE WHEN state = 'decrypted' AND label IS NOT NULL THEN CAST(label AS TEXT) WHEN state = 'decrypted' THEN 'out-of-range' ELSE state END";
/** The most results getResults reads at once. */
export const MAX_RESULT_IDS = 1000;
/** Tokens a bucket gained since its last request: (now − at) × perSecond / 1000, never negative (parameters: now, now, perSecond). */
const REFILL = '(CASE WHEN CAST(? AS BIGINT) > device_rates.at_ms THEN (CAST(? AS BIGINT) - device_rates.at_ms) * CAST(? AS DOUBLE PRECISION) / 1000.0 ELSE 0 END)';
/** The longest error message a failed result keeps (longer ones are cut). */
export const MAX_RESULT_ERROR = 2000;

// ---------------------------------------------------------------------------------------
// The store

/** The Store over an engine; `engine` is exposed for engine-specific diagnostics in tests. */
export class SqlStore implements Store {
  constructor(readonly engine: Engine) {}

  get engineName(): 'sqlite' | 'postgres' {
    return this.engine.name;
  }

  async schemaVersion(): Promise<number> {
    return this.engine.read('schemaVersion', async (q) => {
      const row = await q.get<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
      return row?.v ?? 0;
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

    return this.engine.write('addModelVersion', async (q) => {
      const at = now();
      if (await q.get('SELECT 1 FROM key_pairs WHERE id = ?', [keyId])) {
        fail('E_CONFLICT', `addModelVersion: key id "${keyId}" is already stored`);
      }
      await q.run('INSERT INTO models (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING', [modelId, at]);
      // Version numbers are given out one at a time per model.
      await q.get(`SELECT 1 FROM models WHERE id = ?${this.engine.forUpdate}`, [modelId]);
      const row = await q.get<{ next: number }>('SELECT coalesce(max(version), 0) + 1 AS next FROM model_versions WHERE model_id = ?', [modelId]);
      const next = row!.next;
      await q.run('INSERT INTO key_pairs (id, model_id, created_at, wrapped_secret_key, device_keys) VALUES (?, ?, ?, ?, ?)', [
        keyId,
        modelId,
        at,
        secret,
        deviceKeys,
      ]);
      await q.run(
        `INSERT INTO model_versions (model_id, version, key_id, status, created_at, bundle_dir, manifest_sha256, outputs, protect_metrics)
         VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?)`,
        [modelId, next, keyId, at, bundleDir, manifestSha256, outputs, metrics],
      );
      return (await modelVersionRow(q, modelId, next))!;
    });
  }

  async getModelVersion(modelId: string, version: number): Promise<ModelVersion | null> {
    checkModelId(modelId);
    checkInt(version, 'version', 1);
    return this.engine.read('getModelVersion', (q) => modelVersionRow(q, modelId, version));
  }

  /** The highest version of the model, whatever its status (callers check `status`). */
  async latestModelVersion(modelId: string): Promise<ModelVersion | null> {
    checkModelId(modelId);
    return this.engine.read('latestModelVersion', async (q) => {
      const row = await q.get<ModelVersionRow>(
        `SELECT ${MODEL_VERSION_COLUMNS} FROM model_versions WHERE model_id = ? ORDER BY version DESC LIMIT 1`,
        [modelId],
      );
      return row ? toModelVersion(row) : null;
    });
  }

  /** Every version, ordered by model id then version. */
  async listModelVersions(modelId?: string): Promise<ModelVersion[]> {
    if (modelId !== undefined) checkModelId(modelId);
    return this.engine.read('listModelVersions', async (q) => {
      const rows =
        modelId === undefined
          ? await q.all<ModelVersionRow>(`SELECT ${MODEL_VERSION_COLUMNS} FROM model_versions ORDER BY model_id, version`)
          : await q.all<ModelVersionRow>(`SELECT ${MODEL_VERSION_COLUMNS} FROM model_versions WHERE model_id = ? ORDER BY version`, [modelId]);
      return rows.map(toModelVersion);
    });
  }

  /** Marks the version retired (idempotent); an unknown version is E_NOT_FOUND. */
  async retireModelVersion(modelId: string, version: number): Promise<ModelVersion> {
    checkModelId(modelId);
    checkInt(version, 'version', 1);
    return this.engine.write('retireModelVersion', async (q) => {
      await q.run(
        `UPDATE model_versions SET status = 'retired', retired_at = ?
         WHERE model_id = ? AND version = ? AND status <> 'retired'`,
        [now(), modelId, version],
      );
      const updated = await modelVersionRow(q, modelId, version);
      if (!updated) fail('E_NOT_FOUND', `retireModelVersion: model "${modelId}" has no version ${version}`);
      return updated;
    });
  }

  async getKeyPair(keyId: string): Promise<KeyPairRecord | null> {
    checkId(keyId, 'keyId');
    return this.engine.read('getKeyPair', async (q) => {
      const row = await q.get<KeyPairRow>('SELECT id, model_id, created_at, wrapped_secret_key, device_keys FROM key_pairs WHERE id = ?', [keyId]);
      return row ? toKeyPair(row) : null;
    });
  }

  // --- signing keys --------------------------------------------------------------------

  /** The most recently added signing key. */
  async activeSigningKey(): Promise<SigningKeyRecord | null> {
    return this.engine.read('activeSigningKey', async (q) => {
      const row = await q.get<SigningKeyRow>('SELECT id, created_at, public_key, wrapped_private_key FROM signing_keys ORDER BY seq DESC LIMIT 1');
      return row ? toSigningKey(row) : null;
    });
  }

  async addSigningKey(key: Omit<SigningKeyRecord, 'createdAt'>): Promise<SigningKeyRecord> {
    if (!isPlainObject(key)) invalid('addSigningKey: the key must be an object');
    const id = checkId(key.id, 'signing key id');
    const publicKey = checkBytes(key.publicKey, 'publicKey', 32);
    const wrapped = checkBytes(key.wrappedPrivateKey, 'wrappedPrivateKey');
    return this.engine.write('addSigningKey', async (q) => {
      if (await q.get('SELECT 1 FROM signing_keys WHERE id = ?', [id])) {
        fail('E_CONFLICT', `addSigningKey: signing key "${id}" already exists`);
      }
      const at = now();
      await q.run('INSERT INTO signing_keys (id, created_at, public_key, wrapped_private_key) VALUES (?, ?, ?, ?)', [id, at, publicKey, wrapped]);
      return { id, createdAt: at, publicKey: new Uint8Array(publicKey), wrappedPrivateKey: new Uint8Array(wrapped) };
    });
  }

  // --- devices -------------------------------------------------------------------------

  async addDevice(device: { id: string; name: string; tokenSha256: string }): Promise<DeviceRecord> {
    if (!isPlainObject(device)) invalid('addDevice: the device must be an object');
    const id = checkId(device.id, 'device id');
    const name = checkText(device.name, 'device name', 200);
    const token = checkHex64(device.tokenSha256, 'tokenSha256');
    return this.engine.write('addDevice', async (q) => {
      if (await q.get('SELECT 1 FROM devices WHERE id = ?', [id])) {
        fail('E_CONFLICT', `addDevice: device "${id}" already exists`);
      }
      if (await q.get('SELECT 1 FROM devices WHERE token_sha256 = ?', [token])) {
        fail('E_CONFLICT', 'addDevice: this enrollment token was already issued');
      }
      await q.run("INSERT INTO devices (id, name, status, created_at, token_sha256) VALUES (?, ?, 'pending', ?, ?)", [id, name, now(), token]);
      return (await deviceRow(q, id))!;
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
    return this.engine.write('enrollDevice', async (q) => {
      const at = now();
      const row = await q.get<DeviceRow>(
        `UPDATE devices SET status = 'active', public_key_jwk = ?, enrolled_at = ?, token_used_at = ?
         WHERE token_sha256 = ? AND status = 'pending' AND token_used_at IS NULL
         RETURNING ${DEVICE_COLUMNS}`,
        [jwk, at, at, token],
      );
      return row ? toDevice(row) : null;
    });
  }

  async getDevice(id: string): Promise<DeviceRecord | null> {
    checkId(id, 'device id');
    return this.engine.read('getDevice', (q) => deviceRow(q, id));
  }

  /** Every device, in the order they were added. */
  async listDevices(): Promise<DeviceRecord[]> {
    return this.engine.read('listDevices', async (q) => (await q.all<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices ORDER BY seq`)).map(toDevice));
  }

  /** Revokes a pending or active device (idempotent); an unknown device is E_NOT_FOUND. */
  async revokeDevice(id: string): Promise<DeviceRecord> {
    checkId(id, 'device id');
    return this.engine.write('revokeDevice', async (q) => {
      await q.run("UPDATE devices SET status = 'revoked', revoked_at = ? WHERE id = ? AND status <> 'revoked'", [now(), id]);
      const device = await deviceRow(q, id);
      if (!device) fail('E_NOT_FOUND', `revokeDevice: no device "${id}"`);
      return device;
    });
  }

  // --- results -------------------------------------------------------------------------

  /**
   * 'replayed' (same body hash) or 'conflict' (another body) when (deviceId,
   * idempotencyKey) is stored: the stored result is returned and nothing written. A new
   * result needs an existing device and model version whose key id matches (E_NOT_FOUND
   * otherwise), and either a label below the version's output count or a range flag (no
   * label). Whether the device is active or the version retired, and whether scores are in
   * range, is the caller's policy. Two racing calls with one key store one row: the insert
   * does nothing on the unique key, and the loser returns the winner's row. The result is
   * stored decrypted: for callers that decrypt before they store.
   */
  async recordResult(result: NewResult): Promise<RecordOutcome> {
    if (!isPlainObject(result)) invalid('recordResult: the result must be an object');
    const identity = checkIdentity(result, 'recordResult');
    const decrypted = checkDecryption(result, 'recordResult');
    if ('error' in decrypted) invalid('recordResult: a result to record needs a label or a range flag');
    return this.insertResult('recordResult', identity, {
      state: 'decrypted',
      label: decrypted.label,
      scores: decrypted.scores,
      noise_budget_bits: decrypted.noiseBudgetBits,
      range_flag: decrypted.rangeFlag,
      decrypted_at: now(),
      ciphertext: null,
    });
  }

  /** Stores a result pending decryption with its ciphertext: recordResult's rules, without a label. */
  async acceptResult(result: NewPendingResult): Promise<RecordOutcome> {
    if (!isPlainObject(result)) invalid('acceptResult: the result must be an object');
    const identity = checkIdentity(result, 'acceptResult');
    const ciphertext = checkBytes(result.ciphertext, 'ciphertext');
    return this.insertResult('acceptResult', identity, {
      state: 'pending',
      label: null,
      scores: null,
      noise_budget_bits: null,
      range_flag: null,
      decrypted_at: null,
      ciphertext,
    });
  }

  /**
   * The result is inserted by one statement that checks what it depends on (the device,
   * the model version with this key id, the label below its output count) and does
   * nothing when the key is stored; a pending result's ciphertext by a second one, in the
   * same transaction, which takes the new row's id from its key (PostgreSQL sends both in
   * one round trip). Only when nothing was inserted is the reason read (explain).
   */
  private async insertResult(what: string, identity: ResultIdentity, columns: InsertedColumns): Promise<RecordOutcome> {
    const insert = { sql: INSERT_RESULT, params: insertParams(identity, columns) };
    if (columns.ciphertext === null) {
      return this.engine.write(what, async (q): Promise<RecordOutcome> => {
        const row = await q.get<ResultRow>(insert.sql, insert.params);
        if (!row) return explain(q, what, identity, columns.label);
        await this.engine.announce(q, [row.id]);
        return { kind: 'created', result: toResult(row) };
      });
    }
    const { deviceId, idempotencyKey, bodySha256 } = identity;
    const [inserted] = await this.engine.batch(what, [insert, { sql: INSERT_CIPHERTEXT, params: [columns.ciphertext, deviceId, idempotencyKey, bodySha256] }]);
    const row = inserted![0] as ResultRow | undefined;
    if (row) return { kind: 'created', result: toResult(row) };
    return this.engine.read(what, (q) => explain(q, what, identity, columns.label));
  }

  /**
   * One transaction: first the pending results whose claim expired after `maxAttempts`
   * claims are marked failed (a ciphertext that kills its worker is not retried forever);
   * then up to `limit` claimable results are claimed, oldest first. PostgreSQL skips rows
   * another transaction is claiming (FOR UPDATE SKIP LOCKED), so instances never wait on
   * each other; SQLite's write transaction holds the whole database.
   */
  async claimResults(options: { worker: string; limit: number; claimTimeoutMs: number; maxAttempts: number }): Promise<Claims> {
    const o = checkOptions(options, ['worker', 'limit', 'claimTimeoutMs', 'maxAttempts'], 'claimResults');
    const worker = checkId(o.worker, 'worker');
    const limit = checkInt(o.limit, 'limit', 1, 10_000);
    const timeout = checkInt(o.claimTimeoutMs, 'claimTimeoutMs', 0, 7 * 24 * 3600 * 1000);
    const maxAttempts = checkInt(o.maxAttempts, 'maxAttempts', 1, 1000);
    return this.engine.write('claimResults', async (q) => {
      const at = now();
      const expired = new Date(Date.parse(at) - timeout).toISOString();
      const abandoned = await q.all<ResultRow>(
        `UPDATE results SET state = 'failed', error = ?, decrypted_at = ?
         WHERE id IN (SELECT id FROM results WHERE state = 'pending' AND claimed_at < ? AND attempts >= ? ORDER BY id LIMIT ?${this.engine.skipLocked})
         RETURNING ${RESULT_COLUMNS}`,
        [`abandoned: claimed ${maxAttempts} times and never completed (its decryption worker died or hung each time)`, at, expired, maxAttempts, limit],
      );
      const claimed = await q.all<ClaimedRow>(
        `UPDATE results SET claimed_by = ?, claimed_at = ?, attempts = attempts + 1
         WHERE id IN (SELECT id FROM results WHERE state = 'pending' AND (claimed_at IS NULL OR claimed_at < ?) AND attempts < ?
                      ORDER BY id LIMIT ?${this.engine.skipLocked})
         RETURNING id, device_id, model_id, version, key_id, attempts, received_at`,
        [worker, at, expired, maxAttempts, limit],
      );
      const ids = claimed.map((row) => row.id);
      const ciphertexts = new Map(
        ids.length === 0
          ? []
          : (
              await q.all<{ result_id: number; ciphertext: unknown }>(
                `SELECT result_id, ${this.engine.ciphertexts.select('ciphertext')} AS ciphertext FROM result_ciphertexts WHERE result_id IN (${ids.map(() => '?').join(', ')})`,
                ids,
              )
            ).map((row) => [row.result_id, this.engine.ciphertexts.decode(row.ciphertext)]),
      );
      if (abandoned.length > 0) await this.engine.announce(q, abandoned.map((row) => row.id).sort((a, b) => a - b));
      return {
        claimed: claimed
          .map((row) => ({
            id: row.id,
            deviceId: row.device_id,
            modelId: row.model_id,
            version: row.version,
            keyId: row.key_id,
            attempt: row.attempts,
            ciphertext: ciphertextOf(ciphertexts, row.id),
            receivedAt: row.received_at,
          }))
          .sort((a, b) => a.id - b.id),
        abandoned: abandoned.map(toResult).sort((a, b) => a.id - b.id),
      };
    });
  }

  async completeResult(id: number, attempt: number, outcome: DecryptionOutcome): Promise<ResultRecord> {
    const [written] = await this.completeResults([{ id, attempt, outcome }], 'completeResult');
    if (written instanceof StoreError) throw written;
    return written!;
  }

  /**
   * One transaction: the results are read and locked in one statement (by ascending id,
   * so that two writers never wait on each other in a cycle), each is checked as
   * completeResult checks it and written, and those written are announced together.
   */
  async completeResults(items: readonly CompletedResult[], what = 'completeResults'): Promise<Array<ResultRecord | StoreError>> {
    if (!Array.isArray(items)) invalid(`${what}: the items must be an array, got ${describe(items)}`);
    if (items.length > MAX_RESULT_IDS) invalid(`${what}: at most ${MAX_RESULT_IDS} results at once, got ${items.length}`);
    const checked = items.map((item) => {
      if (!isPlainObject(item)) invalid(`${what}: each item must be an object`);
      const id = checkInt(item.id, 'id', 1);
      const attempt = checkInt(item.attempt, 'attempt', 1);
      if (!isPlainObject(item.outcome)) invalid(`${what}: the outcome must be an object`);
      return { id, attempt, decrypted: checkDecryption(item.outcome, what) };
    });
    if (new Set(checked.map((item) => item.id)).size !== checked.length) invalid(`${what}: a result is named twice`);
    if (checked.length === 0) return [];
    return this.engine.write(what, async (q) => {
      const ids = checked.map((item) => item.id).sort((a, b) => a - b);
      const rows = await q.all<{ id: number; state: ResultState; attempts: number; outputs: number }>(
        `SELECT id, state, attempts, (SELECT outputs FROM model_versions mv WHERE mv.model_id = results.model_id AND mv.version = results.version) AS outputs
         FROM results WHERE id IN (${ids.map(() => '?').join(', ')}) ORDER BY id${this.engine.forUpdate}`,
        ids,
      );
      const current = new Map(rows.map((row) => [row.id, row]));
      const at = now();
      const written: Array<ResultRecord | StoreError> = [];
      for (const { id, attempt, decrypted } of checked) {
        const row = current.get(id);
        if (!row) {
          written.push(new StoreError('E_NOT_FOUND', `${what}: no result ${id}`));
        } else if (row.state !== 'pending') {
          written.push(new StoreError('E_CONFLICT', `${what}: result ${id} is already ${row.state}; a result is written once`));
        } else if (row.attempts !== attempt) {
          written.push(new StoreError('E_CONFLICT', `${what}: claim ${attempt} of result ${id} expired; claim ${row.attempts} holds it now`));
        } else if ('error' in decrypted) {
          const updated = await q.get<ResultRow>(`UPDATE results SET state = 'failed', error = ?, decrypted_at = ? WHERE id = ? RETURNING ${RESULT_COLUMNS}`, [decrypted.error, at, id]);
          written.push(toResult(updated!));
        } else if (decrypted.label !== null && decrypted.label >= row.outputs) {
          written.push(new StoreError('E_INVALID', `${what}: label ${decrypted.label} is out of range for a model with ${row.outputs} outputs`));
        } else {
          const updated = await q.get<ResultRow>(
            `UPDATE results SET state = 'decrypted', label = ?, scores = ?, noise_budget_bits = ?, range_flag = ?, decrypted_at = ? WHERE id = ? RETURNING ${RESULT_COLUMNS}`,
            [decrypted.label, decrypted.scores, decrypted.noiseBudgetBits, decrypted.rangeFlag, at, id],
          );
          written.push(toResult(updated!));
        }
      }
      const announced = written.filter((r): r is ResultRecord => !(r instanceof StoreError)).map((r) => r.id).sort((a, b) => a - b);
      if (announced.length > 0) await this.engine.announce(q, announced);
      return written;
    });
  }

  /** Results by id (ascending, or descending with order 'desc'), filtered as `options` says, at most `limit`. */
  async listResults(options?: ResultQuery): Promise<ResultRecord[]> {
    const o = checkOptions(options, ['deviceId', 'modelId', 'version', 'state', 'since', 'until', 'afterId', 'limit', 'order'], 'listResults');
    const where: string[] = ['id > ?'];
    const params: unknown[] = [o.afterId === undefined ? 0 : checkInt(o.afterId, 'afterId', 0)];
    const filter = (sql: string, value: unknown) => {
      where.push(sql);
      params.push(value);
    };
    if (o.deviceId !== undefined) filter('device_id = ?', checkId(o.deviceId, 'deviceId'));
    if (o.modelId !== undefined) filter('model_id = ?', checkModelId(o.modelId));
    if (o.version !== undefined) {
      if (o.modelId === undefined) invalid('listResults: version filters a model: give modelId too');
      filter('version = ?', checkInt(o.version, 'version', 1));
    }
    if (o.state !== undefined) filter('state = ?', checkState(o.state));
    if (o.since !== undefined) filter('received_at >= ?', checkTimestamp(o.since, 'since'));
    if (o.until !== undefined) filter('received_at < ?', checkTimestamp(o.until, 'until'));
    if (o.order !== undefined && o.order !== 'asc' && o.order !== 'desc') invalid(`order must be 'asc' or 'desc', got ${describe(o.order)}`);
    let sql = `SELECT ${RESULT_COLUMNS} FROM results WHERE ${where.join(' AND ')} ORDER BY id${o.order === 'desc' ? ' DESC' : ''}`;
    if (o.limit !== undefined) {
      sql += ' LIMIT ?';
      params.push(checkInt(o.limit, 'limit', 0));
    }
    return this.engine.read('listResults', async (q) => (await q.all<ResultRow>(sql, params)).map(toResult));
  }

  async resultStats(options: { since: string; nowMs?: number }): Promise<ResultStats> {
    const o = checkOptions(options, ['since', 'nowMs'], 'resultStats');
    const since = checkTimestamp(o.since, 'since');
    const nowMs = o.nowMs === undefined ? Date.now() : checkInt(o.nowMs, 'nowMs', 0);
    const minuteAgo = new Date(nowMs - 60_000).toISOString();
    return this.engine.read('resultStats', async (q) => {
      const minutes = await q.all<{ minute: string; outcome: string; n: number }>(
        `SELECT minute, outcome, count(*) AS n FROM (SELECT substr(received_at, 1, 16) AS minute, ${OUTCOME} AS outcome FROM results WHERE received_at >= ?) AS r
         GROUP BY minute, outcome ORDER BY minute, outcome`,
        [since],
      );
      const devices = await q.all<{ device_id: string; n: number; recent: number; last_received: string; last_captured: string | null }>(
        `SELECT device_id, count(*) AS n, sum(CASE WHEN received_at >= ? THEN 1 ELSE 0 END) AS recent, max(received_at) AS last_received, max(captured_at) AS last_captured
         FROM results WHERE received_at >= ? GROUP BY device_id ORDER BY device_id`,
        [minuteAgo, since],
      );
      const outcomes: Record<string, number> = {};
      const timeline: ResultStats['timeline'] = [];
      for (const { minute, outcome, n } of minutes) {
        outcomes[outcome] = (outcomes[outcome] ?? 0) + Number(n);
        if (timeline.at(-1)?.minute !== minute) timeline.push({ minute, outcomes: {} });
        timeline.at(-1)!.outcomes[outcome] = Number(n);
      }
      return {
        since,
        outcomes,
        devices: devices.map((d) => ({ deviceId: d.device_id, results: Number(d.n), lastMinute: Number(d.recent), lastReceivedAt: d.last_received, lastCapturedAt: d.last_captured })),
        timeline,
      };
    });
  }

  async getResults(ids: readonly number[]): Promise<ResultRecord[]> {
    if (!Array.isArray(ids)) invalid(`getResults: ids must be an array, got ${describe(ids)}`);
    if (ids.length > MAX_RESULT_IDS) invalid(`getResults: at most ${MAX_RESULT_IDS} ids at once, got ${ids.length}`);
    const unique = [...new Set(ids.map((id) => checkInt(id, 'id', 1)))];
    if (unique.length === 0) return [];
    return this.engine.read('getResults', async (q) =>
      (await q.all<ResultRow>(`SELECT ${RESULT_COLUMNS} FROM results WHERE id IN (${unique.map(() => '?').join(', ')}) ORDER BY id`, unique)).map(toResult),
    );
  }

  /**
   * The device's bucket in one upsert: created full less this request, or refilled for the
   * time since its last request (capped at `burst`) and, if a token is there, taken. A
   * refused request changes nothing. Clocks of instances may differ a little: time never
   * runs backwards for a bucket (a refill is never negative).
   */
  async takeRateToken(deviceId: string, limit: RateLimit): Promise<boolean> {
    const id = checkId(deviceId, 'deviceId');
    const o = checkOptions(limit, ['burst', 'perSecond', 'nowMs'], 'takeRateToken');
    const burst = checkPositive(o.burst, 'burst', 1);
    const perSecond = checkPositive(o.perSecond, 'perSecond', Number.MIN_VALUE);
    const nowMs = checkInt(o.nowMs, 'nowMs', 0);
    const level = `CASE WHEN device_rates.tokens + ${REFILL} > CAST(? AS DOUBLE PRECISION) THEN CAST(? AS DOUBLE PRECISION) ELSE device_rates.tokens + ${REFILL} END`;
    const refill = [nowMs, nowMs, perSecond];
    return this.engine.single('takeRateToken', async (q) => {
      const row = await q.get<{ tokens: number }>(
        `INSERT INTO device_rates (device_id, tokens, at_ms) VALUES (?, CAST(? AS DOUBLE PRECISION), CAST(? AS BIGINT))
         ON CONFLICT (device_id) DO UPDATE SET tokens = ${level} - 1, at_ms = CAST(? AS BIGINT)
         WHERE ${level} >= 1
         RETURNING tokens`,
        [id, burst - 1, nowMs, ...refill, burst, burst, ...refill, nowMs, ...refill, burst, burst, ...refill],
      );
      return row !== undefined;
    });
  }

  async watchResults(watcher: ResultWatcher): Promise<ResultWatch> {
    if (watcher === null || typeof watcher !== 'object' || typeof watcher.onResults !== 'function') {
      invalid('watchResults: the watcher must be an object with onResults(ids)');
    }
    return this.engine.watch(watcher);
  }

  async countResults(): Promise<number> {
    return this.engine.read('countResults', async (q) => (await q.get<{ n: number }>('SELECT count(*) AS n FROM results'))!.n);
  }

  // --- audit ---------------------------------------------------------------------------

  async audit(actor: string, event: string, details: Record<string, unknown> = {}): Promise<void> {
    const a = checkText(actor, 'actor', 200);
    const e = checkText(event, 'event', 200);
    const d = jsonObject(details, 'details');
    await this.engine.write('audit', (q) => q.run('INSERT INTO audit_events (at, actor, event, details) VALUES (?, ?, ?, ?)', [now(), a, e, d]));
  }

  /** The latest `limit` events (all when omitted), oldest first. */
  async listAudit(options?: { limit?: number }): Promise<AuditEvent[]> {
    const o = checkOptions(options, ['limit'], 'listAudit');
    const limit = o.limit === undefined ? null : checkInt(o.limit, 'limit', 0);
    return this.engine.read('listAudit', async (q) => {
      const rows =
        limit === null
          ? await q.all<AuditRow>('SELECT id, at, actor, event, details FROM audit_events ORDER BY id')
          : await q.all<AuditRow>('SELECT id, at, actor, event, details FROM (SELECT * FROM audit_events ORDER BY id DESC LIMIT ?) AS latest ORDER BY id', [limit]);
      return rows.map(toAudit);
    });
  }

  // --- maintenance ---------------------------------------------------------------------

  integrityCheck(): Promise<string> {
    return this.engine.integrityCheck();
  }

  /** Closes the database (idempotent); every other method then fails with E_CLOSED. */
  close(): Promise<void> {
    return this.engine.close();
  }
}

interface ResultIdentity {
  deviceId: string;
  modelId: string;
  version: number;
  keyId: string;
  idempotencyKey: string;
  bodySha256: string;
  receivedAt: string;
  capturedAt: string | null;
  /** JSON text. */
  receipt: string;
}

interface InsertedColumns {
  state: ResultState;
  label: number | null;
  /** JSON text. */
  scores: string | null;
  noise_budget_bits: number | null;
  range_flag: RangeFlag | null;
  decrypted_at: string | null;
  ciphertext: Buffer | null;
}

const RESULT_STATES: readonly ResultState[] = ['pending', 'decrypted', 'failed'];

function checkPositive(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > 1e9) {
    invalid(`${name} must be a finite number from ${min === 1 ? 1 : 'above 0'} to 1e9, got ${describe(value)}`);
  }
  return value;
}

function checkState(value: unknown): ResultState {
  if (!RESULT_STATES.includes(value as ResultState)) invalid(`state must be one of ${RESULT_STATES.map((s) => `'${s}'`).join(', ')}, got ${describe(value)}`);
  return value as ResultState;
}

function checkIdentity(result: Record<string, unknown>, what: string): ResultIdentity {
  return {
    deviceId: checkId(result.deviceId, 'deviceId'),
    modelId: checkModelId(result.modelId),
    version: checkInt(result.version, 'version', 1),
    keyId: checkId(result.keyId, 'keyId'),
    idempotencyKey: checkId(result.idempotencyKey, 'idempotencyKey'),
    bodySha256: checkHex64(result.bodySha256, 'bodySha256'),
    receivedAt: checkTimestamp(result.receivedAt, 'receivedAt'),
    capturedAt: result.capturedAt === undefined || result.capturedAt === null ? null : checkTimestamp(result.capturedAt, 'capturedAt'),
    receipt: jsonObject(result.receipt, `${what}: receipt`),
  };
}

/** A decryption's outcome, checked: scores as JSON text with a label or a flag (only one), or an error of 1–MAX_RESULT_ERROR characters. */
function checkDecryption(
  outcome: Record<string, unknown>,
  what: string,
): { error: string } | { label: number | null; scores: string; noiseBudgetBits: number | null; rangeFlag: RangeFlag | null } {
  if ('error' in outcome) {
    const extra = Object.keys(outcome).filter((key) => key !== 'error');
    if (extra.length > 0) invalid(`${what}: a failed decryption has an error and nothing else, got ${extra.join(', ')} too`);
    if (typeof outcome.error !== 'string' || outcome.error.trim().length === 0) invalid(`${what}: error must be a non-empty string, got ${describe(outcome.error)}`);
    return { error: outcome.error.length > MAX_RESULT_ERROR ? `${outcome.error.slice(0, MAX_RESULT_ERROR - 1)}…` : outcome.error };
  }
  if (outcome.label === undefined) invalid(`${what}: the outcome needs a label (a number, or null with a range flag) or an error`);
  const label = outcome.label === null ? null : checkInt(outcome.label, 'label', 0, (1 << 20) - 1);
  const scores = checkScores(outcome.scores);
  const noiseBudgetBits =
    outcome.noiseBudgetBits === undefined || outcome.noiseBudgetBits === null ? null : checkInt(outcome.noiseBudgetBits, 'noiseBudgetBits', 0, MAX_NOISE_BUDGET_BITS);
  const rangeFlag = outcome.rangeFlag === undefined || outcome.rangeFlag === null ? null : checkRangeFlag(outcome.rangeFlag);
  if ((label === null) !== (rangeFlag !== null)) {
    invalid(rangeFlag === null ? `${what}: a result without a label must carry a range flag` : `${what}: a flagged result has no label`);
  }
  return { label, scores, noiseBudgetBits, rangeFlag };
}

async function modelVersionRow(q: Queries, modelId: string, version: number): Promise<ModelVersion | null> {
  const row = await q.get<ModelVersionRow>(`SELECT ${MODEL_VERSION_COLUMNS} FROM model_versions WHERE model_id = ? AND version = ?`, [modelId, version]);
  return row ? toModelVersion(row) : null;
}

async function deviceRow(q: Queries, id: string): Promise<DeviceRecord | null> {
  const row = await q.get<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = ?`, [id]);
  return row ? toDevice(row) : null;
}

/**
 * Inserts a result unless its (device, idempotency key) is stored, and only if the device
 * exists, the model version exists with this key id, and the label (if any) is below the
 * version's output count: RETURNING its row when it was inserted, nothing otherwise. A
 * stored key is looked up before the insert is tried, so that a replay takes no id (an
 * insert that conflicts does, on both engines); ON CONFLICT covers two racing calls.
 */
const INSERT_RESULT = `INSERT INTO results (device_id, model_id, version, key_id, idempotency_key, body_sha256, state, label, scores, noise_budget_bits, range_flag,
                                            received_at, captured_at, decrypted_at, receipt, attempts)
  SELECT CAST(? AS TEXT), mv.model_id, mv.version, mv.key_id, CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS TEXT),
         CAST(? AS INTEGER), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), 0
  FROM model_versions mv
  WHERE mv.model_id = ? AND mv.version = ? AND mv.key_id = ? AND (CAST(? AS INTEGER) IS NULL OR CAST(? AS INTEGER) < mv.outputs)
    AND EXISTS (SELECT 1 FROM devices WHERE id = ?)
    AND NOT EXISTS (SELECT 1 FROM results WHERE device_id = ? AND idempotency_key = ?)
  ON CONFLICT (device_id, idempotency_key) DO NOTHING
  RETURNING ${RESULT_COLUMNS}`;

function insertParams(identity: ResultIdentity, columns: InsertedColumns): unknown[] {
  const { deviceId, modelId, version, keyId, idempotencyKey, bodySha256, receivedAt, capturedAt, receipt } = identity;
  return [
    deviceId,
    idempotencyKey,
    bodySha256,
    columns.state,
    columns.label,
    columns.scores,
    columns.noise_budget_bits,
    columns.range_flag,
    receivedAt,
    capturedAt,
    columns.decrypted_at,
    receipt,
    modelId,
    version,
    keyId,
    columns.label,
    columns.label,
    deviceId,
    deviceId,
    idempotencyKey,
  ];
}

/**
 * A pending result's ciphertext, written once: the row is found by its key, so this
 * statement needs nothing from the insert before it. It writes nothing for a result that
 * was not inserted: one stored before under the key has its ciphertext already (a pending
 * one; the same bytes when the body hash is the same) or none to have (decrypted before
 * it was stored), and a body of another hash is not this result.
 */
const INSERT_CIPHERTEXT = `INSERT INTO result_ciphertexts (result_id, ciphertext)
  SELECT id, ? FROM results WHERE device_id = ? AND idempotency_key = ? AND body_sha256 = ? AND state = 'pending'
  ON CONFLICT (result_id) DO NOTHING`;

/**
 * Why a result was not inserted: the row stored under its key ('replayed' with the same
 * body hash, 'conflict' with another), or the device, model version, key or label that
 * was refused. One statement reads the row (its columns are null when there is none), the
 * device and the model version.
 */
async function explain(q: Queries, what: string, identity: ResultIdentity, label: number | null): Promise<RecordOutcome> {
  const { deviceId, modelId, version, keyId, idempotencyKey, bodySha256 } = identity;
  const before = (await q.get<NullableRow<ResultRow> & { device_found: number | null; mv_key_id: string | null; mv_outputs: number | null }>(
    `SELECT ${RESULT_COLUMNS_OF_R}, (SELECT 1 FROM devices WHERE id = ?) AS device_found, mv.key_id AS mv_key_id, mv.outputs AS mv_outputs
     FROM (SELECT 1 AS one) AS one
     LEFT JOIN model_versions mv ON mv.model_id = ? AND mv.version = ?
     LEFT JOIN results r ON r.device_id = ? AND r.idempotency_key = ?`,
    [deviceId, modelId, version, deviceId, idempotencyKey],
  ))!;
  if (before.id !== null) {
    const found = toResult(before as ResultRow);
    return { kind: found.bodySha256 === bodySha256 ? 'replayed' : 'conflict', result: found };
  }
  if (before.device_found === null) fail('E_NOT_FOUND', `${what}: no device "${deviceId}"`);
  if (before.mv_key_id === null) fail('E_NOT_FOUND', `${what}: model "${modelId}" has no version ${version}`);
  if (before.mv_key_id !== keyId) fail('E_NOT_FOUND', `${what}: key "${keyId}" does not belong to model "${modelId}" version ${version}`);
  if (label !== null && label >= before.mv_outputs!) invalid(`${what}: label ${label} is out of range for a model with ${before.mv_outputs} outputs`);
  fail('E_DB', `${what}: (${deviceId}, ${idempotencyKey}) was neither inserted nor found`);
}

/** The ciphertext of a claimed result: every pending result has one (stored with it, in one transaction). */
function ciphertextOf(ciphertexts: ReadonlyMap<number, Uint8Array>, id: number): Uint8Array {
  const ciphertext = ciphertexts.get(id);
  if (ciphertext === undefined) fail('E_CORRUPT', `claimResults: pending result ${id} has no ciphertext`);
  return ciphertext;
}
