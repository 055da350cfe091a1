/**
 * Bundle loading in the browser: the pointer (latest.json), manifest.json and
 * manifest.sig, then the files with progress; Ed25519 signature against the owner key
 * pinned at build time (WebCrypto), every file's size and SHA-256 (crypto.subtle.digest),
 * all through src/model/bundle's `loadVerifiedBundle`. Verified bundles are cached in
 * IndexedDB keyed by model, version and manifest hash, and verified again when read back
 * from the cache; older versions of the model are evicted once a newer one verifies, and
 * a version the backend reports retired is evicted (db.ts's evictBundles) and refused (`retired`).
 * A bundle that fails any check is refused with a BundleError and never used.
 */
import { BundleError, bundleFiles, loadVerifiedBundle, parseManifest, type BundleManifest, type VerifiedBundle } from '../model/bundle';
import { fromHex, sha256Hex, toArrayBuffer } from './bytes';
import { type CachedBundle, type KioskDatabase, putBundle, readBundleFile } from './db';

export type Progress = (loadedBytes: number, totalBytes: number, file: string) => void;

export class KioskBundleError extends Error {
  constructor(
    readonly code: 'E_NO_OWNER_KEY' | 'E_NO_ED25519' | 'E_FETCH' | 'E_ROLLBACK' | 'E_RETIRED' | BundleError['code'],
    message: string,
  ) {
    super(message);
    this.name = 'KioskBundleError';
  }
}

export interface LoadedBundle extends VerifiedBundle {
  readonly source: 'network' | 'cache';
  readonly manifestSha256: string;
  readonly loadMs: number;
}

/** An Ed25519 verifier for the pinned owner key, or a refusal that says why there is none. */
export async function ed25519Verifier(ownerKeyHex: string): Promise<(message: Uint8Array, signature: Uint8Array) => Promise<boolean>> {
  let raw: Uint8Array;
  try {
    raw = fromHex(ownerKeyHex);
  } catch {
    raw = new Uint8Array();
  }
  if (raw.length !== 32) {
    throw new KioskBundleError('E_NO_OWNER_KEY', 'this kiosk build has no owner verification key pinned (build it with SEALED_EDGE_OWNER_KEY): every bundle is refused');
  }
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey('raw', raw as BufferSource, { name: 'Ed25519' }, false, ['verify']);
  } catch (error) {
    throw new KioskBundleError(
      'E_NO_ED25519',
      `this browser's WebCrypto cannot verify Ed25519 signatures (${(error as Error).name}); the kiosk refuses to use bundles it cannot verify — update the browser`,
    );
  }
  return async (message, signature) => {
    if (signature.length !== 64) return false;
    return crypto.subtle.verify({ name: 'Ed25519' }, key, signature as BufferSource, message as BufferSource);
  };
}

/** GET with a size limit and progress; refuses a body larger than `expected` bytes. */
async function download(url: URL, expected: number | undefined, onBytes: (n: number) => void, fetcher: typeof fetch): Promise<Uint8Array> {
  let response: Response;
  try {
    response = await fetcher(url, { cache: 'no-cache' });
  } catch (error) {
    throw new KioskBundleError('E_FETCH', `GET ${url.pathname}: ${(error as Error).message}`);
  }
  if (!response.ok) throw new KioskBundleError('E_FETCH', `GET ${url.pathname}: HTTP ${response.status}`);
  if (response.body === null) return new Uint8Array(await response.arrayBuffer());
  const limit = expected ?? 1 << 20;
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel();
      throw new BundleError('E_HASH', `${url.pathname.split('/').pop()} is larger than the ${limit} bytes the manifest declares`);
    }
    chunks.push(value);
    onBytes(value.length);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

const cacheKey = (m: BundleManifest, sha: string) => `${m.modelId}@${m.version}#${sha}`;

async function verifyCached(db: KioskDatabase, entry: CachedBundle, verify: Awaited<ReturnType<typeof ed25519Verifier>>): Promise<VerifiedBundle> {
  const bytes = async (name: string) => {
    const b = name === 'manifest.json' ? new Uint8Array(entry.manifest) : name === 'manifest.sig' ? new Uint8Array(entry.signature) : await readBundleFile(db, entry, name);
    if (b === undefined) throw new BundleError('E_HASH', `the cached bundle has no ${name}`);
    return b;
  };
  return loadVerifiedBundle({ read: bytes }, verify, sha256Hex);
}

async function newestCached(db: KioskDatabase, modelId: string | undefined): Promise<CachedBundle | undefined> {
  const all = modelId === undefined ? await db.getAll('bundles') : await db.getAllFromIndex('bundles', 'modelId', modelId);
  return all.sort((a, b) => b.version - a.version || b.storedAt.localeCompare(a.storedAt))[0];
}

export interface LoadBundleOptions {
  /** `…/<modelId>/latest.json` (the owner's pointer) or a version directory ending in `/`. */
  url: string;
  ownerKeyHex: string;
  db: KioskDatabase;
  onProgress?: Progress;
  fetch?: typeof fetch;
  /** `${modelId}@${version}` of versions the backend said are retired: refused even if offered. */
  retired?: ReadonlySet<string>;
}

function refuseRetired(manifest: BundleManifest, retired: ReadonlySet<string> | undefined): void {
  if (retired?.has(`${manifest.modelId}@${manifest.version}`)) {
    throw new KioskBundleError('E_RETIRED', `the owner retired ${manifest.modelId} v${manifest.version} (the backend refuses its results), and the host offers no newer version`);
  }
}

export async function loadBundle(options: LoadBundleOptions): Promise<LoadedBundle> {
  const started = performance.now();
  const fetcher = options.fetch ?? fetch.bind(globalThis);
  const verify = await ed25519Verifier(options.ownerKeyHex);
  const pointerUrl = new URL(options.url, location.href);
  let modelId: string | undefined;
  let base: URL;
  let manifestBytes: Uint8Array;
  let signature: Uint8Array;
  try {
    if (pointerUrl.pathname.endsWith('.json')) {
      const pointer = JSON.parse(new TextDecoder().decode(await download(pointerUrl, 64 * 1024, () => undefined, fetcher))) as { modelId?: string; path?: string };
      if (typeof pointer.path !== 'string') throw new KioskBundleError('E_FETCH', `${pointerUrl.pathname} has no path`);
      modelId = pointer.modelId;
      base = new URL(pointer.path.endsWith('/') ? pointer.path : `${pointer.path}/`, pointerUrl);
    } else {
      base = new URL(pointerUrl.pathname.endsWith('/') ? pointerUrl.href : `${pointerUrl.href}/`);
    }
    manifestBytes = await download(new URL('manifest.json', base), 1 << 20, () => undefined, fetcher);
    signature = await download(new URL('manifest.sig', base), 1024, () => undefined, fetcher);
  } catch (error) {
    if (!(error instanceof KioskBundleError) || error.code !== 'E_FETCH') throw error;
    // Offline (or the static host is down): the newest verified bundle in the cache, checked again.
    const cached = await newestCached(options.db, modelId);
    if (cached === undefined) throw new KioskBundleError('E_FETCH', `${error.message}, and no verified bundle is cached`);
    const bundle = await verifyCached(options.db, cached, verify);
    refuseRetired(bundle.manifest, options.retired);
    return { ...bundle, source: 'cache', manifestSha256: cached.manifestSha256, loadMs: performance.now() - started };
  }
  const manifestSha256 = await sha256Hex(manifestBytes);
  let total = 0;
  let loaded = 0;
  const bundle = await loadVerifiedBundle(
    {
      read: async (name) => {
        if (name === 'manifest.json') return manifestBytes;
        if (name === 'manifest.sig') return signature;
        // Reached only once the signature has verified: the manifest is the owner's.
        const manifest = parseManifest(manifestBytes);
        const cached = await options.db.get('bundles', cacheKey(manifest, manifestSha256));
        const fromCache = cached === undefined ? undefined : await readBundleFile(options.db, cached, name);
        if (fromCache !== undefined) return fromCache;
        if (total === 0) total = bundleFiles(manifest.files).reduce((n, f) => n + manifest.files[f]!.size, 0);
        const bytes = await download(new URL(name, base), bundleFiles(manifest.files).includes(name as never) ? manifest.files[name as 'weights.bin'].size : 0, (n) => {
          loaded += n;
          options.onProgress?.(loaded, total, name);
        }, fetcher);
        return bytes;
      },
    },
    verify,
    sha256Hex,
  );
  const { manifest } = bundle;
  refuseRetired(manifest, options.retired);
  const newest = await newestCached(options.db, manifest.modelId);
  if (newest !== undefined && newest.version > manifest.version) {
    throw new KioskBundleError('E_ROLLBACK', `the host offers ${manifest.modelId} v${manifest.version}, but this kiosk already verified v${newest.version}: refusing a rollback`);
  }
  const key = cacheKey(manifest, manifestSha256);
  const source = (await options.db.getKey('bundles', key)) === undefined ? 'network' : 'cache';
  if (source === 'network') {
    // Older versions of this model are retired by the new one: putBundle evicts them.
    await putBundle(
      options.db,
      { key, modelId: manifest.modelId, version: manifest.version, manifestSha256, manifest: toArrayBuffer(manifestBytes), signature: toArrayBuffer(signature), storedAt: new Date().toISOString() },
      Object.fromEntries(bundleFiles(manifest.files).map((f) => [f, bundle.files[f]!])),
    );
  }
  return { ...bundle, source, manifestSha256, loadMs: performance.now() - started };
}
