/**
 * The kiosk's IndexedDB: verified bundles (cache), the outbox of encrypted results, the
 * device identity (its non-extractable ECDSA key) and settings. Browser only.
 */
import { type DBSchema, type IDBPDatabase, openDB } from 'idb';

export interface CachedBundle {
  /** `${modelId}@${version}#${manifestSha256}` */
  key: string;
  modelId: string;
  version: number;
  manifestSha256: string;
  manifest: ArrayBuffer;
  signature: ArrayBuffer;
  files: Record<string, ArrayBuffer>;
  storedAt: string;
}

export interface OutboxEntry {
  idempotencyKey: string;
  /** The exact request body (JSON bytes); signed again on each attempt. */
  body: ArrayBuffer;
  createdAt: number;
  attempts: number;
  nextAttemptAt: number;
  /** pending: will be sent; refused: the backend refused it for good (kept, shown). */
  state: 'pending' | 'refused';
  lastError?: string;
  resultSha256: string;
  resultBytes: number;
}

export interface DeviceIdentity {
  deviceId: string;
  backendUrl: string;
  /** Non-extractable: the private key never leaves the browser. */
  privateKey: CryptoKey;
  publicKey: JsonWebKey;
  enrolledAt: string;
}

interface KioskDB extends DBSchema {
  bundles: { key: string; value: CachedBundle; indexes: { modelId: string } };
  outbox: { key: string; value: OutboxEntry; indexes: { createdAt: number } };
  device: { key: string; value: DeviceIdentity };
}

export type KioskDatabase = IDBPDatabase<KioskDB>;

export const DB_NAME = 'sealed-edge-kiosk';

export function openKioskDb(name = DB_NAME): Promise<KioskDatabase> {
  return openDB<KioskDB>(name, 1, {
    upgrade(db) {
      db.createObjectStore('bundles', { keyPath: 'key' }).createIndex('modelId', 'modelId');
      db.createObjectStore('outbox', { keyPath: 'idempotencyKey' }).createIndex('createdAt', 'createdAt');
      db.createObjectStore('device');
    },
  });
}
