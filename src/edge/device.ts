/**
 * The device identity: an ECDSA P-256 key pair generated with WebCrypto, the private key
 * non-extractable and kept in IndexedDB; only the public key (JWK) is registered, once,
 * with a one-time enrollment token. Wire protocol as in src/node/device-client.ts.
 */
import { base64 } from './bytes';
import type { DeviceIdentity, KioskDatabase } from './db';

/** `path` under the backend's URL (which may itself live under a sub-path). */
export function apiUrl(backendUrl: string, path: string): URL {
  const base = new URL(backendUrl, location.href);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  return new URL(path.replace(/^\//, ''), base);
}

export async function currentDevice(db: KioskDatabase): Promise<DeviceIdentity | undefined> {
  return db.get('device', 'identity');
}

export async function enroll(db: KioskDatabase, backendUrl: string, token: string): Promise<DeviceIdentity> {
  const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const publicKey = await crypto.subtle.exportKey('jwk', pair.publicKey);
  const response = await fetch(apiUrl(backendUrl, 'api/v1/devices/enroll'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: token.trim(), publicKey: { kty: publicKey.kty, crv: publicKey.crv, x: publicKey.x, y: publicKey.y } }),
  });
  const body = (await response.json().catch(() => ({}))) as { deviceId?: string; error?: { code: string; message: string } };
  if (response.status !== 201 || typeof body.deviceId !== 'string') {
    throw new Error(`enrollment refused (HTTP ${response.status}${body.error ? `, ${body.error.code}: ${body.error.message}` : ''})`);
  }
  const identity: DeviceIdentity = { deviceId: body.deviceId, backendUrl, privateKey: pair.privateKey, publicKey, enrolledAt: new Date().toISOString() };
  await db.put('device', identity, 'identity');
  return identity;
}

/** X-Device-Id and X-Signature (base64 of the raw 64-byte P-256/SHA-256 signature) for `body`. */
export async function signedHeaders(device: DeviceIdentity, body: Uint8Array): Promise<Record<string, string>> {
  const signature = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, device.privateKey, body as BufferSource));
  return { 'content-type': 'application/json', 'x-device-id': device.deviceId, 'x-signature': base64(signature) };
}
