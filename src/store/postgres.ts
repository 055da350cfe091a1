/**
 * The PostgreSQL engine of the Store (node-postgres, a pool of connections): the shared
 * state of several backend instances. The store's logic is shared with SQLite (sql.ts);
 * this file holds what is PostgreSQL's own.
 *
 * - The same tables, columns and constraints as SQLite's (its schema 7 is step 5 here):
 *   idempotency keys unique per device, results written once after they are stored
 *   pending and never deleted, audit events append-only and device states moving
 *   forward only (triggers), one-time enrollment tokens, CHECKs on every enum, hash and
 *   JSON column. JSON and timestamps are TEXT, as in SQLite, so both engines return
 *   exactly what was stored.
 * - Writes are READ COMMITTED transactions whose statements are safe under concurrency:
 *   a result is inserted ON CONFLICT DO NOTHING, a token is used by one UPDATE, version
 *   numbers are given out under a row lock on the model.
 * - Connections in pipeline mode: a batch (BEGIN, an ingested result's two statements,
 *   COMMIT) is written at once and answered in one round trip.
 * - Versioned migrations of its own (`MIGRATIONS`), each in a transaction that holds an
 *   advisory lock, so instances starting at once apply each step once; a database whose
 *   schema is newer than this code is refused before anything is written to it.
 * - The tables live in the connection's current schema: `?options=-c search_path=NAME`
 *   in the URL puts a store in a schema of its own.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { fail, StoreError, type StoreErrorCode } from './errors';
import {
  type AppliedMigration,
  checkApplied,
  checkMigrationList,
  type Engine,
  type Migration,
  PENDING_CHECK_APART,
  type Queries,
  RESULT_STATE_CHECKS,
  RESULT_STATE_COLUMNS,
  SqlStore,
  type Statement,
  tell,
} from './sql';
import type { ResultWatch, ResultWatcher, Store } from './types';
import { now } from './validate';

/** How long opening the store waits for a connection before failing with E_OPEN. */
export const CONNECT_TIMEOUT_MS = 5000;
/** Connections per store (per backend instance). */
export const POOL_SIZE = 10;

const HEX64_CHECK = (column: string): string => `${column} ~ '^[0-9a-f]{64}$'`;
const JSON_CHECK = (column: string, type: 'object' | 'array'): string => `jsonb_typeof(${column}::jsonb) = '${type}'`;
const refuse = (table: string, event: string, message: string): string => `
      CREATE TRIGGER ${table}_no_${event.toLowerCase()}
      BEFORE ${event} ON ${table}
      FOR EACH ROW EXECUTE FUNCTION sealed_edge_refuse('${message}');`;

/** The values rows stored before step 2 take in its two NOT NULL columns (defaults dropped once they are filled). */
const EXISTING_ROWS: Record<string, string> = { state: "'decrypted'", attempts: '0' };
const addColumnForExistingRows = (column: string): string => {
  const value = EXISTING_ROWS[column.split(' ')[0]!];
  return `ADD COLUMN ${column}${value === undefined ? '' : ` DEFAULT ${value}`}`;
};

/** The schema, in order. Append new steps; never edit a step that has shipped. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE FUNCTION sealed_edge_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
      END $$;

      CREATE TABLE models (
        id         TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
      );

      CREATE TABLE key_pairs (
        id                 TEXT PRIMARY KEY,
        model_id           TEXT NOT NULL REFERENCES models (id),
        created_at         TEXT NOT NULL,
        wrapped_secret_key BYTEA NOT NULL CHECK (length(wrapped_secret_key) > 0),
        device_keys        BYTEA NOT NULL CHECK (length(device_keys) > 0),
        UNIQUE (id, model_id)
      );

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
      );

      CREATE TABLE signing_keys (
        seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id                  TEXT NOT NULL UNIQUE,
        created_at          TEXT NOT NULL,
        public_key          BYTEA NOT NULL CHECK (length(public_key) = 32),
        wrapped_private_key BYTEA NOT NULL CHECK (length(wrapped_private_key) > 0)
      );

      CREATE TABLE devices (
        seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
      );

      CREATE FUNCTION devices_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.status <> OLD.status AND NOT (
          (OLD.status = 'pending' AND NEW.status IN ('active', 'revoked')) OR
          (OLD.status = 'active' AND NEW.status = 'revoked')) THEN
          RAISE EXCEPTION 'a device status only moves forward' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW.token_sha256 <> OLD.token_sha256 THEN
          RAISE EXCEPTION 'an enrollment token hash never changes' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
      END $$;

      CREATE TRIGGER devices_forward_only BEFORE UPDATE ON devices
      FOR EACH ROW EXECUTE FUNCTION devices_forward_only();

      CREATE TABLE results (
        id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
      );

      CREATE INDEX results_by_device ON results (device_id, id);
      ${refuse('results', 'UPDATE', 'results are never modified')}

      CREATE TABLE audit_events (
        id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL CHECK (length(actor) > 0),
        event   TEXT NOT NULL CHECK (length(event) > 0),
        details TEXT NOT NULL CHECK (${JSON_CHECK('details', 'object')})
      );
      ${refuse('audit_events', 'UPDATE', 'audit events are append-only')}
      ${refuse('audit_events', 'DELETE', 'audit events are append-only')}
    `,
  },
  {
    version: 2,
    name: 'results pending decryption',
    // As SQLite's step 4: a result is stored 'pending' with its ciphertext when the device
    // is answered, claimed by a decryption worker and completed once ('decrypted' or
    // 'failed'). Rows stored before were decrypted before they were stored: 'decrypted' at
    // their received_at. A pending row may be claimed and completed and nothing else; a
    // decrypted or failed row never changes; no row is deleted.
    sql: `
      DROP TRIGGER results_no_update ON results;
      ALTER TABLE results
        DROP CONSTRAINT results_check,
        ALTER COLUMN scores DROP NOT NULL,
        ${RESULT_STATE_COLUMNS('BYTEA').map(addColumnForExistingRows).join(',\n        ')};
      UPDATE results SET decrypted_at = received_at;
      ALTER TABLE results
        ALTER COLUMN state DROP DEFAULT,
        ALTER COLUMN attempts DROP DEFAULT,
        ${RESULT_STATE_CHECKS.map((check) => `ADD ${check}`).join(',\n        ')};

      CREATE INDEX results_pending ON results (id) WHERE state = 'pending';

      CREATE FUNCTION results_written_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF OLD.state <> 'pending' THEN
          RAISE EXCEPTION 'results are never modified once decrypted (or failed)' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF (NEW.id, NEW.device_id, NEW.model_id, NEW.version, NEW.key_id, NEW.idempotency_key, NEW.body_sha256, NEW.received_at, NEW.receipt, NEW.ciphertext)
           IS DISTINCT FROM (OLD.id, OLD.device_id, OLD.model_id, OLD.version, OLD.key_id, OLD.idempotency_key, OLD.body_sha256, OLD.received_at, OLD.receipt, OLD.ciphertext)
           OR NEW.attempts < OLD.attempts THEN
          RAISE EXCEPTION 'results are never modified: only a pending result is claimed and completed' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
      END $$;

      CREATE TRIGGER results_written_once BEFORE UPDATE ON results
      FOR EACH ROW EXECUTE FUNCTION results_written_once();
      ${refuse('results', 'DELETE', 'results are never deleted')}
    `,
  },
  {
    version: 3,
    name: 'device rate buckets',
    // As SQLite's step 5: each device's token bucket, shared by every instance
    // (takeRateToken). UNLOGGED: a bucket is updated on every request and is not worth a
    // WAL record; after a crash of the server the table is emptied and every bucket starts
    // full again, which a rate limit can afford.
    sql: `
      CREATE UNLOGGED TABLE device_rates (
        device_id TEXT PRIMARY KEY REFERENCES devices (id),
        tokens    DOUBLE PRECISION NOT NULL,
        at_ms     BIGINT NOT NULL CHECK (at_ms >= 0)
      );
    `,
  },
  {
    version: 4,
    name: 'result capture time',
    // As SQLite's step 6: the device's capture time (null for older rows), fixed like the
    // rest of a result's identity, and an index on the receipt time for the cockpit.
    sql: `
      ALTER TABLE results ADD COLUMN captured_at TEXT;
      CREATE INDEX results_by_received ON results (received_at);
      CREATE OR REPLACE FUNCTION results_written_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF OLD.state <> 'pending' THEN
          RAISE EXCEPTION 'results are never modified once decrypted (or failed)' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF (NEW.id, NEW.device_id, NEW.model_id, NEW.version, NEW.key_id, NEW.idempotency_key, NEW.body_sha256, NEW.received_at, NEW.receipt, NEW.ciphertext, NEW.captured_at)
           IS DISTINCT FROM (OLD.id, OLD.device_id, OLD.model_id, OLD.version, OLD.key_id, OLD.idempotency_key, OLD.body_sha256, OLD.received_at, OLD.receipt, OLD.ciphertext, OLD.captured_at)
           OR NEW.attempts < OLD.attempts THEN
          RAISE EXCEPTION 'results are never modified: only a pending result is claimed and completed' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
      END $$;
    `,
  },
  {
    version: 5,
    name: 'result ciphertexts apart',
    // As SQLite's step 7: a result's ciphertext in a table of its own, written once with
    // the result and never changed or deleted, so that the store's SQL is the same on both
    // engines (here an UPDATE kept a TOASTed ciphertext where it was, but each result row
    // carried it). Every stored ciphertext moves under its result's id; the pending rule
    // that named the column goes with it (DROP COLUMN drops it) and comes back without it,
    // and the trigger stops comparing it.
    sql: `
      CREATE TABLE result_ciphertexts (
        result_id  BIGINT PRIMARY KEY REFERENCES results (id),
        ciphertext BYTEA NOT NULL CHECK (length(ciphertext) > 0)
      );
      INSERT INTO result_ciphertexts (result_id, ciphertext)
      SELECT id, ciphertext FROM results WHERE ciphertext IS NOT NULL ORDER BY id;
      ${refuse('result_ciphertexts', 'UPDATE', 'result ciphertexts are never modified')}
      ${refuse('result_ciphertexts', 'DELETE', 'result ciphertexts are never deleted')}

      CREATE OR REPLACE FUNCTION results_written_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF OLD.state <> 'pending' THEN
          RAISE EXCEPTION 'results are never modified once decrypted (or failed)' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF (NEW.id, NEW.device_id, NEW.model_id, NEW.version, NEW.key_id, NEW.idempotency_key, NEW.body_sha256, NEW.received_at, NEW.receipt, NEW.captured_at)
           IS DISTINCT FROM (OLD.id, OLD.device_id, OLD.model_id, OLD.version, OLD.key_id, OLD.idempotency_key, OLD.body_sha256, OLD.received_at, OLD.receipt, OLD.captured_at)
           OR NEW.attempts < OLD.attempts THEN
          RAISE EXCEPTION 'results are never modified: only a pending result is claimed and completed' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
      END $$;
      ALTER TABLE results DROP COLUMN ciphertext;
      ALTER TABLE results ADD ${PENDING_CHECK_APART};
    `,
  },
];

/** The schema version this code creates and understands. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;

/** True for a location that names a PostgreSQL database rather than a SQLite file. */
export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}

/** The URL with its password hidden, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

function checkUrl(url: unknown): string {
  if (typeof url !== 'string' || !isPostgresUrl(url)) {
    fail('E_INVALID', `a PostgreSQL URL must start with postgres:// or postgresql://, got ${typeof url === 'string' ? `'${redactUrl(url)}'` : typeof url}`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    fail('E_INVALID', `'${redactUrl(url)}' is not a valid URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)`);
  }
  if (parsed.hostname === '') fail('E_INVALID', `'${redactUrl(url)}' names no host (postgres://USER:PASSWORD@HOST:PORT/DATABASE)`);
  if (parsed.pathname.length <= 1) fail('E_INVALID', `'${redactUrl(url)}' names no database (postgres://USER:PASSWORD@HOST:PORT/DATABASE)`);
  return url;
}

/** BIGINT (identity columns, count(*)) as a number; ids stay far below 2^53. */
function parseBigint(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new StoreError('E_DB', `a BIGINT from PostgreSQL (${text}) does not fit a JavaScript number`);
  return n;
}
const INT8_OID = 20;
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseBigint : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/**
 * Opens the store in the PostgreSQL database at `url` (postgres://USER:PASSWORD@HOST:PORT/DATABASE),
 * applying pending migrations. A malformed URL is E_INVALID; a database that cannot be
 * reached or logged into is E_OPEN; one whose schema is newer than this code, or that
 * holds other tables, is E_SCHEMA and is left untouched.
 */
export function openPostgresStore(url: string): Promise<Store> {
  return openPostgresStoreWithMigrations(url, MIGRATIONS);
}

/** @internal `openPostgresStore` with another migration list: for tests of the migration runner. */
export async function openPostgresStoreWithMigrations(url: string, migrations: readonly Migration[]): Promise<Store> {
  checkMigrationList(migrations);
  const where = redactUrl(checkUrl(url));
  // Pipeline mode: a connection sends a query without waiting for the answer to the one
  // before (Engine.batch); queries awaited one at a time run as they would without it.
  const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, types: TYPES, pipeline: true });
  // A pooled connection that the server drops while idle is reported here, not to a caller;
  // the pool discards it and the next statement gets a fresh connection or a StoreError.
  pool.on('error', () => undefined);
  let schema: string;
  try {
    const client = await pool.connect().catch((e: unknown) => {
      throw translate(e, `cannot connect to the database ${where}`, 'E_OPEN');
    });
    let broken: Error | undefined;
    const onError = (error: Error) => {
      broken ??= error;
    };
    client.on('error', onError);
    try {
      schema = await inspect(client, where, migrations);
      await migrate(client, where, migrations);
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw translate(e, `cannot open the database ${where}`, 'E_OPEN');
  }
  return new SqlStore(new PostgresEngine(pool, url, where, resultChannel(schema)));
}

/**
 * The NOTIFY channel of the results written in `schema`: one per schema, so that stores
 * in several schemas of one database never hear each other; hashed, since a channel name
 * is an identifier of at most 63 bytes and a schema name may take 63 itself.
 */
export function resultChannel(schema: string): string {
  return `sealed_edge_results_${createHash('md5').update(schema).digest('hex')}`;
}

async function appliedMigrations(client: pg.PoolClient): Promise<AppliedMigration[] | null> {
  const exists = await client.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t");
  if (exists.rows[0]?.t == null) return null;
  return (await client.query<AppliedMigration>('SELECT version, name FROM schema_migrations ORDER BY version')).rows;
}

/** Refuses, without writing, a database that is not ours or that is newer than `migrations`; returns the schema the store is in. */
async function inspect(client: pg.PoolClient, where: string, migrations: readonly Migration[]): Promise<string> {
  const schema = (await client.query<{ s: string | null }>('SELECT current_schema() AS s')).rows[0]?.s;
  if (schema == null) fail('E_OPEN', `${where}: the connection has no current schema to keep the tables in (check search_path)`);
  const applied = await appliedMigrations(client);
  if (applied === null) {
    const other = await client.query<{ name: string }>(
      "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name LIMIT 1",
    );
    if (other.rows.length > 0) {
      fail('E_SCHEMA', `${where} holds tables (e.g. '${other.rows[0]!.name}') in schema '${schema}' but no schema_migrations: not a sealed-edge database`);
    }
    return schema;
  }
  checkApplied(applied, where, migrations);
  return schema;
}

async function migrate(client: pg.PoolClient, where: string, migrations: readonly Migration[]): Promise<void> {
  for (const migration of migrations) {
    // One transaction per step, under an advisory lock on this schema: instances opening a
    // fresh database at once apply each step exactly once.
    await client.query('BEGIN');
    try {
      await client.query("SELECT pg_advisory_xact_lock(hashtext('sealed-edge migrations ' || current_schema()))");
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version    INTEGER PRIMARY KEY CHECK (version >= 1),
        name       TEXT NOT NULL,
        applied_at TEXT NOT NULL
      )`);
      const applied = (await appliedMigrations(client)) ?? [];
      checkApplied(applied, where, migrations);
      if (!applied.some((row) => row.version === migration.version)) {
        await client.query(migration.sql);
        await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [migration.version, migration.name, now()]);
      }
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Errors

/**
 * SQLSTATE classes and codes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
 * A server that cannot be reached or logged into is E_OPEN while the store opens, and
 * E_UNAVAILABLE afterwards (it went away: a later call may succeed).
 */
function mapSqlState(code: string, fallback: StoreErrorCode): StoreErrorCode {
  if (code === '23505') return 'E_CONFLICT'; // unique_violation
  if (code.startsWith('23') || code.startsWith('22')) return 'E_INVALID'; // integrity constraint, data exception
  if (code === '40001' || code === '40P01' || code === '55P03') return 'E_BUSY'; // serialization, deadlock, lock not available
  if (code.startsWith('XX')) return 'E_CORRUPT'; // internal error, data_corrupted, index_corrupted
  // connection exceptions, authorization, no such database, too many connections, shutting down / terminated / cannot connect now
  if (code.startsWith('08') || code.startsWith('28') || code === '3D000' || code === '53300' || code.startsWith('57P')) {
    return fallback === 'E_OPEN' ? 'E_OPEN' : 'E_UNAVAILABLE';
  }
  return fallback;
}

/** node-postgres's own words for a connection that is gone or never came (it gives them no code). */
const CONNECTION_LOST = /connection terminated|timeout exceeded when trying to connect|not queryable|connection (is )?closed/i;

function translate(e: unknown, context: string, fallback: StoreErrorCode = 'E_DB'): StoreError {
  if (e instanceof StoreError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message || String(e) : String(e);
  if (e instanceof pg.DatabaseError && typeof code === 'string') {
    return new StoreError(mapSqlState(code, fallback), `${context}: ${message} (SQLSTATE ${code})`, { cause: e });
  }
  const unreachable = fallback === 'E_OPEN' ? 'E_OPEN' : 'E_UNAVAILABLE';
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
    // A socket error (ECONNREFUSED, ENOTFOUND, ETIMEDOUT, ECONNRESET, …): the database is not there.
    return new StoreError(unreachable, `${context}: ${message || code} (${code})`, { cause: e });
  }
  if (CONNECTION_LOST.test(message)) return new StoreError(unreachable, `${context}: ${message}`, { cause: e });
  return new StoreError(fallback, `${context}: ${message}`, { cause: e });
}

// ---------------------------------------------------------------------------------------
// The engine

/** `?` placeholders, as the shared SQL writes them, to PostgreSQL's `$1, $2, …` (the shared SQL has no `?` in literals). */
const numbered = new Map<string, string>();
function toPostgres(sql: string): string {
  let text = numbered.get(sql);
  if (text === undefined) {
    let n = 0;
    text = sql.replace(/\?/g, () => `$${++n}`);
    numbered.set(sql, text);
  }
  return text;
}

/** The most statements given a name (prepared once per connection); texts beyond them, rare variants of dynamic queries, are parsed each time. */
const MAX_NAMED = 500;
const names = new Map<string, string>();

/**
 * The query for `sql`: a named statement, which each connection parses and plans once
 * and then only binds and executes (the store runs the same few statements on every
 * request), or, past MAX_NAMED texts, an unnamed one.
 */
function statement(sql: string, values: unknown[]): pg.QueryConfig {
  const text = toPostgres(sql);
  let name = names.get(text);
  if (name === undefined && names.size < MAX_NAMED) {
    name = `sealed_edge_${names.size + 1}`;
    names.set(text, name);
  }
  return name === undefined ? { text, values } : { name, text, values };
}

function queriesOf(client: pg.Pool | pg.PoolClient): Queries {
  const all = async <T>(sql: string, params: readonly unknown[] = []): Promise<T[]> =>
    (await client.query(statement(sql, params as unknown[]))).rows as T[];
  return {
    all,
    get: async <T>(sql: string, params?: readonly unknown[]) => (await all<T>(sql, params))[0],
    run: async (sql: string, params?: readonly unknown[]) => {
      await client.query(statement(sql, (params ?? []) as unknown[]));
    },
  };
}

/** The longest NOTIFY payload sent (PostgreSQL's limit is 8000 bytes). */
const MAX_PAYLOAD = 7800;

class PostgresEngine implements Engine {
  readonly name = 'postgres';
  readonly skipLocked = ' FOR UPDATE SKIP LOCKED';
  readonly forUpdate = ' FOR UPDATE';
  /**
   * node-postgres reads every value as text, and bytea's text is hex (230 KB for a 115 KB
   * ciphertext, 0.5 ms to turn into a string and decode): base64 is 155 KB and 0.2 ms
   * (its line breaks are skipped). The decoded Buffer may be a view of Node's shared pool,
   * so it is copied.
   */
  readonly ciphertexts = {
    select: (column: string) => `encode(${column}, 'base64')`,
    decode: (value: unknown) => new Uint8Array(Buffer.from(value as string, 'base64')),
  };
  private pool: pg.Pool | null;
  private readonly feeds = new Set<ResultFeed>();

  constructor(
    pool: pg.Pool,
    private readonly url: string,
    private readonly where: string,
    private readonly channel: string,
  ) {
    this.pool = pool;
  }

  /** NOTIFY inside the transaction: PostgreSQL delivers it to every listening instance when, and only if, the transaction commits. */
  async announce(q: Queries, ids: readonly number[]): Promise<void> {
    let payload = '';
    for (const id of ids) {
      const next = payload === '' ? String(id) : `${payload},${id}`;
      if (next.length > MAX_PAYLOAD) {
        await q.run('SELECT pg_notify(?, ?)', [this.channel, payload]);
        payload = String(id);
      } else {
        payload = next;
      }
    }
    if (payload !== '') await q.run('SELECT pg_notify(?, ?)', [this.channel, payload]);
  }

  /** LISTEN on a connection of its own (not the pool's), reconnecting when it drops. */
  async watch(watcher: ResultWatcher): Promise<ResultWatch> {
    this.open('watchResults');
    const feed = new ResultFeed(this.url, this.where, this.channel, watcher, () => this.feeds.delete(feed));
    await feed.start();
    this.feeds.add(feed);
    return feed;
  }

  private open(what: string): pg.Pool {
    if (this.pool === null) fail('E_CLOSED', `${what}: the store is closed`);
    return this.pool;
  }

  async read<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T> {
    const pool = this.open(what);
    try {
      return await fn(queriesOf(pool));
    } catch (e) {
      throw translate(e, what);
    }
  }

  /** On a pooled connection in autocommit: the statement is its own transaction. */
  single<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T> {
    return this.read(what, fn);
  }

  write<T>(what: string, fn: (q: Queries) => Promise<T>): Promise<T> {
    return this.transaction(what, async (client) => {
      await client.query('BEGIN');
      const value = await fn(queriesOf(client));
      await client.query('COMMIT');
      return value;
    });
  }

  /**
   * BEGIN, the statements and COMMIT written to one connection at once (pipeline mode):
   * the server answers them in order. When a statement fails, the ones after it fail
   * too and COMMIT ends the transaction as a rollback; the first failure is thrown.
   */
  batch(what: string, statements: readonly Statement[]): Promise<unknown[][]> {
    return this.transaction(what, async (client) => {
      const sent = [
        client.query('BEGIN'),
        ...statements.map(({ sql, params }) => client.query(statement(sql, params as unknown[]))),
        client.query('COMMIT'),
      ];
      const answers = await Promise.allSettled(sent);
      const failed = answers.find((answer): answer is PromiseRejectedResult => answer.status === 'rejected');
      if (failed) throw failed.reason;
      const results = answers.map((answer) => (answer as PromiseFulfilledResult<pg.QueryResult>).value);
      if (results.at(-1)!.command !== 'COMMIT') fail('E_DB', `${what}: the transaction was not committed (${results.at(-1)!.command})`);
      return results.slice(1, -1).map((result) => result.rows as unknown[]);
    });
  }

  /** `fn` on a connection of its own, rolled back when it fails (the connection is dropped when the rollback fails too). */
  private async transaction<T>(what: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const pool = this.open(what);
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (e) {
      throw translate(e, what);
    }
    let broken: Error | undefined;
    // A checked-out connection has no listener of the pool's: without this one, the server
    // going away between two statements would be an uncaught 'error' event.
    const onError = (error: Error) => {
      broken ??= error;
    };
    client.on('error', onError);
    try {
      return await fn(client);
    } catch (e) {
      await client.query('ROLLBACK').catch((rollback: unknown) => {
        // The connection itself failed: it is dropped rather than returned to the pool.
        broken = rollback instanceof Error ? rollback : new Error(String(rollback));
      });
      throw translate(e, what);
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  /** 'ok' when every constraint of the store's schema is validated and the tables are readable. */
  integrityCheck(): Promise<string> {
    return this.read('integrityCheck', async (q) => {
      const unchecked = await q.all<{ name: string }>(
        'SELECT conname AS name FROM pg_constraint WHERE connamespace = current_schema()::regnamespace AND NOT convalidated ORDER BY conname',
      );
      for (const table of ['models', 'key_pairs', 'model_versions', 'signing_keys', 'devices', 'results', 'result_ciphertexts', 'audit_events']) {
        await q.get(`SELECT count(*) AS n FROM ${table}`);
      }
      return unchecked.length === 0 ? 'ok' : `constraints not validated: ${unchecked.map((c) => c.name).join(', ')}`;
    });
  }

  /** Closes the pool (idempotent) once its connections are idle, and the feeds. */
  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    await Promise.all([...this.feeds].map((feed) => feed.close()));
    if (pool !== null) await pool.end();
  }
}

/** Waits after a lost feed before reconnecting: doubling from the first to the last. */
export const FEED_RETRY_MS = { first: 250, last: 5000 };

/**
 * A LISTEN connection announcing the results written in one schema. When the connection
 * drops (the server restarts, a network cut), the watcher hears onLost, the feed
 * reconnects with growing waits, and the watcher hears onResumed once it listens again:
 * what was written in between was not announced.
 */
class ResultFeed implements ResultWatch {
  private client: pg.Client | null = null;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  private wait = FEED_RETRY_MS.first;

  constructor(
    private readonly url: string,
    private readonly where: string,
    private readonly channel: string,
    private readonly watcher: ResultWatcher,
    private readonly onClose: () => void,
  ) {}

  /** Connects and listens; a StoreError (E_UNAVAILABLE) when it cannot. */
  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, keepAlive: true, types: TYPES });
    client.on('error', (error: Error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('the connection ended')));
    client.on('notification', (message) => {
      if (message.channel !== this.channel || !message.payload) return;
      const ids = message.payload.split(',').map(Number).filter((id) => Number.isSafeInteger(id) && id > 0);
      if (ids.length > 0 && this.client === client) tell(this.watcher, ids);
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
    } catch (e) {
      await client.end().catch(() => undefined);
      throw translate(e, `watchResults: cannot listen for results on ${this.where}`, 'E_UNAVAILABLE');
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.client !== client) return;
    this.client = null;
    client.end().catch(() => undefined);
    if (this.closed) return;
    try {
      this.watcher.onLost?.(translate(error, `watchResults: the feed of results from ${this.where} was lost`, 'E_UNAVAILABLE'));
    } catch {
      // The watcher's failure is its own.
    }
    this.retry();
  }

  private retry(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      this.start().then(
        () => {
          if (this.closed) return;
          this.wait = FEED_RETRY_MS.first;
          try {
            this.watcher.onResumed?.();
          } catch {
            // As above.
          }
        },
        () => {
          if (this.closed) return;
          this.wait = Math.min(FEED_RETRY_MS.last, 2 * this.wait);
          this.retry();
        },
      );
    }, this.wait);
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const client = this.client;
    this.client = null;
    this.onClose();
    await client?.end().catch(() => undefined);
  }
}
