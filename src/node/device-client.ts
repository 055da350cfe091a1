import { webcrypto } from 'node:crypto';
import {
  BgvContext,
  BgvDeviceKeys,
  DeviceKeys,
  EncryptedBgvClassifier,
  EncryptedClassifier,
  type Evaluation,
  HeContext,
  openClassifier,
  type SealRuntime,
} from '../he';
import { type BundleManifest, loadVerifiedBundle, type VerifiedBundle } from '../model/bundle';

const subtle = webcrypto.subtle;

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return Buffer.from(await subtle.digest('SHA-256', bytes)).toString('hex');
}

/** Verifies the manifest signature with WebCrypto's Ed25519, as recent Chromium does. */
async function ed25519Verifier(publicKey: Uint8Array) {
  const key = await subtle.importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
  return (message: Uint8Array, signature: Uint8Array) => subtle.verify({ name: 'Ed25519' }, key, signature, message);
}

/** Fetches and verifies a bundle from a static host (`baseUrl` ends with the version's directory). */
export async function fetchBundle(baseUrl: string, ownerPublicKey: Uint8Array): Promise<VerifiedBundle> {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  return loadVerifiedBundle(
    {
      read: async (name) => {
        const response = await fetch(new URL(name, base));
        if (!response.ok) throw new Error(`GET ${name}: ${response.status}`);
        return new Uint8Array(await response.arrayBuffer());
      },
    },
    await ed25519Verifier(ownerPublicKey),
    sha256Hex,
  );
}

/** Reads and verifies a bundle from a directory on disk (`dir` is the version's directory): for benchmarks and tools. */
export async function readBundle(dir: string, ownerPublicKey: Uint8Array): Promise<VerifiedBundle> {
  const { readFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  return loadVerifiedBundle({ read: async (name) => new Uint8Array(await readFile(join(dir, name))) }, await ed25519Verifier(ownerPublicKey), sha256Hex);
}

/** A bundle's encrypted head loaded into SEAL, of either scheme. */
export interface LoadedClassifier {
  /** Encrypts the features, evaluates the encrypted head (every CRT component for BGV), serializes the encrypted scores. */
  evaluate(features: ArrayLike<number>): Evaluation;
  /** Frees the classifier, the keys and the context. */
  dispose(): void;
}

/**
 * Loads a verified bundle's keys and encrypted weights as a device does, for the scheme
 * its manifest names: a CKKS context, or a BGV context with every CRT component open.
 */
export function loadBundleClassifier(runtime: SealRuntime, bundle: VerifiedBundle): LoadedClassifier {
  const { he } = bundle.manifest;
  const keysBin = bundle.files['keys.bin'];
  const weightsBin = bundle.files['weights.bin'];
  if (he.scheme === 'bgv') {
    const { classifier, dispose } = openClassifier(
      () => BgvContext.create(runtime, he.params),
      (ctx) => BgvDeviceKeys.load(ctx, keysBin),
      (ctx, keys) => EncryptedBgvClassifier.load(ctx, keys, weightsBin),
    );
    return { evaluate: (features) => classifier.evaluate(features), dispose };
  }
  const { classifier, dispose } = openClassifier(
    () => HeContext.create(runtime, he.params),
    (context) => DeviceKeys.load(context, keysBin),
    (context, keys) => EncryptedClassifier.load(context, keys, weightsBin),
  );
  return { evaluate: (features) => classifier.evaluate(features), dispose };
}

export interface PostOutcome {
  status: number;
  body: Record<string, unknown>;
}

/**
 * A device in Node, doing what the kiosk does: an ECDSA P-256 key made with WebCrypto
 * (non-extractable), enrollment with a one-time token, a verified bundle, encrypted
 * classification, signed posts. Used by the backend's tests and load benchmark.
 */
export class NodeDevice {
  private classifier?: LoadedClassifier;
  /** The bundle's manifest: what each request names (model, version, key). */
  private manifest?: BundleManifest;

  private constructor(
    readonly backendUrl: string,
    readonly deviceId: string,
    private readonly privateKey: webcrypto.CryptoKey,
  ) {}

  static async enroll(backendUrl: string, token: string): Promise<NodeDevice> {
    const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    const publicKey = await subtle.exportKey('jwk', pair.publicKey);
    const response = await fetch(new URL('/api/v1/devices/enroll', backendUrl), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, publicKey }),
    });
    const body = (await response.json()) as { deviceId?: string; error?: { message: string } };
    if (response.status !== 201 || body.deviceId === undefined) throw new Error(`enrollment refused: ${response.status} ${body.error?.message}`);
    return new NodeDevice(backendUrl, body.deviceId, pair.privateKey);
  }

  /** Posts results for `bundle` without loading it into SEAL (results computed elsewhere). */
  attach(bundle: VerifiedBundle): void {
    this.manifest = bundle.manifest;
  }

  /** Loads a verified bundle's keys and encrypted weights into SEAL (once), CKKS or BGV. */
  async load(runtime: SealRuntime, bundle: VerifiedBundle): Promise<void> {
    this.unload();
    this.attach(bundle);
    this.classifier = loadBundleClassifier(runtime, bundle);
  }

  /** Encrypts features, evaluates the encrypted head, returns the encrypted result. */
  classify(features: ArrayLike<number>): Uint8Array {
    if (this.classifier === undefined) throw new Error('no bundle loaded');
    return this.classifier.evaluate(features).result;
  }

  /** The signed request body and headers for one result; `capturedAt` (ISO time) says when its frame was captured. */
  async request(result: Uint8Array, idempotencyKey: string, capturedAt?: string): Promise<{ body: Uint8Array; headers: Record<string, string> }> {
    const manifest = this.manifest;
    if (manifest === undefined) throw new Error('no bundle attached');
    const body = new TextEncoder().encode(
      JSON.stringify({
        modelId: manifest.modelId,
        version: manifest.version,
        keyId: manifest.keyId,
        idempotencyKey,
        result: Buffer.from(result).toString('base64'),
        ...(capturedAt === undefined ? {} : { capturedAt }),
      }),
    );
    return { body, headers: await this.signedHeaders(body) };
  }

  async signedHeaders(body: Uint8Array): Promise<Record<string, string>> {
    const signature = await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, this.privateKey, body);
    return { 'content-type': 'application/json', 'x-device-id': this.deviceId, 'x-signature': Buffer.from(signature).toString('base64') };
  }

  async post(body: Uint8Array, headers: Record<string, string>): Promise<PostOutcome> {
    const response = await fetch(new URL('/api/v1/inferences', this.backendUrl), { method: 'POST', headers, body: Buffer.from(body) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  unload(): void {
    if (this.classifier === undefined) return;
    this.classifier.dispose();
    this.classifier = undefined;
  }
}
