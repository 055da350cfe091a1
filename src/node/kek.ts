import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A secret the owner's side cannot do its job without, refused or unusable. */
export class KeyError extends Error {
  readonly code: 'E_KEK' | 'E_UNWRAP';
  constructor(code: 'E_KEK' | 'E_UNWRAP', message: string) {
    super(message);
    this.name = 'KeyError';
    this.code = code;
  }
}

const KEK_BYTES = 32;
export const KEK_FILE = 'kek.key';

function decodeKek(text: string, where: string): Buffer {
  const trimmed = text.trim();
  const bytes = /^[0-9a-fA-F]{64}$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (bytes.length !== KEK_BYTES || (!/^[0-9a-fA-F]{64}$/.test(trimmed) && bytes.toString('base64') !== trimmed)) {
    throw new KeyError('E_KEK', `${where} must hold a 256-bit key as 64 hex digits or base64, got ${trimmed.length} characters`);
  }
  return bytes;
}

/**
 * The key-encryption key that wraps every secret at rest (SEAL secret keys, the signing
 * key). From SEALED_EDGE_KEK if set (hex or base64), else from `<dataDir>/kek.key`, which
 * is created with mode 0600 on first use and refused if anyone but its owner can read it.
 */
export function loadKek(dataDir: string, env: NodeJS.ProcessEnv = process.env): Buffer {
  const fromEnv = env.SEALED_EDGE_KEK;
  if (fromEnv !== undefined && fromEnv !== '') return decodeKek(fromEnv, 'SEALED_EDGE_KEK');
  const path = join(dataDir, KEK_FILE);
  if (!existsSync(path)) {
    const fresh = randomBytes(KEK_BYTES);
    const temporary = `${path}.${process.pid}.tmp`;
    writeFileSync(temporary, `${fresh.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    renameSync(temporary, path);
    return fresh;
  }
  const fd = openSync(path, constants.O_RDONLY);
  try {
    const mode = fstatSync(fd).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new KeyError('E_KEK', `${path} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it`);
    }
    return decodeKek(readFileSync(fd, 'utf8'), path);
  } finally {
    closeSync(fd);
  }
}

/** The AES-GCM associated data a SEAL secret key is wrapped under. */
export function secretKeyContext(keyId: string): string {
  return `seal-secret-key:${keyId}`;
}

const WRAP_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * AES-256-GCM: version byte | 12-byte IV | ciphertext | 16-byte tag. `context` is bound as
 * associated data (e.g. "seal-secret-key:<keyId>"), so a wrapped secret cannot be passed
 * off as another one.
 */
export function wrapSecret(kek: Buffer, secret: Uint8Array, context: string): Uint8Array {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek, iv);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const body = Buffer.concat([cipher.update(secret), cipher.final()]);
  return new Uint8Array(Buffer.concat([Buffer.from([WRAP_VERSION]), iv, body, cipher.getAuthTag()]));
}

export function unwrapSecret(kek: Buffer, wrapped: Uint8Array, context: string): Uint8Array {
  if (wrapped.length < 1 + IV_BYTES + TAG_BYTES || wrapped[0] !== WRAP_VERSION) {
    throw new KeyError('E_UNWRAP', `a wrapped secret for ${context} is malformed`);
  }
  const iv = wrapped.subarray(1, 1 + IV_BYTES);
  const tag = wrapped.subarray(wrapped.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', kek, iv);
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(tag);
  try {
    return new Uint8Array(Buffer.concat([decipher.update(wrapped.subarray(1 + IV_BYTES, wrapped.length - TAG_BYTES)), decipher.final()]));
  } catch {
    throw new KeyError('E_UNWRAP', `the secret for ${context} does not open with this key-encryption key (wrong SEALED_EDGE_KEK or kek.key?)`);
  }
}
