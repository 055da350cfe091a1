import { existsSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DecryptionAgent, type Decryptor } from '../backend/decrypt';
import { DecryptionPool, defaultDecryptWorkers, MAX_DECRYPT_WORKERS } from '../backend/decrypt-pool';
import { Backend, kioskOrigin } from '../backend/server';
import { nodeSeal } from '../node/seal';
import { addDevice, openWorkspace, operatorToken, type Workspace } from '../protect/workspace';
import { storeLocation } from '../store/open';
import { UsageError } from './errors';

export const DEFAULT_DATA_DIR = 'data';

const print = (line: string) => process.stdout.write(`${line}\n`);

async function withWorkspace<T>(dataDir: string, store: string | undefined, work: (ws: Workspace) => Promise<T>): Promise<T> {
  const ws = await openWorkspace(dataDir, process.env, store);
  try {
    return await work(ws);
  } finally {
    await ws.close();
  }
}

export function parsePort(raw: string): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > 65535) throw new UsageError(`--port must be an integer from 0 to 65535, got '${raw}'`);
  return n;
}

/** `--decrypt-workers N`: 0 decrypts on the event loop, N ≥ 1 in N worker threads; absent, defaultDecryptWorkers(). */
export function parseDecryptWorkers(raw: string | undefined): number {
  if (raw === undefined) return defaultDecryptWorkers();
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > MAX_DECRYPT_WORKERS) {
    throw new UsageError(`--decrypt-workers must be an integer from 0 (decrypt on the event loop) to ${MAX_DECRYPT_WORKERS}, got '${raw}'`);
  }
  return n;
}

/**
 * Runs the backend on the workspace until SIGINT or SIGTERM, then closes it, its
 * decryption (on the event loop, or `decryptWorkers` threads that read key pairs from
 * the store at `storeLocation`) and the database. `announce` hears the base URL once it listens.
 */
export async function runBackend(
  ws: Workspace,
  options: {
    port: number;
    host: string;
    staticDir?: string;
    rateLimit?: { burst: number; perSecond: number };
    decryptWorkers: number;
    storeLocation: string;
    kioskOrigins?: readonly string[];
    /** A claim on a pending result older than this is taken again (its instance died); default 60 s. */
    claimTimeoutMs?: number;
  },
  announce: (base: string) => void,
): Promise<void> {
  const decryption: Decryptor =
    options.decryptWorkers === 0
      ? new DecryptionAgent(await nodeSeal(), ws.store, ws.kek)
      : new DecryptionPool({ storeLocation: options.storeLocation, kek: ws.kek, threads: options.decryptWorkers });
  const backend = new Backend({
    store: ws.store,
    decryption,
    operatorToken: operatorToken(ws.dataDir),
    staticDir: options.staticDir,
    rateLimit: options.rateLimit,
    kioskOrigins: options.kioskOrigins,
    claimTimeoutMs: options.claimTimeoutMs,
  });
  announce(`http://${options.host}:${await backend.listen(options.port, options.host)}`);
  await new Promise<void>((done) => {
    process.once('SIGINT', () => done());
    process.once('SIGTERM', () => done());
  });
  await backend.close();
  await decryption.dispose();
}

/**
 * `--claim-timeout SECONDS`: how long a claim on a pending result lasts before another
 * instance takes the result (its instance died mid-decryption); absent, the loop's default
 * (60 s). Far above one decryption; shorter only where instances are restarted quickly.
 */
export function parseClaimTimeout(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const seconds = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw) || seconds < 0.1 || seconds > 86_400) {
    throw new UsageError(`--claim-timeout must be seconds from 0.1 to 86400, got '${raw}'`);
  }
  return Math.round(seconds * 1000);
}

/** `--kiosk-origin URL` (repeatable): the origins of kiosks served from another host, checked before anything starts. */
export function parseKioskOrigins(values: readonly string[] | undefined): string[] {
  return (values ?? []).map((value) => {
    try {
      return kioskOrigin(value);
    } catch (error) {
      throw new UsageError(`--kiosk-origin: ${(error as Error).message}`);
    }
  });
}

/** `sealed-edge serve`: the decryption backend, the operators' API and cockpit, and a static host. */
export async function serveCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      data: { type: 'string', default: DEFAULT_DATA_DIR },
      store: { type: 'string' },
      static: { type: 'string' },
      rate: { type: 'string', default: '10' },
      'decrypt-workers': { type: 'string' },
      'kiosk-origin': { type: 'string', multiple: true },
      'claim-timeout': { type: 'string' },
    },
  });
  const decryptWorkers = parseDecryptWorkers(values['decrypt-workers']);
  const kioskOrigins = parseKioskOrigins(values['kiosk-origin']);
  const perSecond = Number(values.rate);
  if (!(perSecond > 0 && perSecond <= 100_000)) throw new UsageError(`--rate must be requests per second per device, from 0 to 100000, got '${values.rate}'`);
  if (values.static !== undefined && !(existsSync(values.static) && statSync(values.static).isDirectory())) {
    throw new UsageError(`--static must be a directory, got '${values.static}'`);
  }
  const port = parsePort(values.port!);
  const claimTimeoutMs = parseClaimTimeout(values['claim-timeout']);
  const backend = { port, host: values.host!, staticDir: values.static, rateLimit: { burst: Math.max(20, 2 * perSecond), perSecond }, decryptWorkers, kioskOrigins, claimTimeoutMs };
  await withWorkspace(values.data!, values.store, (ws) =>
    runBackend(ws, { ...backend, storeLocation: storeLocation(ws.dataDir, values.store) }, (base) => {
      const decryption = decryptWorkers === 0 ? 'on the event loop' : `${decryptWorkers} worker thread${decryptWorkers === 1 ? '' : 's'}`;
      print(`sealed-edge backend on ${base} (decryption ${decryption})`);
      print(`  cockpit:  ${base}/cockpit  (operator token in ${ws.dataDir}/operator.token)`);
      if (values.static !== undefined) print(`  static:   ${base}/  (from ${values.static})`);
      if (kioskOrigins.length > 0) print(`  device API open to kiosks on ${kioskOrigins.join(', ')}`);
    }),
  );
  return 0;
}

/** `sealed-edge device add NAME | list | revoke ID`. */
export async function deviceCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { data: { type: 'string', default: DEFAULT_DATA_DIR }, store: { type: 'string' }, json: { type: 'boolean', default: false } } });
  const [action, argument, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
  return withWorkspace(values.data!, values.store, async (ws) => {
    switch (action) {
      case 'add': {
        if (argument === undefined || !/^[\w .-]{1,64}$/.test(argument)) {
          throw new UsageError('device add needs a NAME of 1–64 letters, digits, spaces, ".", "_" or "-"');
        }
        const { device, token } = await addDevice(ws, argument);
        if (values.json) print(JSON.stringify({ deviceId: device.id, name: device.name, token }));
        else {
          print(`device ${device.name} (${device.id}) added; its one-time enrollment token:`);
          print(token);
        }
        return 0;
      }
      case 'list': {
        const devices = await ws.store.listDevices();
        if (values.json) print(JSON.stringify(devices));
        else for (const d of devices) print(`${d.id}  ${d.status.padEnd(8)}  ${d.name}`);
        return 0;
      }
      case 'revoke': {
        if (argument === undefined) throw new UsageError('device revoke needs a device id');
        const device = await ws.store.revokeDevice(argument);
        await ws.store.audit('owner', 'device.revoked', { id: device.id });
        print(`device ${device.name} (${device.id}) revoked`);
        return 0;
      }
      default:
        throw new UsageError(`device needs add NAME, list or revoke ID, got '${action ?? ''}'`);
    }
  });
}

/** `sealed-edge model list | retire ID VERSION`. */
export async function modelCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { data: { type: 'string', default: DEFAULT_DATA_DIR }, store: { type: 'string' }, json: { type: 'boolean', default: false } } });
  const [action, id, version, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
  return withWorkspace(values.data!, values.store, async (ws) => {
    switch (action) {
      case 'list': {
        const versions = await ws.store.listModelVersions(id);
        if (values.json) print(JSON.stringify(versions));
        else for (const v of versions) print(`${v.modelId}  v${v.version}  ${v.status.padEnd(7)}  key ${v.keyId}  ${v.createdAt}`);
        return 0;
      }
      case 'retire': {
        if (id === undefined || version === undefined || !/^\d+$/.test(version)) throw new UsageError('model retire needs a model id and a version number');
        const retired = await ws.store.retireModelVersion(id, Number(version));
        await ws.store.audit('owner', 'model.retired', { modelId: id, version: retired.version });
        print(`${retired.modelId} v${retired.version} retired: the backend refuses its results from now on`);
        return 0;
      }
      default:
        throw new UsageError(`model needs list [ID] or retire ID VERSION, got '${action ?? ''}'`);
    }
  });
}
