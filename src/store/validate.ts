/**
 * Input validation shared by every engine: each bad value becomes E_INVALID before
 * anything is written, with a message that names the field and what it got.
 */
import { fail } from './errors';
import type { RangeFlag } from './types';

/** The largest noise budget a result may record (far above any SEAL modulus allows); every engine's CHECK says the same. */
export const MAX_NOISE_BUDGET_BITS = 4096;

/** Every flag a result may carry; every engine's CHECK says the same. */
const RANGE_FLAGS: readonly RangeFlag[] = ['out-of-range'];

const ID_RE = /^[\x21-\x7e]{1,200}$/; // printable ASCII, no spaces
const MODEL_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/; // also a directory name and a URL segment
const HEX64_RE = /^[0-9a-f]{64}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const BASE64URL_P256_RE = /^[A-Za-z0-9_-]{43}$/;
const MAX_JSON_BYTES = 1 << 20;
const MAX_JSON_DEPTH = 32;
const MAX_SCORES = 1 << 16;

export function invalid(message: string): never {
  fail('E_INVALID', message);
}

export function checkId(value: unknown, what: string): string {
  if (typeof value !== 'string' || !ID_RE.test(value)) {
    invalid(`${what} must be 1–200 printable ASCII characters without spaces, got ${describe(value)}`);
  }
  return value;
}

export function checkModelId(value: unknown, what = 'modelId'): string {
  if (typeof value !== 'string' || !MODEL_ID_RE.test(value)) {
    invalid(`${what} must be 1–128 characters of [A-Za-z0-9._-] starting with a letter or digit, got ${describe(value)}`);
  }
  return value;
}

export function checkText(value: unknown, what: string, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max || CONTROL_RE.test(value)) {
    invalid(`${what} must be a non-empty string of at most ${max} characters without control characters, got ${describe(value)}`);
  }
  return value;
}

export function checkHex64(value: unknown, what: string): string {
  if (typeof value !== 'string' || !HEX64_RE.test(value)) {
    invalid(`${what} must be a SHA-256 as 64 lowercase hex digits, got ${describe(value)}`);
  }
  return value;
}

export function checkInt(value: unknown, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    invalid(`${what} must be an integer from ${min} to ${max}, got ${describe(value)}`);
  }
  return value;
}

export function checkTimestamp(value: unknown, what: string): string {
  if (typeof value !== 'string' || !ISO_RE.test(value) || Number.isNaN(Date.parse(value))) {
    invalid(`${what} must be an ISO 8601 UTC timestamp as Date.toISOString() writes it, got ${describe(value)}`);
  }
  return value;
}

export function checkBytes(value: unknown, what: string, exactLength?: number): Buffer {
  if (!(value instanceof Uint8Array)) invalid(`${what} must be a Uint8Array, got ${describe(value)}`);
  if (value.byteLength === 0) invalid(`${what} must not be empty`);
  if (exactLength !== undefined && value.byteLength !== exactLength) {
    invalid(`${what} must be ${exactLength} bytes, got ${value.byteLength}`);
  }
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
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

export function jsonObject(value: unknown, what: string): string {
  if (!isPlainObject(value)) invalid(`${what} must be a plain object, got ${describe(value)}`);
  checkJsonValue(value, what, 0);
  return jsonText(value, what);
}

function jsonText(value: unknown, what: string): string {
  const text = JSON.stringify(value);
  if (Buffer.byteLength(text, 'utf8') > MAX_JSON_BYTES) invalid(`${what} is larger than ${MAX_JSON_BYTES} bytes as JSON`);
  return text;
}

export function checkMetrics(value: unknown): string {
  if (!isPlainObject(value)) invalid(`protectMetrics must be a plain object, got ${describe(value)}`);
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== 'number' || !Number.isFinite(item)) invalid(`protectMetrics.${key} must be a finite number, got ${describe(item)}`);
  }
  return jsonText(value, 'protectMetrics');
}

export function checkRangeFlag(value: unknown): RangeFlag {
  if (!RANGE_FLAGS.includes(value as RangeFlag)) invalid(`rangeFlag must be null or one of ${RANGE_FLAGS.map((f) => `'${f}'`).join(', ')}, got ${describe(value)}`);
  return value as RangeFlag;
}

export function checkScores(value: unknown): string {
  if (!Array.isArray(value)) invalid(`scores must be an array of numbers, got ${describe(value)}`);
  if (value.length > MAX_SCORES) invalid(`scores holds ${value.length} values, more than ${MAX_SCORES}`);
  value.forEach((item, i) => {
    if (typeof item !== 'number' || !Number.isFinite(item)) invalid(`scores[${i}] must be a finite number, got ${describe(item)}`);
  });
  return jsonText(value, 'scores');
}

/** An ECDSA P-256 public key, as WebCrypto exports it; a private key ('d') is refused. */
export function checkPublicJwk(value: unknown): string {
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

export function checkOptions(value: unknown, allowed: readonly string[], what: string): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) invalid(`${what} options must be an object, got ${describe(value)}`);
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) invalid(`${what}: unknown option '${key}'`);
  }
  return value;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Uint8Array) return `${value.constructor.name}(${value.byteLength})`;
  return typeof value === 'object' ? (value.constructor?.name ?? 'an object') : typeof value;
}

export function now(): string {
  return new Date().toISOString();
}
