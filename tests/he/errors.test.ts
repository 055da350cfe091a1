import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decryptResult,
  DeviceKeys,
  EncryptedClassifier,
  encryptClassifier,
  floatEvaluate,
  HeContext,
  OwnerKeys,
  planClassifier,
  planParameters,
} from '../../src/he';
import { readContainer, writeContainer } from '../../src/he/container';
import { crc32 } from '../../src/he/crc32';
import { nodeSeal } from '../../src/node/seal';
import { codeOf, makeHead, makeInputs, maxAbs, maxAbsDiff, messageOf, protect, type Protected, rng } from './helpers';

/** Rewrites a container with a changed header or sections (a forgery with valid checksums). */
function forge<H extends object>(
  bytes: Uint8Array,
  kind: Parameters<typeof readContainer>[1],
  change: (header: H, sections: Uint8Array[]) => void,
): Uint8Array {
  const { header, sections } = readContainer<H & { sections?: unknown }>(bytes, kind);
  const copy = sections.map((s) => s.slice());
  delete header.sections;
  change(header, copy);
  return writeContainer(kind, header, copy);
}

describe('bad input is refused with clear, typed errors', () => {
  const layers = makeHead([256, 64, 10], 'realistic', 99);
  const x = makeInputs(256, 1, 'realistic', 98)[0]!;
  let p: Protected;
  let other: Protected;
  beforeAll(async () => {
    p = await protect(layers);
    other = await protect(layers);
  });
  afterAll(() => {
    p?.dispose();
    other?.dispose();
  });

  /** After any refusal the engine must still work. */
  function stillWorks(): void {
    const float = floatEvaluate(layers, x);
    expect(maxAbsDiff(p.decrypt(p.classifier.evaluate(x).result), float)).toBeLessThan(1e-3 * maxAbs(float));
  }

  it('wrong input shapes and values', () => {
    expect(codeOf(() => p.classifier.evaluate(new Float64Array(255)))).toBe('E_SHAPE');
    expect(messageOf(() => p.classifier.evaluate(new Float64Array(300)))).toMatch(/300 values, the classifier expects 256/);
    expect(codeOf(() => p.classifier.evaluate(Float64Array.from(x, (v, i) => (i === 7 ? Infinity : v))))).toBe('E_SHAPE');
    stillWorks();
  });

  it('wrong model shapes and modes at encryption', async () => {
    const bad = [layers[0]!, layers[1]!, { ...layers[2]!, inputs: 32 } as typeof layers[number]];
    await expect(encryptClassifier(p.he, p.owner, bad)).rejects.toMatchObject({ code: 'E_SHAPE' });
    expect(codeOf(() => planClassifier(p.he, layers, { weights: 'plain', input: 'plain' }))).toBe('E_UNSUPPORTED');
    expect(codeOf(() => planClassifier(p.he, layers, { weights: 'secret', input: 'plain' } as never))).toBe('E_SHAPE');
    expect(codeOf(() => planClassifier(p.he, [{ kind: 'conv' } as never]))).toBe('E_SHAPE');
  });

  it('keys of another owner', () => {
    expect(codeOf(() => EncryptedClassifier.load(p.he, other.keys, p.classifierBytes))).toBe('E_KEYS');
    const result = p.classifier.evaluate(x).result;
    expect(codeOf(() => decryptResult(other.he, other.owner, result))).toBe('E_KEYS');
    expect(codeOf(() => OwnerKeys.load(p.he, p.owner.secretKeyBytes(), other.owner.deviceKeyBytes()))).toBe('E_KEYS');
    stillWorks();
  });

  it('a key set without a Galois key the plan needs', async () => {
    const needed = planClassifier(p.he, layers).rotationSteps;
    const partial = OwnerKeys.generate(p.he, needed.slice(1));
    await expect(encryptClassifier(p.he, partial, layers)).rejects.toThrow(new RegExp(`rotation steps ${needed[0]}`));
    partial.dispose();
    const fewer = forge<{ steps: number[] }>(p.owner.deviceKeyBytes(), 'deviceKeys', (h) => {
      h.steps = h.steps.slice(1);
    });
    const keys = DeviceKeys.load(p.he, fewer);
    expect(codeOf(() => EncryptedClassifier.load(p.he, keys, p.classifierBytes))).toBe('E_KEYS');
    keys.dispose();
  });

  it('data made under other parameters', async () => {
    const params = planParameters({ scheme: 'ckks', security: 192, depth: 3, precisionBits: 25 });
    const he = HeContext.create(await nodeSeal(), params);
    try {
      expect(codeOf(() => DeviceKeys.load(he, p.owner.deviceKeyBytes()))).toBe('E_PARAMS');
      const owner = OwnerKeys.generate(he, planClassifier(he, layers).rotationSteps);
      const keys = DeviceKeys.load(he, owner.deviceKeyBytes());
      expect(codeOf(() => EncryptedClassifier.load(he, keys, p.classifierBytes))).toBe('E_PARAMS');
      expect(codeOf(() => decryptResult(he, owner, p.classifier.evaluate(x).result))).toBe('E_PARAMS');
      keys.dispose();
      owner.dispose();
    } finally {
      he.dispose();
    }
  });

  it('truncated files at every region', () => {
    const bytes = p.classifierBytes;
    const headerEnd = 12 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true) + 4;
    for (const length of [0, 3]) expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, bytes.subarray(0, length)))).toBe('E_FORMAT');
    for (const length of [8, 11, 20, headerEnd - 1, headerEnd + 10, bytes.length - 1]) {
      expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, bytes.subarray(0, length)))).toBe('E_TRUNCATED');
    }
    const keys = p.owner.deviceKeyBytes();
    expect(codeOf(() => DeviceKeys.load(p.he, keys.subarray(0, keys.length - 100)))).toBe('E_TRUNCATED');
    stillWorks();
  });

  it('corrupted bytes, wrong versions, wrong kinds, trailing data', () => {
    const bytes = p.classifierBytes;
    const flip = (at: number) => {
      const copy = bytes.slice();
      copy[at]! ^= 0x40;
      return copy;
    };
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, flip(20)))).toBe('E_CORRUPT'); // header
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, flip(bytes.length - 5000)))).toBe('E_CORRUPT'); // a section
    const version = bytes.slice();
    version[4] = 2;
    expect(messageOf(() => EncryptedClassifier.load(p.he, p.keys, version))).toMatch(/format version 2; this build reads version 1/);
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, version))).toBe('E_VERSION');
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, p.owner.deviceKeyBytes()))).toBe('E_FORMAT');
    expect(codeOf(() => DeviceKeys.load(p.he, p.classifierBytes))).toBe('E_FORMAT');
    const trailing = new Uint8Array(bytes.length + 3);
    trailing.set(bytes);
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, trailing))).toBe('E_CORRUPT');
    const random = rng(5);
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, Uint8Array.from({ length: 4096 }, () => random() * 256)))).toBe('E_FORMAT');
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, 'not bytes' as never))).toBe('E_FORMAT');
    stillWorks();
  });

  it('forgeries with valid checksums still fail SEAL-level checks, without aborting SEAL', () => {
    const garbage = forge(p.classifierBytes, 'classifier', (_h, s) => {
      const r = rng(9);
      s[0] = Uint8Array.from(s[0]!, () => r() * 256);
    });
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, garbage))).toBe('E_CORRUPT');
    // A SEAL blob cut short but with its declared size patched: SEAL would read past the end.
    const cut = forge(p.classifierBytes, 'classifier', (_h, s) => {
      const short = s[0]!.slice(0, 1000);
      new DataView(short.buffer).setBigUint64(8, 1000n, true);
      s[0] = short;
    });
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, cut))).toBe('E_CORRUPT');
    // Sections swapped between layers: valid ciphertexts at the wrong level.
    const swapped = forge(p.classifierBytes, 'classifier', (_h, s) => {
      const last = s.length - 2;
      [s[0], s[last]] = [s[last]!, s[0]!];
    });
    expect(messageOf(() => EncryptedClassifier.load(p.he, p.keys, swapped))).toMatch(/level/);
    const missing = forge(p.classifierBytes, 'classifier', (_h, s) => {
      s.pop();
    });
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, missing))).toBe('E_CORRUPT');
    const badLayers = forge<{ layers: unknown }>(p.classifierBytes, 'classifier', (h) => {
      h.layers = 'dense';
    });
    expect(codeOf(() => EncryptedClassifier.load(p.he, p.keys, badLayers))).toBe('E_CORRUPT');
    const result = p.classifier.evaluate(x).result;
    const badResult = forge<{ outputs: unknown }>(result, 'result', (h) => {
      h.outputs = -3;
    });
    expect(codeOf(() => p.decrypt(badResult))).toBe('E_CORRUPT');
    const mutated = result.slice();
    mutated[mutated.length - 10]! ^= 1;
    expect(codeOf(() => p.decrypt(mutated))).toBe('E_CORRUPT');
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    stillWorks();
  });

  it('the owner keys survive a save and load, and objects refuse use after dispose', async () => {
    const restored = OwnerKeys.load(p.he, p.owner.secretKeyBytes(), p.owner.deviceKeyBytes());
    const result = p.classifier.evaluate(x).result;
    expect(Array.from(decryptResult(p.he, restored, result))).toEqual(Array.from(p.decrypt(result)));
    restored.dispose();
    const q = await protect(layers);
    q.dispose();
    expect(codeOf(() => q.classifier.evaluate(x))).toBe('E_DISPOSED');
    expect(codeOf(() => q.owner.secretKeyBytes())).toBe('E_DISPOSED');
    expect(codeOf(() => q.he.parmsIdAt(0))).toBe('E_DISPOSED');
  });
});
