/**
 * The kiosk's IndexedDB: verified bundles (cache), the outbox of encrypted results, the
 * device identity (its non-extractable ECDSA key) and settings. Browser only.
 */
import { type DBSchema, type IDBPDatabase, type IDBPTransaction, openDB } from 'idb';

/**
 * A verified bundle in the cache: its manifest and signature, and for each file its size
 * and the chunks it is stored in (store `chunks`, keys `${key}/${file}/${i}`, at most
 * CHUNK_BYTES each): Chromium cannot read back one IndexedDB value of a gigabyte, and
 * listing the cache then reads no file.
 */
export interface CachedBundle {
  /** `${modelId}@${version}#${manifestSha256}` */
  key: string;
  modelId: string;
  version: number;
  manifestSha256: string;
  manifest: ArrayBuffer;
  signature: ArrayBuffer;
  files: Record<string, { size: number; chunks: number }>;
  storedAt: string;
}

/** A cached bundle as database version 1 stored it: every file whole, in the entry. */
interface CachedBundleV1 extends Omit<CachedBundle, 'files'> {
  files: Record<string, ArrayBuffer>;
}

export const CHUNK_BYTES = 32 * 2 ** 20;

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
  chunks: { key: string; value: ArrayBuffer };
  outbox: { key: string; value: OutboxEntry; indexes: { createdAt: number } };
  device: { key: string; value: DeviceIdentity };
}

export type KioskDatabase = IDBPDatabase<KioskDB>;

export const DB_NAME = 'sealed-edge-kiosk';

/**
 * Version 2 keeps bundle files in chunks; opening a version 1 database moves every cached
 * bundle's files into chunks (the cache survives the upgrade).
 */
export function openKioskDb(name = DB_NAME): Promise<KioskDatabase> {
  return openDB<KioskDB>(name, 2, {
    async upgrade(db, oldVersion, _newVersion, tx) {
      if (oldVersion < 1) {
        db.createObjectStore('bundles', { keyPath: 'key' }).createIndex('modelId', 'modelId');
        db.createObjectStore('outbox', { keyPath: 'idempotencyKey' }).createIndex('createdAt', 'createdAt');
        db.createObjectStore('device');
      }
      if (oldVersion < 2) {
        db.createObjectStore('chunks');
        for (let cursor = await tx.objectStore('bundles').openCursor(); cursor !== null; cursor = await cursor.continue()) {
          const old = cursor.value as unknown as CachedBundleV1;
          const files: CachedBundle['files'] = {};
          for (const [file, bytes] of Object.entries(old.files)) files[file] = await putChunks((v, k) => tx.objectStore('chunks').put(v, k), old.key, file, new Uint8Array(bytes));
          await cursor.update({ ...old, files });
        }
      }
    },
  });
}

function chunkKey(bundleKey: string, file: string, index: number): string {
  return `${bundleKey}/${file}/${index}`;
}

function chunkCount(size: number): number {
  return Math.max(1, Math.ceil(size / CHUNK_BYTES));
}

/** Writes a file's chunks (each copied only as it is stored); returns what the bundle entry records of it. */
async function putChunks(put: (value: ArrayBuffer, key: string) => Promise<unknown>, bundleKey: string, file: string, bytes: Uint8Array): Promise<{ size: number; chunks: number }> {
  const chunks = chunkCount(bytes.length);
  for (let i = 0; i < chunks; i++) await put(bytes.slice(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES).buffer, chunkKey(bundleKey, file, i));
  return { size: bytes.length, chunks };
}

/** The bundle a chunk key belongs to. */
function chunkOwner(key: string): string {
  return key.slice(0, key.lastIndexOf('/', key.lastIndexOf('/') - 1));
}

/**
 * Stores a verified bundle, replacing the other cached versions of its model. Each chunk
 * is written in a transaction of its own (Chromium refuses a transaction whose values
 * pass its limit for blobs in flight: a 1.1 GB bundle in one failed with 'Failed to write
 * blobs'); the entry, which makes them a cached bundle, comes last, and chunks that no
 * entry names (the replaced versions', a write cut short) are deleted then.
 */
export async function putBundle(db: KioskDatabase, entry: Omit<CachedBundle, 'files'>, files: Record<string, Uint8Array>): Promise<void> {
  const stored: CachedBundle['files'] = {};
  for (const [file, bytes] of Object.entries(files)) stored[file] = await putChunks((v, k) => db.put('chunks', v, k), entry.key, file, bytes);
  const tx = db.transaction(['bundles', 'chunks'], 'readwrite');
  await tx.objectStore('bundles').put({ ...entry, files: stored });
  for (const key of await tx.objectStore('bundles').index('modelId').getAllKeys(entry.modelId)) if (key !== entry.key) await tx.objectStore('bundles').delete(key);
  await deleteUnnamedChunks(tx);
  await tx.done;
}

/** A cached file, its chunks joined (each read on its own, as written); undefined when the bundle has no such file or a chunk is missing. */
export async function readBundleFile(db: KioskDatabase, entry: CachedBundle, file: string): Promise<Uint8Array | undefined> {
  const info = entry.files[file];
  if (info === undefined) return undefined;
  const out = new Uint8Array(info.size);
  let at = 0;
  for (let i = 0; i < info.chunks; i++) {
    const chunk = await db.get('chunks', chunkKey(entry.key, file, i));
    if (chunk === undefined || at + chunk.byteLength > info.size) return undefined;
    out.set(new Uint8Array(chunk), at);
    at += chunk.byteLength;
  }
  return at === info.size ? out : undefined;
}

/** Deletes the cached bundles of `modelId` up to `version` (a version the owner retired, and older ones), chunks included. */
export async function evictBundles(db: KioskDatabase, modelId: string, version: number): Promise<void> {
  const tx = db.transaction(['bundles', 'chunks'], 'readwrite');
  for (const entry of await tx.objectStore('bundles').index('modelId').getAll(modelId)) if (entry.version <= version) await tx.objectStore('bundles').delete(entry.key);
  await deleteUnnamedChunks(tx);
  await tx.done;
}

/** Deletes the chunks no cached bundle names: those of entries just deleted, and what a write cut short left. */
async function deleteUnnamedChunks(tx: IDBPTransaction<KioskDB, ('bundles' | 'chunks')[], 'readwrite'>): Promise<void> {
  const named = new Set(await tx.objectStore('bundles').getAllKeys());
  for (const key of await tx.objectStore('chunks').getAllKeys()) if (!named.has(chunkOwner(key))) await tx.objectStore('chunks').delete(key);
}
