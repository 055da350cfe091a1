import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BundleError, type BundleManifest, parseManifest } from '../../src/model/bundle';
import { MNIST_SPEC } from '../../src/model/input-spec';
import { loadBundleDir, sha256Hex, writeBundle } from '../../src/protect/bundle';
import { KEK_FILE, KeyError, loadKek, unwrapSecret, wrapSecret } from '../../src/node/kek';
import { generateSigningKey, signBytes, verifyBytes } from '../../src/protect/signing';

const temp = () => mkdtempSync(join(tmpdir(), 'sealed-edge-'));

describe('key-encryption key', () => {
  it('is created once with mode 0600 and read back the same', () => {
    const dir = temp();
    const first = loadKek(dir, {});
    expect(first).toHaveLength(32);
    expect(statSync(join(dir, KEK_FILE)).mode & 0o777).toBe(0o600);
    expect(loadKek(dir, {}).equals(first)).toBe(true);
  });

  it('comes from SEALED_EDGE_KEK (hex or base64) when set, and refuses malformed values', () => {
    const hex = 'ab'.repeat(32);
    expect(loadKek(temp(), { SEALED_EDGE_KEK: hex }).toString('hex')).toBe(hex);
    const b64 = Buffer.alloc(32, 7).toString('base64');
    expect(loadKek(temp(), { SEALED_EDGE_KEK: b64 }).equals(Buffer.alloc(32, 7))).toBe(true);
    expect(() => loadKek(temp(), { SEALED_EDGE_KEK: 'short' })).toThrow(/256-bit key/);
  });

  it('refuses a key file others can read', () => {
    const dir = temp();
    loadKek(dir, {});
    chmodSync(join(dir, KEK_FILE), 0o644);
    expect(() => loadKek(dir, {})).toThrow(/readable by others.*chmod 600/);
  });

  it('wraps secrets with AES-GCM bound to their context; tampering, wrong context or wrong key fail', () => {
    const kek = loadKek(temp(), {});
    const secret = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    const wrapped = wrapSecret(kek, secret, 'seal-secret-key:abc');
    expect(wrapped.length).toBe(1 + 12 + 1000 + 16);
    expect(Array.from(unwrapSecret(kek, wrapped, 'seal-secret-key:abc'))).toEqual(Array.from(secret));
    const tampered = wrapped.slice();
    tampered[50]! ^= 1;
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as KeyError).code;
      }
      return 'none';
    };
    expect(code(() => unwrapSecret(kek, tampered, 'seal-secret-key:abc'))).toBe('E_UNWRAP');
    expect(code(() => unwrapSecret(kek, wrapped, 'seal-secret-key:other'))).toBe('E_UNWRAP');
    expect(code(() => unwrapSecret(loadKek(temp(), {}), wrapped, 'seal-secret-key:abc'))).toBe('E_UNWRAP');
    expect(code(() => unwrapSecret(kek, wrapped.subarray(0, 10), 'seal-secret-key:abc'))).toBe('E_UNWRAP');
  });
});

describe('Ed25519 signing', () => {
  it('signs and verifies; another key, message or signature fails', () => {
    const a = generateSigningKey();
    const b = generateSigningKey();
    expect(a.publicKey).toHaveLength(32);
    const message = new TextEncoder().encode('manifest');
    const sig = signBytes(a.privateKey, message);
    expect(sig).toHaveLength(64);
    expect(verifyBytes(a.publicKey, message, sig)).toBe(true);
    expect(verifyBytes(b.publicKey, message, sig)).toBe(false);
    expect(verifyBytes(a.publicKey, new TextEncoder().encode('manifesT'), sig)).toBe(false);
    expect(verifyBytes(a.publicKey, message, sig.subarray(0, 63))).toBe(false);
  });
});

function sampleManifest(): Omit<BundleManifest, 'files'> {
  return {
    format: 'sealed-edge-bundle/1',
    modelId: 'mnist-test',
    version: 1,
    keyId: 'ab'.repeat(16),
    createdAt: new Date(0).toISOString(),
    he: {
      scheme: 'ckks',
      params: { scheme: 'ckks', security: 128, polyModulusDegree: 8192, coeffModulusBits: [49, 35, 35, 35, 60], scaleBits: 35, depth: 3 },
      mode: { weights: 'encrypted', input: 'encrypted' },
      layers: [{ kind: 'dense', inputs: 4, outputs: 2 }],
      rotationSteps: [1, 2],
      depth: 1,
    },
    extractor: {
      input: { name: 'input', shape: [1, 1, 28, 28] },
      output: { name: 'features', shape: [1, 4] },
      preprocessing: MNIST_SPEC,
    },
    classes: 2,
  };
}

describe('static bundle', () => {
  const files = {
    'extractor.onnx': new Uint8Array([1, 2, 3]),
    'weights.bin': Uint8Array.from({ length: 5000 }, (_, i) => i % 256),
    'keys.bin': new Uint8Array([9, 9]),
  };

  it('is written with sizes and SHA-256s, signed, and loads back verified', async () => {
    const root = temp();
    const owner = generateSigningKey();
    const dir = join(root, 'models', 'mnist-test');
    const { manifest, totalBytes } = writeBundle(dir, sampleManifest(), files, owner.privateKey);
    expect(readdirSync(dir).sort()).toEqual(['extractor.onnx', 'keys.bin', 'manifest.json', 'manifest.sig', 'weights.bin']);
    expect(manifest.files['weights.bin']).toEqual({ size: 5000, sha256: sha256Hex(files['weights.bin']) });
    expect(totalBytes).toBe(3 + 5000 + 2 + readFileSync(join(dir, 'manifest.json')).length + 64);
    const loaded = await loadBundleDir(dir, owner.publicKey);
    expect(loaded.manifest).toEqual(manifest);
    expect(Array.from(loaded.files['keys.bin'])).toEqual([9, 9]);
  });

  it('is refused when signed by another key, or when any file or the manifest changed', async () => {
    const owner = generateSigningKey();
    const refusal = async (change: (dir: string) => void, key = owner.publicKey) => {
      const dir = join(temp(), 'b');
      writeBundle(dir, sampleManifest(), files, owner.privateKey);
      change(dir);
      try {
        await loadBundleDir(dir, key);
      } catch (e) {
        return (e as BundleError).code;
      }
      return 'accepted';
    };
    expect(await refusal(() => {}, generateSigningKey().publicKey)).toBe('E_SIGNATURE');
    expect(await refusal((d) => writeFileSync(join(d, 'keys.bin'), new Uint8Array([9, 8])))).toBe('E_HASH');
    expect(await refusal((d) => writeFileSync(join(d, 'weights.bin'), new Uint8Array(4999)))).toBe('E_HASH');
    expect(
      await refusal((d) => {
        const m = readFileSync(join(d, 'manifest.json'), 'utf8').replace('"version": 1', '"version": 2');
        writeFileSync(join(d, 'manifest.json'), m);
      }),
    ).toBe('E_SIGNATURE');
    expect(await refusal((d) => writeFileSync(join(d, 'manifest.sig'), new Uint8Array(64)))).toBe('E_SIGNATURE');
  });

  it('a signed but malformed manifest is refused with the field named', () => {
    const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
    expect(() => parseManifest(new Uint8Array([0xff, 0xfe]))).toThrow(/not UTF-8 JSON/);
    expect(() => parseManifest(enc({ ...sampleManifest(), modelId: '../etc' }))).toThrow(/modelId/);
    expect(() => parseManifest(enc({ ...sampleManifest(), files: {} }))).toThrow(/extractor.onnx/);
    expect(() => parseManifest(enc({ ...sampleManifest(), format: 'v0' }))).toThrow(/format/);
    const params = { ...sampleManifest().he.params, coeffModulusBits: [60, 60, 60, 60, 60] };
    expect(() => parseManifest(enc({ ...sampleManifest(), he: { ...sampleManifest().he, params } }))).toThrow(/security bound/);
    const he = (change: Record<string, unknown>) => enc({ ...sampleManifest(), he: { ...sampleManifest().he, ...change } });
    expect(() => parseManifest(he({ mode: { weights: 'encrypted', input: 'sometimes' } }))).toThrow(/he.mode must be/);
    expect(() => parseManifest(he({ rotationSteps: [1, 4096] }))).toThrow(/he.rotationSteps must be integers from 0 \(the conjugation\) to 4095/);
    expect(() => parseManifest(he({ rotationSteps: [-1] }))).toThrow(/he.rotationSteps must be integers from 0/);
    expect(() => parseManifest(he({ rotationSteps: [0, 1] }))).not.toThrow(/rotationSteps/);
    expect(() => parseManifest(he({ scheme: 'bfv' }))).toThrow(/he.scheme must be "ckks" or "bgv", got "bfv"/);
  });

  it('a manifest written before BGV existed (no he.scheme) is read as CKKS', () => {
    const { scheme, ...legacy } = sampleManifest().he;
    expect(scheme).toBe('ckks');
    const parsed = parseManifest(new TextEncoder().encode(JSON.stringify({ ...sampleManifest(), he: legacy, files: fileEntries() })));
    expect(parsed.he.scheme).toBe('ckks');
    expect(parsed.he.params).toEqual(sampleManifest().he.params);
  });

  it('a manifest written before the input spec ({ width, height, mean, std }) is read as MNIST’s contract; a spec that contradicts the input is refused', () => {
    const enc = (extractor: object) => new TextEncoder().encode(JSON.stringify({ ...sampleManifest(), extractor: { ...sampleManifest().extractor, ...extractor }, files: fileEntries() }));
    const old = parseManifest(enc({ preprocessing: { width: 28, height: 28, mean: 0.1307, std: 0.3081 } }));
    expect(old.extractor.preprocessing).toEqual(MNIST_SPEC);
    expect(() => parseManifest(enc({ preprocessing: { ...MNIST_SPEC, channels: 3, digitize: false } }))).toThrow(
      /extractor\.preprocessing makes a tensor of \[1, 3, 28, 28\], extractor\.input is \[1, 1, 28, 28\]/,
    );
    expect(() => parseManifest(enc({ preprocessing: { ...MNIST_SPEC, fit: 'stretch' } }))).toThrow(/extractor\.preprocessing: fit must be center-crop, resize, letterbox, got "stretch"/);
    expect(() => parseManifest(enc({ preprocessing: { width: 28, height: 28, mean: 0.1 } }))).toThrow(/extractor\.preprocessing: channels must be 1 or 3/);
  });
});

/** The `files` section of a manifest: any well-formed sizes and hashes. */
function fileEntries() {
  return Object.fromEntries(['extractor.onnx', 'weights.bin', 'keys.bin'].map((name) => [name, { size: 1, sha256: 'cd'.repeat(32) }]));
}

/** A BGV manifest as protect writes it for the MNIST head at 128 bits (two 27-bit CRT moduli). */
function bgvManifest(): Omit<BundleManifest, 'files'> {
  return {
    ...sampleManifest(),
    he: {
      scheme: 'bgv',
      params: { scheme: 'bgv', security: 128, polyModulusDegree: 16384, coeffModulusBits: [60, 50, 54, 50, 60], plainModulusBits: [27, 27], switchPrimes: [1, 1, 1] },
      mode: { weights: 'encrypted', input: 'encrypted' },
      layers: [{ kind: 'dense', inputs: 1600, outputs: 512 }, { kind: 'poly', coeffs: [0, 2, 1] }, { kind: 'dense', inputs: 512, outputs: 10 }],
      rotationSteps: [1, 32, 512, 1024, 2048, 4096],
      depth: 3,
    },
    classes: 10,
  };
}

describe('BGV bundles', () => {
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify({ files: fileEntries(), ...(v as object) }));
  const withHe = (change: Record<string, unknown>) => enc({ ...bgvManifest(), he: { ...bgvManifest().he, ...change } });

  it('are written, signed and load back with their scheme and BGV parameters', async () => {
    const owner = generateSigningKey();
    const dir = join(temp(), 'bgv');
    const files = { 'extractor.onnx': new Uint8Array([1]), 'weights.bin': new Uint8Array([2, 3]), 'keys.bin': new Uint8Array([4]) };
    const { manifest } = writeBundle(dir, bgvManifest(), files, owner.privateKey);
    const loaded = await loadBundleDir(dir, owner.publicKey);
    expect(loaded.manifest).toEqual(manifest);
    expect(loaded.manifest.he.scheme).toBe('bgv');
    if (loaded.manifest.he.scheme !== 'bgv') throw new Error('not a BGV manifest');
    expect(loaded.manifest.he.params.plainModulusBits).toEqual([27, 27]);
    expect(loaded.manifest.he.params.switchPrimes).toEqual([1, 1, 1]);
  });

  it('a malformed BGV manifest is refused with the field named, and the owner never signs one', () => {
    const params = bgvManifest().he.params;
    expect(() => parseManifest(withHe({ mode: { weights: 'plain', input: 'encrypted' } }))).toThrow(/BGV has no plaintext-weights mode/);
    expect(() => parseManifest(withHe({ depth: 2 }))).toThrow(/he.depth is 2, the BGV parameters switch modulus 3 times/);
    expect(() => parseManifest(withHe({ params: { ...params, plainModulusBits: [] } }))).toThrow(/he.params: invalid BGV parameters/);
    expect(() => parseManifest(withHe({ params: { ...params, coeffModulusBits: [60, 60, 60, 60, 60, 60, 60, 60] } }))).toThrow(/he.params: .*the 128-bit bound at N=16384 is 438/);
    expect(() => parseManifest(withHe({ rotationSteps: [8192] }))).toThrow(/he.rotationSteps must be integers from 1 to 8191/);
    expect(() => parseManifest(withHe({ rotationSteps: [0] }))).toThrow(/he.rotationSteps must be integers from 1 to 8191/);
    // The scheme names the parameters it goes with: BGV parameters under "ckks", CKKS ones under "bgv".
    expect(() => parseManifest(withHe({ scheme: 'ckks' }))).toThrow(/he.params: invalid HE parameters/);
    expect(() => parseManifest(withHe({ params: sampleManifest().he.params }))).toThrow(/he.params: invalid BGV parameters/);
    const owner = generateSigningKey();
    const dir = join(temp(), 'never');
    const bad = { ...bgvManifest(), he: { ...bgvManifest().he, depth: 5 } };
    expect(() => writeBundle(dir, bad, { 'extractor.onnx': new Uint8Array(1), 'weights.bin': new Uint8Array(1), 'keys.bin': new Uint8Array(1) }, owner.privateKey)).toThrow(BundleError);
    expect(existsSync(dir)).toBe(false);
  });
});
