/**
 * Shared set-up for the kiosk's browser tests. NEEDS: Debian's chromium at
 * /usr/bin/chromium (`apt-get install -y chromium`; never a downloaded browser) and
 * playwright-core. Builds the kiosk with Vite's JS API into a temp directory, protects
 * models/paper-cnn-x2+2x.onnx into `<site>/models/mnist/`, and starts the real backend
 * serving both.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { build } from 'vite';
import { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend } from '../../src/backend/server';
import { protectCommand } from '../../src/cli/protect';
import { nodeSeal } from '../../src/node/seal';
import { openWorkspace, operatorToken, type Workspace } from '../../src/protect/workspace';

export const CHROMIUM = '/usr/bin/chromium';
export const MODEL = 'models/paper-cnn-x2+2x.onnx';
export const hasChromium = existsSync(CHROMIUM);
const KEK = '01'.repeat(32);

export interface Site {
  root: string;
  site: string;
  ws: Workspace;
  ownerKeyHex: string;
  url: string;
  port: number;
  backend: Backend;
  decryption: DecryptionAgent;
  /** Stops the backend (the static host too); `restart` brings it back on the same port. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

async function quietly<T>(run: () => Promise<T>): Promise<T> {
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = () => true;
  try {
    return await run();
  } finally {
    process.stdout.write = write;
  }
}

export async function buildSite(): Promise<Site> {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-kiosk-'));
  const data = join(root, 'data');
  const models = join(root, 'models');
  const previous = process.env.SEALED_EDGE_KEK;
  process.env.SEALED_EDGE_KEK = KEK;
  try {
    const code = await quietly(() => protectCommand([MODEL, '--id', 'mnist', '--data', data, '--out', models, '--json']));
    if (code !== 0) throw new Error(`protect exited with ${code}`);
  } finally {
    if (previous === undefined) delete process.env.SEALED_EDGE_KEK;
    else process.env.SEALED_EDGE_KEK = previous;
  }
  const ownerKeyHex = readFileSync(join(data, 'owner-signing.pub'), 'utf8').trim();
  const site = join(root, 'site');
  await build({
    configFile: resolve('vite.config.ts'),
    root: resolve('.'),
    logLevel: 'warn',
    define: { __SEALED_EDGE_OWNER_KEY__: JSON.stringify(ownerKeyHex) },
    build: { outDir: site, emptyOutDir: true },
  });
  rmSync(join(site, 'models'), { recursive: true, force: true });
  mkdirSync(join(site, 'models'), { recursive: true });
  cpSync(models, join(site, 'models'), { recursive: true });
  const ws = await openWorkspace(data, { SEALED_EDGE_KEK: KEK });
  const decryption = new DecryptionAgent(await nodeSeal(), ws.store, ws.kek);
  const make = () => new Backend({ store: ws.store, decryption, operatorToken: operatorToken(data, {}), staticDir: site, rateLimit: { burst: 100, perSecond: 50 } });
  const s: Site = {
    root,
    site,
    ws,
    ownerKeyHex,
    decryption,
    backend: make(),
    port: 0,
    url: '',
    async stop() {
      await s.backend.close();
    },
    async restart() {
      s.backend = make();
      await s.backend.listen(s.port);
    },
    async close() {
      await s.backend.close().catch(() => undefined);
      await decryption.dispose();
      await ws.close();
    },
  };
  s.port = await s.backend.listen(0);
  s.url = `http://127.0.0.1:${s.port}`;
  return s;
}

/** Headless Debian chromium with a fresh profile (never a downloaded browser). */
export async function launch(root: string, extraArgs: string[] = []): Promise<BrowserContext> {
  return chromium.launchPersistentContext(mkdtempSync(join(root, 'profile-')), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
  });
}
