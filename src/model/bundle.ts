import { type BgvParameters, checkBgvParameters, checkParameters, type HeParameters, type LayerShape, type Mode } from '../he';
import { type InputSpec, parsePreprocessing, specMatchesShape, specShape } from './input-spec';

/**
 * The static bundle's manifest (DESIGN.md 3), shared by the owner's side, which writes and
 * signs it, and by every device, which refuses a bundle whose signature or file hashes do
 * not match. Platform-free: hashing and signature checks are passed in.
 */
export const BUNDLE_FORMAT = 'sealed-edge-bundle/1';

export const BUNDLE_FILES = ['extractor.onnx', 'weights.bin', 'keys.bin'] as const;
export type BundleFile = (typeof BUNDLE_FILES)[number];
/**
 * A bundle encrypted from its very first layer (`--split input`) has no extractor: the
 * device only preprocesses and encrypts the image, and `extractor.output` is its input.
 */
export type OptionalBundleFile = 'extractor.onnx';
/** Per-file contents (or their size and hash): the extractor may be absent, the rest never. */
export type BundleFiles<T> = Readonly<Record<Exclude<BundleFile, OptionalBundleFile>, T>> & Readonly<Partial<Record<OptionalBundleFile, T>>>;

/** The files present (in a manifest's list, or a bundle's contents), in BUNDLE_FILES order. */
export function bundleFiles(files: Readonly<Partial<Record<BundleFile, unknown>>>): BundleFile[] {
  return BUNDLE_FILES.filter((name) => files[name] !== undefined);
}

/**
 * How the device turns a picture into the model's input tensor: the input spec
 * (src/model/input-spec.ts). Manifests written before it ({ width, height, mean, std })
 * are read as MNIST's contract with that mean and std.
 */
export type Preprocessing = InputSpec;

/** What both schemes' manifests record about the encrypted head. */
interface BundleHeCommon {
  readonly mode: Mode;
  /** The head's public part: dense shapes and activation coefficients, no weights. */
  readonly layers: readonly LayerShape[];
  /** Rotation steps the device performs: keys.bin holds Galois keys for exactly these. */
  readonly rotationSteps: readonly number[];
  /** Rescalings (CKKS) or modulus switches (BGV) of one evaluation. */
  readonly depth: number;
}

/**
 * The encrypted head, by scheme. `scheme` is the discriminant (it always equals
 * `params.scheme`); a manifest written before BGV existed has no `scheme` and is CKKS.
 * BGV encrypts the weights always (`mode.weights` is 'encrypted'); its CRT components are
 * `params.plainModulusBits.length` and its fixed-point encoding is in weights.bin's header.
 */
export type BundleHe =
  | (BundleHeCommon & { readonly scheme: 'ckks'; readonly params: HeParameters })
  | (BundleHeCommon & { readonly scheme: 'bgv'; readonly params: BgvParameters });

export interface BundleManifest {
  readonly format: typeof BUNDLE_FORMAT;
  readonly modelId: string;
  readonly version: number;
  readonly keyId: string;
  readonly createdAt: string;
  readonly he: BundleHe;
  readonly extractor: {
    readonly input: { readonly name: string; readonly shape: readonly number[] };
    readonly output: { readonly name: string; readonly shape: readonly number[] };
    readonly preprocessing: Preprocessing;
  };
  readonly classes: number;
  readonly files: BundleFiles<{ readonly size: number; readonly sha256: string }>;
}

export class BundleError extends Error {
  readonly code: 'E_MANIFEST' | 'E_SIGNATURE' | 'E_HASH';
  constructor(code: 'E_MANIFEST' | 'E_SIGNATURE' | 'E_HASH', message: string) {
    super(message);
    this.name = 'BundleError';
    this.code = code;
  }
}

const MODEL_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function isModelId(value: unknown): value is string {
  return typeof value === 'string' && MODEL_ID.test(value);
}

function bad(message: string): never {
  throw new BundleError('E_MANIFEST', `invalid manifest: ${message}`);
}

const positiveInts = (v: unknown): v is number[] => Array.isArray(v) && v.every((n) => Number.isInteger(n) && n > 0);

/** Parses and checks a manifest's bytes (after its signature has been verified). */
export function parseManifest(bytes: Uint8Array): BundleManifest {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as Record<string, unknown>;
  } catch {
    bad('not UTF-8 JSON');
  }
  if (m === null || typeof m !== 'object') bad('not an object');
  if (m.format !== BUNDLE_FORMAT) bad(`format ${JSON.stringify(m.format)}, expected ${BUNDLE_FORMAT}`);
  if (!isModelId(m.modelId)) bad('modelId must be 1–64 characters of a–z, 0–9, ".", "_", "-"');
  if (!Number.isInteger(m.version) || (m.version as number) < 1) bad('version must be a positive integer');
  if (typeof m.keyId !== 'string' || !/^[0-9a-f]{32}$/.test(m.keyId)) bad('keyId must be 32 hex digits');
  if (typeof m.createdAt !== 'string' || Number.isNaN(Date.parse(m.createdAt))) bad('createdAt must be an ISO date');
  const he = parseHe(m.he);
  const ex = m.extractor as BundleManifest['extractor'] | undefined;
  if (ex === undefined || ex === null || typeof ex !== 'object') bad('missing extractor');
  for (const side of ['input', 'output'] as const) {
    const t = ex[side];
    if (typeof t?.name !== 'string' || t.name === '' || !positiveInts(t.shape)) bad(`extractor.${side} needs a name and a shape`);
  }
  let preprocessing: Preprocessing;
  try {
    preprocessing = parsePreprocessing(ex.preprocessing);
  } catch (error) {
    bad(`extractor.preprocessing: ${(error as Error).message}`);
  }
  if (!specMatchesShape(preprocessing, ex.input.shape)) {
    bad(`extractor.preprocessing makes a tensor of [${specShape(preprocessing).join(', ')}], extractor.input is [${ex.input.shape.join(', ')}]`);
  }
  if (!Number.isInteger(m.classes) || (m.classes as number) < 2) bad('classes must be an integer ≥ 2');
  const files = m.files as BundleManifest['files'] | undefined;
  if (files === undefined || files === null || typeof files !== 'object') bad('missing files');
  const sameTensor = JSON.stringify(ex.input) === JSON.stringify(ex.output);
  if (files['extractor.onnx'] === undefined && !sameTensor) bad('a bundle without extractor.onnx must have extractor.output equal to extractor.input');
  for (const name of BUNDLE_FILES) {
    const f = files[name];
    if (f === undefined && name === 'extractor.onnx') continue;
    if (f === undefined || !Number.isSafeInteger(f.size) || f.size < 0 || typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256)) {
      bad(`files["${name}"] needs a size and a SHA-256`);
    }
  }
  const extra = Object.keys(files).filter((k) => !(BUNDLE_FILES as readonly string[]).includes(k));
  if (extra.length > 0) bad(`unexpected files ${extra.join(', ')}`);
  return { ...(m as unknown as BundleManifest), he, extractor: { ...ex, preprocessing } };
}

/** The `he` section: the scheme's parameters checked as the engine checks them, the plan's public part. */
function parseHe(value: unknown): BundleHe {
  const he = value as Record<string, unknown> | null | undefined;
  if (he === undefined || he === null || typeof he !== 'object') bad('missing he');
  const scheme = he.scheme ?? (he.params as { scheme?: unknown } | null | undefined)?.scheme;
  if (scheme !== 'ckks' && scheme !== 'bgv') bad(`he.scheme must be "ckks" or "bgv", got ${JSON.stringify(scheme)}`);
  let params: HeParameters | BgvParameters;
  try {
    params = scheme === 'bgv' ? checkBgvParameters(he.params) : checkParameters(he.params);
  } catch (error) {
    bad(`he.params: ${(error as Error).message}`);
  }
  const mode = he.mode as Partial<Mode> | null | undefined;
  const sides = ['encrypted', 'plain'];
  if (mode === null || typeof mode !== 'object' || !sides.includes(mode.weights as string) || !sides.includes(mode.input as string)) {
    bad('he.mode must be { weights, input }, each "encrypted" or "plain"');
  }
  if (scheme === 'bgv' && mode.weights !== 'encrypted') bad('he.mode: BGV has no plaintext-weights mode, its weights are always encrypted');
  if (!Array.isArray(he.layers) || he.layers.length === 0) bad('he.layers must be a non-empty list');
  const slots = params.polyModulusDegree / 2;
  // Step 0 is the complex conjugation (CKKS complex packing).
  if (!Array.isArray(he.rotationSteps) || !he.rotationSteps.every((s) => Number.isInteger(s) && s >= (scheme === 'ckks' ? 0 : 1) && s < slots)) {
    bad(`he.rotationSteps must be integers from ${scheme === 'ckks' ? '0 (the conjugation)' : 1} to ${slots - 1}`);
  }
  if (!Number.isInteger(he.depth) || (he.depth as number) < 1) bad('he.depth must be a positive integer');
  if (scheme === 'bgv' && he.depth !== (params as BgvParameters).switchPrimes.length) {
    bad(`he.depth is ${String(he.depth)}, the BGV parameters switch modulus ${(params as BgvParameters).switchPrimes.length} times`);
  }
  const common = { mode: { weights: mode.weights!, input: mode.input! }, layers: he.layers as LayerShape[], rotationSteps: he.rotationSteps as number[], depth: he.depth as number };
  return scheme === 'bgv' ? { ...common, scheme, params: params as BgvParameters } : { ...common, scheme, params: params as HeParameters };
}

export interface BundleSource {
  /** The bytes of manifest.json, manifest.sig or one of BUNDLE_FILES. */
  read(name: string): Promise<Uint8Array>;
}

export interface VerifiedBundle {
  readonly manifest: BundleManifest;
  readonly manifestBytes: Uint8Array;
  readonly files: BundleFiles<Uint8Array>;
}

/**
 * Loads a bundle and refuses it unless manifest.sig is a valid signature of
 * manifest.json by the pinned key and every file has the manifest's size and SHA-256.
 * A swapped keys.bin would make the device encrypt for someone else.
 */
export async function loadVerifiedBundle(
  source: BundleSource,
  checkSignature: (message: Uint8Array, signature: Uint8Array) => Promise<boolean>,
  sha256Hex: (bytes: Uint8Array) => Promise<string>,
): Promise<VerifiedBundle> {
  const manifestBytes = await source.read('manifest.json');
  const signature = await source.read('manifest.sig');
  if (!(await checkSignature(manifestBytes, signature))) {
    throw new BundleError('E_SIGNATURE', 'manifest.sig is not a valid signature of manifest.json by the pinned owner key');
  }
  const manifest = parseManifest(manifestBytes);
  const files: Partial<Record<BundleFile, Uint8Array>> = {};
  for (const name of bundleFiles(manifest.files)) {
    const bytes = await source.read(name);
    const expected = manifest.files[name]!;
    if (bytes.length !== expected.size) {
      throw new BundleError('E_HASH', `${name} has ${bytes.length} bytes, the manifest says ${expected.size}`);
    }
    if ((await sha256Hex(bytes)) !== expected.sha256) throw new BundleError('E_HASH', `${name} does not match its SHA-256 in the manifest`);
    files[name] = bytes;
  }
  return { manifest, manifestBytes, files: files as BundleFiles<Uint8Array> };
}
