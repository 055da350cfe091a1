import { cpSync, existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultDecryptWorkers } from '../backend/decrypt-pool';
import { type BundleManifest, parseManifest } from '../model/bundle';
import { latestPointer } from '../protect/protect';
import { addDevice, openWorkspace, operatorToken, SIGNING_PUBLIC_FILE } from '../protect/workspace';
import { storeLocation } from '../store/open';
import { UsageError } from './errors';
import { DEFAULT_DATA_DIR, parseKioskOrigins, parsePort, runBackend } from './owner';
import { describeInputSpec } from '../model/input-spec';
import { type DemoSource, readDemoSource, writeDemoStream } from './demo-stream';
import { DEFAULT_BUNDLE_ROOT, INPUT_SPEC_OPTIONS, inputSpecArgv, inputSpecOf, protectCommand } from './protect';

const print = (line: string) => process.stdout.write(`${line}\n`);

/**
 * `sealed-edge start` (npm start): the whole system on one machine. Protects the committed
 * model if it has no bundle yet, builds the kiosk with the owner's key pinned, provisions
 * a demo device, and serves the kiosk, the bundle and the cockpit from the backend.
 */
export async function startCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      port: { type: 'string', default: '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      data: { type: 'string', default: DEFAULT_DATA_DIR },
      out: { type: 'string', default: DEFAULT_BUNDLE_ROOT },
      dist: { type: 'string', default: 'dist' },
      model: { type: 'string', default: 'models/paper-cnn-x2+2x.onnx' },
      id: { type: 'string' },
      scheme: { type: 'string', default: 'ckks' },
      'kiosk-origin': { type: 'string', multiple: true },
      calibration: { type: 'string' },
      demo: { type: 'string' },
      ...INPUT_SPEC_OPTIONS,
    },
  });
  const port = parsePort(values.port!);
  const kioskOrigins = parseKioskOrigins(values['kiosk-origin']);
  const data = values.data!;
  const scheme = values.scheme!;
  if (scheme !== 'ckks' && scheme !== 'bgv') throw new UsageError(`--scheme must be ckks or bgv, got '${scheme}'`);
  const id = values.id ?? (scheme === 'ckks' ? 'mnist' : 'mnist-bgv');
  // The demo stream is checked (every image decoded) before anything is protected or built.
  let demo: DemoSource | undefined;
  if (values.demo !== undefined) {
    if (!existsSync(values.demo)) throw new UsageError(`--demo ${values.demo}: no such file or folder`);
    demo = readDemoSource(values.demo);
  }
  const specArgs = inputSpecArgv(values);
  const published = publishedBundle(values.out!, id);
  if (published === undefined) {
    print(`protecting ${values.model} as ${id} with ${scheme.toUpperCase()} (first start)…`);
    const calibration = values.calibration === undefined ? [] : ['--calibration', values.calibration];
    const code = await protectCommand([values.model!, '--id', id, '--scheme', scheme, '--data', data, '--out', values.out!, ...specArgs, ...calibration]);
    if (code !== 0) return code;
  } else if (published.scheme !== scheme) {
    throw new UsageError(`model ${id} is already published with ${published.scheme.toUpperCase()}, not ${scheme.toUpperCase()}: give another --id, or protect a new version with sealed-edge protect`);
  } else if (specArgs.length > 0) {
    // The flags must say what the published bundle says: the kiosk applies the manifest's spec.
    const asked = inputSpecOf(published.manifest.extractor.input.shape, values);
    const recorded = published.manifest.extractor.preprocessing;
    if (JSON.stringify(asked) !== JSON.stringify(recorded)) {
      throw new UsageError(
        `model ${id} is already published with the input spec ${describeInputSpec(recorded)}, not ${describeInputSpec(asked)}: ` +
          'give another --id, or protect a new version with sealed-edge protect',
      );
    }
  }
  print('building the kiosk…');
  const ownerKey = readFileSync(join(data, SIGNING_PUBLIC_FILE), 'utf8').trim();
  process.env.SEALED_EDGE_OWNER_KEY = ownerKey;
  const { build } = await import('vite');
  const dist = resolve(values.dist!);
  await build({ logLevel: 'warn', publicDir: false, build: { outDir: dist, emptyOutDir: true } });
  cpSync(join(values.out!, id), join(dist, 'models', id), { recursive: true });
  if (demo !== undefined) writeDemoStream(dist, demo);

  const ws = await openWorkspace(data);
  try {
    const { device, token } = await addDevice(ws, `demo-kiosk-${new Date().toISOString().slice(0, 19)}`);
    await runBackend(ws, { port, host: values.host!, staticDir: dist, decryptWorkers: defaultDecryptWorkers(), storeLocation: storeLocation(data, undefined), kioskOrigins }, (base) => {
      print('');
      // The kiosk opens models/mnist/latest.json unless told otherwise.
      print(`kiosk:    ${base}/${id === 'mnist' ? '' : `?bundle=models/${id}/latest.json`}`);
      print(`          set-up: enroll with the one-time token ${token} (device ${device.id})`);
      print(`          then "Start demo" classifies ${demo === undefined ? 'MNIST test digits' : demo.description} under encryption`);
      print(`cockpit:  ${base}/cockpit   operator token: ${operatorToken(ws.dataDir)}`);
      print(`bundle:   ${base}/models/${id}/latest.json (signed by ${ownerKey.slice(0, 16)}…)`);
      print('Ctrl-C stops the backend.');
    });
  } finally {
    await ws.close();
  }
  return 0;
}

/** The scheme and manifest of the model's published version, read from its pointer; undefined if none is published. */
function publishedBundle(outDir: string, id: string): { scheme: 'ckks' | 'bgv'; manifest: BundleManifest } | undefined {
  const pointer = latestPointer(outDir, id);
  if (!existsSync(pointer)) return undefined;
  try {
    const { path } = JSON.parse(readFileSync(pointer, 'utf8')) as { path: string };
    const manifest = parseManifest(readFileSync(join(outDir, id, path, 'manifest.json')));
    return { scheme: manifest.he.scheme, manifest };
  } catch (error) {
    throw new Error(`cannot read the published bundle of ${id} (${pointer}): ${(error as Error).message}`);
  }
}
