import { readContainer, writeContainer } from '../container';
import { fail } from '../errors';
import { loadSeal, randomKeyId } from '../keys';
import type { GaloisKeys, PublicKey, RelinKeys, SecretKey } from '../seal';
import type { BgvContext } from './context';
import { type BgvParameters, checkBgvParameters, describeBgvParameters, sameBgvParameters } from './params';

/** What the owner's secret key file records besides the keys: how to read the scores. */
export interface BgvDecoding {
  /** Decrypted integer / outputScale = score. */
  readonly outputScale: number;
  /** Scores per result. */
  readonly outputs: number;
}

interface KeyHeader {
  params: BgvParameters;
  keyId: string;
  steps: number[];
}

interface SecretHeader extends KeyHeader, BgvDecoding {}

/** Sections per component in a device key set: public, relinearization, Galois keys. */
const DEVICE_SECTIONS = 3;

function checkHeader(ctx: BgvContext, header: KeyHeader, what: string): void {
  const params = checkBgvParameters(header.params);
  if (!sameBgvParameters(params, ctx.params)) {
    fail('E_PARAMS', `${what} was made for ${describeBgvParameters(params)}, not ${describeBgvParameters(ctx.params)}`);
  }
  if (typeof header.keyId !== 'string' || !/^[0-9a-f]{32}$/.test(header.keyId)) fail('E_CORRUPT', `${what} has no valid key id`);
  if (!Array.isArray(header.steps) || !header.steps.every((s) => Number.isInteger(s) && s > 0 && s < ctx.slots)) {
    fail('E_CORRUPT', `${what} has an invalid list of rotation steps`);
  }
}

function checkDecoding(header: Partial<BgvDecoding>, slots: number): BgvDecoding {
  const { outputScale, outputs } = header;
  if (typeof outputScale !== 'number' || !Number.isFinite(outputScale) || outputScale <= 0) fail('E_CORRUPT', 'the secret key file has no valid output scale');
  if (!Number.isInteger(outputs) || outputs! < 1 || outputs! > slots) fail('E_CORRUPT', `the secret key file declares ${String(outputs)} outputs`);
  return { outputScale, outputs: outputs! };
}

/** What a BGV device key set is for, read from its checked header without loading any key. */
export function bgvKeySetInfo(bytes: Uint8Array): { params: BgvParameters; keyId: string; steps: readonly number[] } {
  const { header } = readContainer<KeyHeader>(bytes, 'deviceKeys');
  const params = checkBgvParameters(header.params);
  if (typeof header.keyId !== 'string' || !/^[0-9a-f]{32}$/.test(header.keyId)) fail('E_CORRUPT', 'device key set has no valid key id');
  return { params, keyId: header.keyId, steps: header.steps };
}

/**
 * The owner's BGV keys for one model: one SEAL key pair per CRT component under one key
 * id. The secret keys never leave the backend; the device key set holds, per component,
 * the public key, the relinearization keys and Galois keys for exactly the plan's
 * rotation steps, all saved seeded. The secret key file also records the output scale, so
 * the backend dequantizes with the owner's figure, never with one a device sent.
 */
export class BgvOwnerKeys {
  private disposed = false;

  private constructor(
    private readonly ctx: BgvContext,
    readonly keyId: string,
    readonly steps: readonly number[],
    readonly decoding: BgvDecoding,
    private readonly secretKeys: SecretKey[],
    private readonly publicKeys: PublicKey[],
    private readonly deviceKeys: Uint8Array,
  ) {}

  /** Fresh keys for a plan: Galois keys for its rotation steps, its output scale recorded. */
  static generate(ctx: BgvContext, plan: { rotationSteps: readonly number[]; outputScale: number; outputs: number }): BgvOwnerKeys {
    if (!ctx.complete) fail('E_PARAMS', 'the owner needs a context with every CRT component open');
    const steps = [...new Set(plan.rotationSteps)].sort((a, b) => a - b);
    for (const s of steps) {
      if (!Number.isInteger(s) || s <= 0 || s >= ctx.slots) fail('E_SHAPE', `rotation step ${s} is outside 1…${ctx.slots - 1}`);
    }
    const decoding = checkDecoding(plan, ctx.slots);
    const sections: Uint8Array[] = [];
    const secretKeys: SecretKey[] = [];
    const publicKeys: PublicKey[] = [];
    try {
      for (const c of ctx.components) {
        const { seal } = c;
        const generator = seal.KeyGenerator(c.context);
        try {
          const serialized = [
            generator.createPublicKeySerializable(),
            generator.createRelinKeysSerializable(),
            generator.createGaloisKeysSerializable(Int32Array.from(steps)),
          ];
          const blobs = serialized.map((s) => s.saveArray(seal.ComprModeType.zstd));
          serialized.forEach((s) => s.delete());
          sections.push(...blobs);
          secretKeys.push(generator.secretKey());
          publicKeys.push(loadSeal(c, seal.PublicKey(), blobs[0]!, 'public key'));
        } finally {
          generator.delete();
        }
      }
    } catch (error) {
      [...secretKeys, ...publicKeys].forEach((k) => k.delete());
      throw error;
    }
    const keyId = randomKeyId();
    const deviceKeys = writeContainer('deviceKeys', { params: ctx.params, keyId, steps }, sections);
    return new BgvOwnerKeys(ctx, keyId, steps, decoding, secretKeys, publicKeys, deviceKeys);
  }

  /** Restores the owner's keys from `secretKeyBytes()` and the matching device key set. */
  static load(ctx: BgvContext, secretKeyBytes: Uint8Array, deviceKeyBytes: Uint8Array): BgvOwnerKeys {
    if (!ctx.complete) fail('E_PARAMS', 'the owner needs a context with every CRT component open');
    const { header, sections } = readContainer<SecretHeader>(secretKeyBytes, 'secretKey');
    checkHeader(ctx, header, 'secret key file');
    const decoding = checkDecoding(header, ctx.slots);
    const k = ctx.params.plainModulusBits.length;
    if (sections.length !== k) fail('E_CORRUPT', `secret key file has ${sections.length} sections, the parameters have ${k} components`);
    const device = readContainer<KeyHeader>(deviceKeyBytes, 'deviceKeys');
    checkHeader(ctx, device.header, 'device key set');
    if (device.header.keyId !== header.keyId) fail('E_KEYS', `device key set ${device.header.keyId} does not belong to secret key ${header.keyId}`);
    if (device.sections.length !== DEVICE_SECTIONS * k) fail('E_CORRUPT', `device key set has ${device.sections.length} sections, expected ${DEVICE_SECTIONS * k}`);
    const secretKeys: SecretKey[] = [];
    const publicKeys: PublicKey[] = [];
    try {
      for (const c of ctx.components) {
        secretKeys.push(loadSeal(c, c.seal.SecretKey(), sections[c.index]!, `secret key ${c.index}`));
        publicKeys.push(loadSeal(c, c.seal.PublicKey(), device.sections[DEVICE_SECTIONS * c.index]!, `public key ${c.index}`));
      }
    } catch (error) {
      [...secretKeys, ...publicKeys].forEach((key) => key.delete());
      throw error;
    }
    return new BgvOwnerKeys(ctx, header.keyId, device.header.steps, decoding, secretKeys, publicKeys, deviceKeyBytes);
  }

  secretKey(component: number): SecretKey {
    this.check();
    return this.secretKeys[component] ?? fail('E_KEYS', `no secret key for component ${component}`);
  }

  publicKey(component: number): PublicKey {
    this.check();
    return this.publicKeys[component] ?? fail('E_KEYS', `no public key for component ${component}`);
  }

  /** The device's key set: what the static bundle ships as keys.bin. */
  deviceKeyBytes(): Uint8Array {
    return this.deviceKeys;
  }

  /** The secret keys (and the output scale) in the container format; store them wrapped. */
  secretKeyBytes(): Uint8Array {
    this.check();
    const blobs = this.secretKeys.map((key) => key.saveArray(this.ctx.components[0]!.seal.ComprModeType.zstd));
    const header: SecretHeader = { params: this.ctx.params, keyId: this.keyId, steps: [...this.steps], ...this.decoding };
    return writeContainer('secretKey', header, blobs);
  }

  private check(): void {
    if (this.disposed) fail('E_DISPOSED', 'the owner keys have been disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    [...this.secretKeys, ...this.publicKeys].forEach((key) => key.delete());
  }
}

/** The keys of the components a device opened: to encrypt and evaluate, never to decrypt. */
export interface BgvComponentKeys {
  readonly publicKey: PublicKey;
  readonly relin: RelinKeys;
  readonly galois: GaloisKeys;
}

/** A device's BGV key set, loaded for the CRT components its context opened. */
export class BgvDeviceKeys {
  private disposed = false;

  private constructor(
    readonly keyId: string,
    readonly steps: readonly number[],
    private readonly keys: Map<number, BgvComponentKeys>,
    readonly byteLength: number,
  ) {}

  static load(ctx: BgvContext, bytes: Uint8Array): BgvDeviceKeys {
    const { header, sections } = readContainer<KeyHeader>(bytes, 'deviceKeys');
    checkHeader(ctx, header, 'device key set');
    const k = ctx.params.plainModulusBits.length;
    if (sections.length !== DEVICE_SECTIONS * k) fail('E_CORRUPT', `device key set has ${sections.length} sections, expected ${DEVICE_SECTIONS * k}`);
    const keys = new Map<number, BgvComponentKeys>();
    const loaded: { delete(): void }[] = [];
    try {
      for (const c of ctx.components) {
        const at = DEVICE_SECTIONS * c.index;
        const publicKey = loadSeal(c, c.seal.PublicKey(), sections[at]!, `public key ${c.index}`);
        loaded.push(publicKey);
        const relin = loadSeal(c, c.seal.RelinKeys(), sections[at + 1]!, `relinearization keys ${c.index}`);
        loaded.push(relin);
        const galois = loadSeal(c, c.seal.GaloisKeys(), sections[at + 2]!, `Galois keys ${c.index}`);
        loaded.push(galois);
        keys.set(c.index, { publicKey, relin, galois });
      }
    } catch (error) {
      loaded.forEach((o) => o.delete());
      throw error;
    }
    return new BgvDeviceKeys(header.keyId, header.steps, keys, bytes.length);
  }

  component(index: number): BgvComponentKeys {
    if (this.disposed) fail('E_DISPOSED', 'the device keys have been disposed');
    return this.keys.get(index) ?? fail('E_KEYS', `the device key set was not loaded for component ${index}`);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const k of this.keys.values()) {
      k.publicKey.delete();
      k.relin.delete();
      k.galois.delete();
    }
  }
}
