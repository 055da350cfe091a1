import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { checkBackendUrl, SettingsError } from '../edge/settings';
import { isBasePath, type SiteDefaults } from '../edge/site';
import { isModelId } from '../model/bundle';
import { loadBundleDir } from '../protect/bundle';
import { latestPointer } from '../protect/protect';
import { SIGNING_PUBLIC_FILE } from '../protect/workspace';
import { UsageError } from './errors';
import { DEFAULT_DATA_DIR } from './owner';
import { DEFAULT_BUNDLE_ROOT } from './protect';

/** The package's root: its vite.config.ts and index.html build the kiosk, whatever the working directory. */
const PACKAGE_ROOT = fileURLToPath(new URL('../..', import.meta.url));

const print = (line: string) => process.stdout.write(`${line}\n`);

/** A bundle that cannot be deployed (missing, unreadable, or not signed by the owner's key), or a failed build: exit code 1. */
export class DeployError extends Error {
  constructor(
    readonly code: 'E_BUNDLE' | 'E_OWNER_KEY' | 'E_BUILD',
    message: string,
  ) {
    super(message);
    this.name = 'DeployError';
  }
}

/** True when `inner` is `outer` or lies under it. */
const within = (inner: string, outer: string) => inner === outer || inner.startsWith(outer.endsWith(sep) ? outer : outer + sep);

/** The ids of the models published under `modelsDir` (those with a latest.json). */
function publishedIds(modelsDir: string): string[] {
  if (!existsSync(modelsDir)) return [];
  return readdirSync(modelsDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(latestPointer(modelsDir, entry.name)))
    .map((entry) => entry.name)
    .sort();
}

/**
 * Checks the model's published bundle as a kiosk will: its pointer, and the version it
 * names verified against the owner's key (signature, then every file's hash). Returns the version.
 */
async function checkBundle(modelsDir: string, id: string, ownerKeyHex: string): Promise<number> {
  const pointerPath = latestPointer(modelsDir, id);
  if (!existsSync(pointerPath)) throw new DeployError('E_BUNDLE', `model ${id} has no published bundle: ${pointerPath} is missing (sealed-edge protect writes it)`);
  let pointer: { modelId?: unknown; version?: unknown; path?: unknown };
  try {
    pointer = JSON.parse(readFileSync(pointerPath, 'utf8')) as typeof pointer;
  } catch (error) {
    throw new DeployError('E_BUNDLE', `cannot read ${pointerPath}: ${(error as Error).message}`);
  }
  if (typeof pointer.path !== 'string' || !/^v\d+\/$/.test(pointer.path)) throw new DeployError('E_BUNDLE', `${pointerPath} names no version directory (path "vN/")`);
  const versionDir = join(modelsDir, id, pointer.path);
  let manifest;
  try {
    ({ manifest } = await loadBundleDir(versionDir, Buffer.from(ownerKeyHex, 'hex')));
  } catch (error) {
    const reason = (error as { code?: string }).code === 'E_SIGNATURE' ? `${(error as Error).message} (was it protected with another --data?)` : (error as Error).message;
    throw new DeployError('E_BUNDLE', `the bundle ${versionDir} cannot be deployed: ${reason}`);
  }
  if (manifest.modelId !== id || `v${manifest.version}/` !== pointer.path) {
    throw new DeployError('E_BUNDLE', `${pointerPath} points at ${manifest.modelId} v${manifest.version}, not at a version of ${id}`);
  }
  return manifest.version;
}

/** `--out`: refused if it is a file, or a directory that holds anything (unless --force), or if it holds what deploy reads. */
function checkOut(out: string, force: boolean, reads: string[]): void {
  for (const path of reads) {
    if (within(path, out)) throw new UsageError(`--out ${out} contains ${path}, which deploy reads (and --force would delete): choose another directory`);
  }
  if (!existsSync(out)) return;
  if (!statSync(out).isDirectory()) throw new UsageError(`--out ${out} exists and is not a directory`);
  if (readdirSync(out).length > 0 && !force) throw new UsageError(`--out ${out} exists and is not empty: give a new or empty directory, or --force to replace it`);
}

/** Puts the finished `staging` directory at `out`, replacing an empty or (--force) old one. */
function moveIntoPlace(staging: string, out: string): void {
  if (!existsSync(out)) {
    renameSync(staging, out);
    return;
  }
  const old = `${staging}.old`;
  renameSync(out, old);
  try {
    renameSync(staging, out);
  } catch (error) {
    renameSync(old, out);
    throw error;
  }
  rmSync(old, { recursive: true, force: true });
}

/**
 * `sealed-edge deploy MODEL_ID --out DIR`: one folder any static host serves as is — the
 * kiosk built with the owner's verification key pinned (app at the folder's root; a
 * relative base unless --base pins one) and the model's signed bundles under
 * models/<id>/, as `npm start` serves them. The kiosk opens that model and calls the
 * backend at --backend (default: its own origin). Built in a sibling temp directory and
 * renamed into place: a refusal or a failed build leaves nothing behind.
 */
export async function deployCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      models: { type: 'string', default: DEFAULT_BUNDLE_ROOT },
      data: { type: 'string', default: DEFAULT_DATA_DIR },
      base: { type: 'string', default: './' },
      backend: { type: 'string' },
      force: { type: 'boolean', default: false },
    },
  });
  const [id, ...extra] = positionals;
  if (id === undefined) throw new UsageError('deploy needs a MODEL_ID (sealed-edge model list shows them)');
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
  if (!isModelId(id)) throw new UsageError(`'${id}' is not a model id (1–64 of a–z, 0–9, '.', '_', '-')`);
  if (values.out === undefined || values.out === '') throw new UsageError('deploy needs --out DIR, the folder to write');
  const base = values.base!;
  if (!isBasePath(base)) throw new UsageError(`--base must be ./ or an absolute path that starts and ends with '/', such as /kiosk/; got '${base}'`);
  let backendUrl: string | undefined;
  if (values.backend !== undefined) {
    try {
      backendUrl = checkBackendUrl(values.backend);
    } catch (error) {
      if (error instanceof SettingsError) throw new UsageError(`--backend: ${error.message}`);
      throw error;
    }
  }
  const modelsDir = resolve(values.models!);
  const modelDir = join(modelsDir, id);
  const dataDir = resolve(values.data!);
  const out = resolve(values.out);
  if (!existsSync(modelDir)) {
    const known = publishedIds(modelsDir);
    throw new UsageError(`unknown model '${id}': ${modelsDir} ${known.length > 0 ? `holds ${known.join(', ')}` : 'holds no published model'} (sealed-edge protect publishes one; --models names another directory)`);
  }
  checkOut(out, values.force!, [process.cwd(), modelDir, dataDir, PACKAGE_ROOT]);
  const keyFile = join(dataDir, SIGNING_PUBLIC_FILE);
  if (!existsSync(keyFile)) throw new DeployError('E_OWNER_KEY', `no owner verification key in ${keyFile}: give the --data directory that protected ${id}`);
  const ownerKeyHex = readFileSync(keyFile, 'utf8').trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(ownerKeyHex)) throw new DeployError('E_OWNER_KEY', `${keyFile} does not hold a raw Ed25519 public key (64 hex digits)`);
  const version = await checkBundle(modelsDir, id, ownerKeyHex);

  // Everything is written next to --out (same file system, so the final rename is atomic).
  const createdParent = mkdirSync(dirname(out), { recursive: true });
  // mkdirSync, not mkdtempSync: the folder gets the umask's permissions (a static host's user must read it).
  const staging = join(dirname(out), `.${basename(out)}.deploy-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    mkdirSync(staging);
    const site: SiteDefaults = { bundleUrl: `models/${id}/latest.json`, ...(backendUrl === undefined ? {} : { backendUrl }) };
    const { build } = await import('vite');
    await build({
      configFile: join(PACKAGE_ROOT, 'vite.config.ts'),
      root: PACKAGE_ROOT,
      base,
      logLevel: 'warn',
      publicDir: false,
      define: { __SEALED_EDGE_OWNER_KEY__: JSON.stringify(ownerKeyHex), __SEALED_EDGE_SITE__: JSON.stringify(site) },
      build: { outDir: staging, emptyOutDir: true },
    });
    cpSync(modelDir, join(staging, 'models', id), { recursive: true });
    moveIntoPlace(staging, out);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    if (createdParent !== undefined) rmSync(createdParent, { recursive: true, force: true });
    throw new DeployError('E_BUILD', `nothing was written to ${values.out}: ${(error as Error).message}`);
  }
  print(`deployed the kiosk and ${id} v${version} (signed by ${ownerKeyHex.slice(0, 16)}…) to ${values.out}`);
  print(`  base:    ${base === './' ? './ (relative: serve the folder at any path)' : `${base} (serve the folder at exactly this path)`}`);
  print(`  backend: ${backendUrl ?? 'the kiosk’s own origin (the host that serves this folder must route /api/v1/ to the backend)'}`);
  if (backendUrl !== undefined) print(`  the backend must allow this site’s origin: sealed-edge serve --kiosk-origin https://YOUR-STATIC-HOST`);
  return 0;
}
