import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  type BundleFiles,
  bundleFiles,
  type BundleManifest,
  loadVerifiedBundle,
  parseManifest,
  type VerifiedBundle,
} from '../model/bundle';
import { signBytes, verifyBytes } from './signing';

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Writes a static bundle to `dir` (replacing one already there): the files, manifest.json
 * with every file's size and SHA-256, and manifest.sig, the owner's Ed25519 signature of
 * the manifest's exact bytes. Written to a sibling directory first and renamed into
 * place, so a static host never serves half a bundle. The manifest is parsed as devices
 * parse it before anything is signed: a manifest they would refuse is never published.
 */
export function writeBundle(
  dir: string,
  manifest: Omit<BundleManifest, 'files'>,
  files: BundleFiles<Uint8Array>,
  signingKey: Uint8Array,
): { manifest: BundleManifest; manifestBytes: Uint8Array; totalBytes: number } {
  const names = bundleFiles(files);
  const full: BundleManifest = {
    ...manifest,
    files: Object.fromEntries(names.map((name) => [name, { size: files[name]!.length, sha256: sha256Hex(files[name]!) }])) as BundleManifest['files'],
  };
  const manifestBytes = new TextEncoder().encode(`${JSON.stringify(full, null, 2)}\n`);
  const parsed = parseManifest(manifestBytes);
  const signature = signBytes(signingKey, manifestBytes);
  const staging = `${dir}.staging-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  for (const name of names) writeFileSync(join(staging, name), files[name]!);
  writeFileSync(join(staging, 'manifest.json'), manifestBytes);
  writeFileSync(join(staging, 'manifest.sig'), signature);
  mkdirSync(dirname(dir), { recursive: true });
  rmSync(dir, { recursive: true, force: true });
  renameSync(staging, dir);
  const totalBytes = names.reduce((n, name) => n + files[name]!.length, manifestBytes.length + signature.length);
  return { manifest: parsed, manifestBytes, totalBytes };
}

/** Loads a bundle from a directory exactly as a device does: signature first, then hashes. */
export function loadBundleDir(dir: string, ownerPublicKey: Uint8Array): Promise<VerifiedBundle> {
  return loadVerifiedBundle(
    { read: async (name) => new Uint8Array(readFileSync(join(dir, name))) },
    async (message, signature) => verifyBytes(ownerPublicKey, message, signature),
    async (bytes) => sha256Hex(bytes),
  );
}
