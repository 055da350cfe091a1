import { checkSealBlob, type ContainerKind, readContainer, writeContainer } from './container';
import { HeContext, sealMessage } from './context';
import { fail, HeError } from './errors';
import { checkParameters, describeParameters, type HeParameters, sameParameters, type Scheme } from './params';
import type { Context, GaloisKeys, PublicKey, RelinKeys, SecretKey } from './seal';

interface KeyHeader {
  params: HeParameters;
  keyId: string;
  steps: number[];
}

/** A fresh key id: 16 random bytes in hex. */
export function randomKeyId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function checkHeader(he: HeContext, header: KeyHeader, what: string): KeyHeader {
  const params = checkParameters(header.params);
  if (!sameParameters(params, he.params)) {
    fail('E_PARAMS', `${what} was made for ${describeParameters(params)}, not ${describeParameters(he.params)}`);
  }
  if (typeof header.keyId !== 'string' || !/^[0-9a-f]{32}$/.test(header.keyId)) fail('E_CORRUPT', `${what} has no valid key id`);
  if (!Array.isArray(header.steps) || !header.steps.every((s) => Number.isInteger(s) && s >= 0 && s < he.slots)) {
    fail('E_CORRUPT', `${what} has an invalid list of rotation steps`);
  }
  return header;
}

/** What a device key set is for, read from its (checked) header without loading any key. */
export function keySetInfo(bytes: Uint8Array): { params: HeParameters; keyId: string; steps: readonly number[] } {
  const { header } = readContainer<KeyHeader>(bytes, 'deviceKeys');
  const params = checkParameters(header.params);
  if (typeof header.keyId !== 'string' || !/^[0-9a-f]{32}$/.test(header.keyId)) fail('E_CORRUPT', 'device key set has no valid key id');
  return { params, keyId: header.keyId, steps: header.steps };
}

/**
 * The scheme a container (key set, secret key, classifier, result) was made for, read
 * from its checked header, so callers can pick the CKKS or the BGV API.
 */
export function containerScheme(bytes: Uint8Array, kind: ContainerKind): Scheme {
  const { header } = readContainer<{ params?: { scheme?: unknown } }>(bytes, kind);
  const scheme = header.params?.scheme;
  if (scheme !== 'ckks' && scheme !== 'bgv') fail('E_PARAMS', `the ${kind} file names no known scheme: ${JSON.stringify(scheme)}`);
  return scheme;
}

/** Loads one SEAL object from a checked section, turning SEAL's failures into E_CORRUPT. */
export function loadSeal<T extends { loadArray(context: Context, bytes: Uint8Array): void; delete(): void }>(
  he: { readonly context: Context },
  object: T,
  blob: Uint8Array,
  what: string,
): T {
  try {
    checkSealBlob(blob, what);
    object.loadArray(he.context, blob);
    return object;
  } catch (error) {
    object.delete();
    if (error instanceof HeError) throw error;
    throw new HeError('E_CORRUPT', `${what} could not be loaded: ${sealMessage(error)}`);
  }
}

/**
 * The owner's key pair for one model: the secret key (which never leaves the backend) and
 * the device's key set (public, relinearization and Galois keys for exactly the rotation
 * steps the model's plan uses), all saved seeded, which halves their size.
 */
export class OwnerKeys {
  private disposed = false;

  private constructor(
    private readonly he: HeContext,
    readonly keyId: string,
    readonly steps: readonly number[],
    readonly secretKey: SecretKey,
    readonly publicKey: PublicKey,
    private readonly deviceKeys: Uint8Array,
  ) {}

  /**
   * Generates a fresh key pair; `steps` are the rotations the device will perform (0: the
   * complex conjugation, SEAL's Galois element 2N−1).
   */
  static generate(he: HeContext, steps: readonly number[]): OwnerKeys {
    const { seal } = he;
    const sorted = [...new Set(steps)].sort((a, b) => a - b);
    for (const s of sorted) {
      if (!Number.isInteger(s) || s < 0 || s >= he.slots) fail('E_SHAPE', `rotation step ${s} is outside 0 (conjugation)…${he.slots - 1}`);
    }
    const generator = seal.KeyGenerator(he.context);
    const serialized = [
      generator.createPublicKeySerializable(),
      generator.createRelinKeysSerializable(),
      generator.createGaloisKeysSerializable(Int32Array.from(sorted)),
    ];
    const sections = serialized.map((s) => s.saveArray(seal.ComprModeType.zstd));
    serialized.forEach((s) => s.delete());
    const secretKey = generator.secretKey();
    generator.delete();
    const keyId = randomKeyId();
    const deviceKeys = writeContainer('deviceKeys', { params: he.params, keyId, steps: sorted }, sections);
    const publicKey = loadSeal(he, seal.PublicKey(), sections[0]!, 'public key');
    return new OwnerKeys(he, keyId, sorted, secretKey, publicKey, deviceKeys);
  }

  /** Restores the owner's keys from `secretKeyBytes()` and the matching device key set. */
  static load(he: HeContext, secretKeyBytes: Uint8Array, deviceKeyBytes: Uint8Array): OwnerKeys {
    const { header, sections } = readContainer<KeyHeader>(secretKeyBytes, 'secretKey');
    checkHeader(he, header, 'secret key file');
    if (sections.length !== 1) fail('E_CORRUPT', 'secret key file must hold exactly one section');
    const device = readContainer<KeyHeader>(deviceKeyBytes, 'deviceKeys');
    checkHeader(he, device.header, 'device key set');
    if (device.header.keyId !== header.keyId) {
      fail('E_KEYS', `device key set ${device.header.keyId} does not belong to secret key ${header.keyId}`);
    }
    const secretKey = loadSeal(he, he.seal.SecretKey(), sections[0]!, 'secret key');
    let publicKey: PublicKey;
    try {
      publicKey = loadSeal(he, he.seal.PublicKey(), device.sections[0] ?? new Uint8Array(), 'public key');
    } catch (error) {
      secretKey.delete();
      throw error;
    }
    return new OwnerKeys(he, header.keyId, device.header.steps, secretKey, publicKey, deviceKeyBytes);
  }

  /** The device's key set: what the static bundle ships as keys.bin. */
  deviceKeyBytes(): Uint8Array {
    return this.deviceKeys;
  }

  /** The secret key in the container format; the backend stores it wrapped (AES-GCM). */
  secretKeyBytes(): Uint8Array {
    this.check();
    const blob = this.secretKey.saveArray(this.he.seal.ComprModeType.zstd);
    return writeContainer('secretKey', { params: this.he.params, keyId: this.keyId, steps: this.steps }, [blob]);
  }

  private check(): void {
    if (this.disposed) fail('E_DISPOSED', 'the owner keys have been disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.secretKey.delete();
    this.publicKey.delete();
  }
}

/** The keys a device holds: enough to encrypt and to evaluate, never to decrypt. */
export class DeviceKeys {
  private disposed = false;

  private constructor(
    readonly keyId: string,
    readonly steps: readonly number[],
    readonly publicKey: PublicKey,
    readonly relin: RelinKeys,
    readonly galois: GaloisKeys,
    readonly byteLength: number,
  ) {}

  static load(he: HeContext, bytes: Uint8Array): DeviceKeys {
    const { header, sections } = readContainer<KeyHeader>(bytes, 'deviceKeys');
    checkHeader(he, header, 'device key set');
    if (sections.length !== 3) fail('E_CORRUPT', `device key set has ${sections.length} sections, expected 3`);
    const { seal } = he;
    const loaded: { delete(): void }[] = [];
    try {
      const publicKey = loadSeal(he, seal.PublicKey(), sections[0]!, 'public key');
      loaded.push(publicKey);
      const relin = loadSeal(he, seal.RelinKeys(), sections[1]!, 'relinearization keys');
      loaded.push(relin);
      const galois = loadSeal(he, seal.GaloisKeys(), sections[2]!, 'Galois keys');
      return new DeviceKeys(header.keyId, header.steps, publicKey, relin, galois, bytes.length);
    } catch (error) {
      loaded.forEach((o) => o.delete());
      throw error;
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.publicKey.delete();
    this.relin.delete();
    this.galois.delete();
  }
}
