import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStore, storeLocation } from '../store/open';
import type { DeviceRecord, Store } from '../store/types';
import { KeyError, loadKek, unwrapSecret, wrapSecret } from '../node/kek';
import { generateSigningKey, type SigningKeyPair } from './signing';

export { DATABASE_FILE } from '../store/open';
export const OPERATOR_TOKEN_FILE = 'operator.token';
/** The owner's Ed25519 verification key (hex): what kiosks pin at build time. */
export const SIGNING_PUBLIC_FILE = 'owner-signing.pub';

/**
 * The owner's data directory: the key-encryption key, the operator token and, unless the
 * store is a PostgreSQL database (`store`, or SEALED_EDGE_DATABASE_URL), the SQLite database.
 */
export interface Workspace {
  readonly dataDir: string;
  readonly store: Store;
  readonly kek: Buffer;
  close(): Promise<void>;
}

export async function openWorkspace(dataDir: string, env: NodeJS.ProcessEnv = process.env, store?: string): Promise<Workspace> {
  const location = storeLocation(dataDir, store, env);
  if (existsSync(dataDir) && !statSync(dataDir).isDirectory()) throw new KeyError('E_KEK', `${dataDir} is not a directory`);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const kek = loadKek(dataDir, env);
  const opened = await openStore(location);
  return { dataDir, store: opened, kek, close: () => opened.close() };
}

function writePrivate(path: string, text: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, path);
}

/** The operators' bearer token: SEALED_EDGE_OPERATOR_TOKEN, or a 0600 file made on first use. */
export function operatorToken(dataDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.SEALED_EDGE_OPERATOR_TOKEN;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.length < 16) throw new KeyError('E_KEK', 'SEALED_EDGE_OPERATOR_TOKEN must be at least 16 characters');
    return fromEnv;
  }
  const path = join(dataDir, OPERATOR_TOKEN_FILE);
  if (!existsSync(path)) writePrivate(path, `${randomBytes(24).toString('base64url')}\n`);
  if ((statSync(path).mode & 0o077) !== 0) throw new KeyError('E_KEK', `${path} is readable by others; run chmod 600 on it`);
  return readFileSync(path, 'utf8').trim();
}

const signingContext = (id: string) => `signing-key:${id}`;

/** The owner's bundle-signing key: the active one, or a new one stored wrapped. */
export async function signingKey(ws: Workspace): Promise<SigningKeyPair> {
  const active = await ws.store.activeSigningKey();
  if (active !== null) {
    return { publicKey: active.publicKey, privateKey: unwrapSecret(ws.kek, active.wrappedPrivateKey, signingContext(active.id)) };
  }
  const pair = generateSigningKey();
  const id = randomUUID();
  await ws.store.addSigningKey({ id, publicKey: pair.publicKey, wrappedPrivateKey: wrapSecret(ws.kek, pair.privateKey, signingContext(id)) });
  writeFileSync(join(ws.dataDir, SIGNING_PUBLIC_FILE), `${Buffer.from(pair.publicKey).toString('hex')}\n`);
  await ws.store.audit('owner', 'signing-key.created', { id });
  return pair;
}

/** Provisions a device: returns it (pending) and its one-time enrollment token. */
export async function addDevice(ws: Workspace, name: string): Promise<{ device: DeviceRecord; token: string }> {
  const token = randomBytes(24).toString('base64url');
  const device = await ws.store.addDevice({ id: randomUUID(), name, tokenSha256: createHash('sha256').update(token).digest('hex') });
  await ws.store.audit('owner', 'device.added', { id: device.id, name });
  return { device, token };
}
