/**
 * The store engines the store tests run against. SQLite always. PostgreSQL when
 * SEALED_EDGE_TEST_DATABASE_URL names a server (`.ci/run` starts one with
 * scripts/test-postgres.sh): each test file creates a throwaway database there and drops
 * it at the end, and each fresh store gets a schema of its own in it. With the variable
 * set, an unreachable server fails the tests; on CI it must be set. Without it (a
 * developer without PostgreSQL) the PostgreSQL tests are skipped, and say so.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect } from 'vitest';
import { openStore } from '../../src/store/open';
import { StoreError } from '../../src/store/errors';
import type { NewPendingResult, Store } from '../../src/store/types';

export const POSTGRES_URL = process.env.SEALED_EDGE_TEST_DATABASE_URL || undefined;

if (POSTGRES_URL === undefined) {
  if (process.env.CI === 'true') throw new Error('CI must provide PostgreSQL for the store tests: SEALED_EDGE_TEST_DATABASE_URL is not set (see .ci/run)');
  process.stderr.write('store tests: SEALED_EDGE_TEST_DATABASE_URL is not set, so the PostgreSQL store tests are skipped (scripts/test-postgres.sh starts a server)\n');
}

export interface TestEngine {
  readonly name: 'sqlite' | 'postgres';
  /** Where a new, empty store can be opened. */
  location(label?: string): Promise<string>;
  open(location: string): Promise<Store>;
}

let counter = 0;

/** A throwaway database on the test server for this test file: created in beforeAll, dropped (with its connections) in afterAll. */
export function postgresDatabase(): { url: () => string; admin: () => pg.Client } {
  let url = '';
  let admin: pg.Client | null = null;
  const name = `sealed_edge_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  beforeAll(async () => {
    const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
    } catch (error) {
      throw new Error(`the PostgreSQL server of SEALED_EDGE_TEST_DATABASE_URL cannot be reached: ${(error as Error).message}`);
    }
    await client.query(`CREATE DATABASE ${name}`);
    admin = client;
    const parsed = new URL(POSTGRES_URL!);
    parsed.pathname = `/${name}`;
    url = parsed.toString();
  });
  afterAll(async () => {
    if (admin === null) return;
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  });
  return {
    url: () => url,
    admin: () => {
      if (admin === null) throw new Error('the test database is not created yet');
      return admin;
    },
  };
}

/** The URL of a new, empty schema in the test database `url`. */
export async function postgresSchema(url: string, label = 'store'): Promise<string> {
  const schema = `${label.replace(/[^a-z0-9_]/g, '_')}_${++counter}`;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`CREATE SCHEMA ${schema}`);
  } finally {
    await client.end();
  }
  return `${url}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
}

/** The engines for this test file, with their set-up and clean-up registered. */
export function testEngines(): TestEngine[] {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sealed-edge-store-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const engines: TestEngine[] = [
    { name: 'sqlite', location: async (label = 'store') => join(dir, `${label}-${++counter}.sqlite`), open: openStore },
  ];
  if (POSTGRES_URL !== undefined) {
    const database = postgresDatabase();
    engines.push({ name: 'postgres', location: (label) => postgresSchema(database.url(), label), open: openStore });
  }
  return engines;
}

/** Awaits `promise` and expects it to reject with a StoreError of `code` (and a message matching `message`). */
export async function expectStoreError(promise: Promise<unknown>, code: string, message?: RegExp): Promise<StoreError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error, `expected StoreError ${code}`).toBeInstanceOf(StoreError);
  expect((error as StoreError).code).toBe(code);
  if (message) expect((error as StoreError).message).toMatch(message);
  return error as StoreError;
}

/** Model version mnist 1 (key 'k1') and device 'dev-1', enrolled: what pendingResult's results need. */
export async function seedStore(store: Store): Promise<Store> {
  const sha = (text: string) => createHash('sha256').update(text).digest('hex');
  await store.addModelVersion(
    { modelId: 'mnist', keyId: 'k1', bundleDir: 'b', manifestSha256: sha('m'), outputs: 10, protectMetrics: {} },
    { keyId: 'k1', wrappedSecretKey: new Uint8Array(randomBytes(8)), deviceKeys: new Uint8Array(randomBytes(8)) },
  );
  await store.addDevice({ id: 'dev-1', name: 'Kiosk', tokenSha256: sha('token') });
  await store.enrollDevice(sha('token'), { kty: 'EC', crv: 'P-256', x: randomBytes(32).toString('base64url'), y: randomBytes(32).toString('base64url') });
  return store;
}

/** A pending result of device 'dev-1' for model version mnist 1 (key 'k1'): its ciphertext derived from `body`. */
export const pendingResult = (idempotencyKey: string, body = idempotencyKey): NewPendingResult => ({
  deviceId: 'dev-1',
  modelId: 'mnist',
  version: 1,
  keyId: 'k1',
  idempotencyKey,
  bodySha256: createHash('sha256').update(body).digest('hex'),
  ciphertext: new Uint8Array(createHash('sha512').update(body).digest()),
  receivedAt: new Date().toISOString(),
  receipt: { idempotencyKey },
});
