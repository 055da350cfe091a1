import { crc32 } from './crc32';
import { fail } from './errors';

/**
 * sealed-edge's binary container, used for encrypted classifiers, device key sets, secret
 * keys, results and partial sums (one worker's share of an evaluation):
 *
 *   "SEHE" | u16 format version | u8 kind | u8 0 | u32 header length H
 *   | header (UTF-8 JSON, H bytes) | u32 CRC-32 of the header
 *   | sections, back to back, whose lengths and CRC-32s the header lists
 *
 * All integers little-endian. Loading checks every length and checksum before any section
 * reaches SEAL: SEAL's loader accepts many corrupted blobs and aborts on truncated ones.
 */
export const FORMAT_VERSION = 1;

export const ContainerKind = {
  classifier: 1,
  deviceKeys: 2,
  secretKey: 3,
  result: 4,
  partial: 5,
} as const;
export type ContainerKind = keyof typeof ContainerKind;

const MAGIC = [0x53, 0x45, 0x48, 0x45]; // "SEHE"
const PREFIX = 12;

interface SectionEntry {
  length: number;
  crc: number;
}

export interface Container<H> {
  readonly header: H;
  readonly sections: Uint8Array[];
}

export function writeContainer(kind: ContainerKind, header: object, sections: readonly Uint8Array[]): Uint8Array {
  const entries: SectionEntry[] = sections.map((s) => ({ length: s.length, crc: crc32(s) }));
  const json = new TextEncoder().encode(JSON.stringify({ ...header, sections: entries }));
  const total = PREFIX + json.length + 4 + sections.reduce((n, s) => n + s.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint16(4, FORMAT_VERSION, true);
  out[6] = ContainerKind[kind];
  view.setUint32(8, json.length, true);
  out.set(json, PREFIX);
  view.setUint32(PREFIX + json.length, crc32(json), true);
  let at = PREFIX + json.length + 4;
  for (const s of sections) {
    out.set(s, at);
    at += s.length;
  }
  return out;
}

const KIND_NAMES = Object.fromEntries(Object.entries(ContainerKind).map(([name, id]) => [id, name]));

/** Reads and checks a container of the expected kind; sections are views into `bytes`. */
export function readContainer<H>(bytes: Uint8Array, kind: ContainerKind): Container<H> {
  if (!(bytes instanceof Uint8Array)) fail('E_FORMAT', `expected bytes (Uint8Array), got ${typeof bytes}`);
  const what = `a sealed-edge ${kind} file`;
  if (bytes.length < 4 || MAGIC.some((b, i) => bytes[i] !== b)) fail('E_FORMAT', `not ${what} (bad magic bytes)`);
  if (bytes.length < PREFIX) fail('E_TRUNCATED', `${what} is truncated: ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(4, true);
  if (version !== FORMAT_VERSION) {
    fail('E_VERSION', `${what} has format version ${version}; this build reads version ${FORMAT_VERSION}`);
  }
  if (bytes[6] !== ContainerKind[kind]) {
    fail('E_FORMAT', `expected ${what}, got a ${KIND_NAMES[bytes[6]!] ?? `kind-${bytes[6]}`} file`);
  }
  const headerLength = view.getUint32(8, true);
  if (bytes.length < PREFIX + headerLength + 4) {
    fail('E_TRUNCATED', `${what} is truncated inside its header (${bytes.length} bytes)`);
  }
  const json = bytes.subarray(PREFIX, PREFIX + headerLength);
  if (view.getUint32(PREFIX + headerLength, true) !== crc32(json)) fail('E_CORRUPT', `${what} has a corrupt header`);
  let header: H & { sections?: unknown };
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json)) as H & { sections?: unknown };
  } catch {
    fail('E_CORRUPT', `${what} has an unreadable header`);
  }
  const entries = header.sections;
  if (
    !Array.isArray(entries) ||
    !entries.every(
      (e: SectionEntry) => Number.isSafeInteger(e?.length) && e.length >= 0 && Number.isInteger(e.crc) && e.crc >= 0,
    )
  ) {
    fail('E_CORRUPT', `${what} has a malformed section table`);
  }
  let at = PREFIX + headerLength + 4;
  const sections: Uint8Array[] = [];
  for (const [i, entry] of (entries as SectionEntry[]).entries()) {
    if (at + entry.length > bytes.length) {
      fail('E_TRUNCATED', `${what} is truncated: section ${i} needs ${entry.length} bytes at ${at}, the file has ${bytes.length}`);
    }
    const section = bytes.subarray(at, at + entry.length);
    if (crc32(section) !== entry.crc) fail('E_CORRUPT', `${what} is corrupt: section ${i} fails its checksum`);
    sections.push(section);
    at += entry.length;
  }
  if (at !== bytes.length) fail('E_CORRUPT', `${what} has ${bytes.length - at} unexpected bytes after its last section`);
  return { header, sections };
}

/**
 * Checks a SEAL serialization header (magic 0xA15E, 16-byte header, u64 total size)
 * against the section's length, so SEAL never reads past the end of its input.
 */
export function checkSealBlob(blob: Uint8Array, what: string): void {
  if (blob.length < 16 || blob[0] !== 0x5e || blob[1] !== 0xa1 || blob[2] !== 16) {
    fail('E_CORRUPT', `${what} is not a SEAL object`);
  }
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const size = view.getBigUint64(8, true);
  if (size !== BigInt(blob.length)) fail('E_CORRUPT', `${what} declares ${size} bytes but has ${blob.length}`);
}
