import { cpSync, existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { addDevice, openWorkspace, operatorToken, SIGNING_PUBLIC_FILE } from '../protect/workspace';
import { DEFAULT_DATA_DIR, parsePort, runBackend } from './owner';
import { DEFAULT_BUNDLE_ROOT, protectCommand } from './protect';

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
      id: { type: 'string', default: 'mnist' },
    },
  });
  const port = parsePort(values.port!);
  const data = values.data!;
  const id = values.id!;
  if (!existsSync(join(values.out!, id, 'latest.json'))) {
    print(`protecting ${values.model} as ${id} (first start)…`);
    const code = await protectCommand([values.model!, '--id', id, '--data', data, '--out', values.out!]);
    if (code !== 0) return code;
  }
  print('building the kiosk…');
  const ownerKey = readFileSync(join(data, SIGNING_PUBLIC_FILE), 'utf8').trim();
  process.env.SEALED_EDGE_OWNER_KEY = ownerKey;
  const { build } = await import('vite');
  const dist = resolve(values.dist!);
  await build({ logLevel: 'warn', publicDir: false, build: { outDir: dist, emptyOutDir: true } });
  cpSync(join(values.out!, id), join(dist, 'models', id), { recursive: true });

  const ws = await openWorkspace(data);
  try {
    const { device, token } = await addDevice(ws, `demo-kiosk-${new Date().toISOString().slice(0, 19)}`);
    await runBackend(ws, { port, host: values.host!, staticDir: dist }, (base) => {
      print('');
      print(`kiosk:    ${base}/`);
      print(`          set-up: enroll with the one-time token ${token} (device ${device.id})`);
      print(`          then "Start demo" classifies MNIST test digits under encryption`);
      print(`cockpit:  ${base}/cockpit   operator token: ${operatorToken(ws.dataDir)}`);
      print(`bundle:   ${base}/models/${id}/latest.json (signed by ${ownerKey.slice(0, 16)}…)`);
      print('Ctrl-C stops the backend.');
    });
  } finally {
    await ws.close();
  }
  return 0;
}
