/**
 * Shared set-up for the kiosk's browser tests and benchmark. NEEDS: Debian's chromium at
 * /usr/bin/chromium (`apt-get install -y chromium`; never a downloaded browser) and
 * playwright-core. Builds the kiosk with Vite's JS API into a temp directory, protects
 * models/paper-cnn-x2+2x.onnx into `<kiosk>/models/mnist/` (or takes a model protected
 * beforehand, e.g. the trained colour model by `protectColour`), puts in another demo
 * stream if asked, and starts the real backend serving both.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { build } from 'vite';
import { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend } from '../../src/backend/server';
import { readDemoSource, writeDemoStream } from '../../src/cli/demo-stream';
import { protectCommand } from '../../src/cli/protect';
import type { FrameRecord, Kiosk } from '../../src/edge/app';
import { MNIST_INPUT_SHAPE, preprocessMnist } from '../../src/model/idx';
import { nodeSeal } from '../../src/node/seal';
import { addDevice, openWorkspace, operatorToken, type Workspace } from '../../src/protect/workspace';
import { COLOUR_FIXTURE, COLOUR_MODEL, COLOUR_SPEC_FILE } from '../model/colour-fixture';

export const CHROMIUM = '/usr/bin/chromium';
export const MODEL = 'models/paper-cnn-x2+2x.onnx';
export const hasChromium = existsSync(CHROMIUM);
const KEK = '01'.repeat(32);

export interface SiteOptions {
  /**
   * A model protected beforehand (`sealed-edge protect MODEL --id ID --data DATA --out OUT`):
   * its data directory (database, keys; opened with `env`, default process.env) and its
   * model directory OUT/ID. Default: MODEL protected into a temp directory as 'mnist'.
   */
  model?: { dataDir: string; modelDir: string; env?: NodeJS.ProcessEnv };
  /** Where the kiosk sits under the static root, e.g. 'edge/kiosk/' (default: the root). */
  mount?: string;
  /** SEALED_EDGE_BASE for the build (default: unset, i.e. a relative base). */
  base?: string;
  /** The kiosk's demo stream, as `start --demo FILE|DIR` takes it (default: the MNIST test digits the build ships). */
  demo?: string;
}

export interface Site {
  root: string;
  /** The directory the backend serves. */
  staticRoot: string;
  /** The built kiosk (staticRoot/mount); the bundle is under its models/<modelId>/. */
  site: string;
  ws: Workspace;
  dataDir: string;
  modelId: string;
  ownerKeyHex: string;
  /** The backend's origin. */
  url: string;
  /** The kiosk's page (url + mount). */
  kioskUrl: string;
  port: number;
  backend: Backend;
  decryption: DecryptionAgent;
  /** Protects MODEL again as the next version of the site's model and publishes it; returns the version. */
  publishNextVersion(): Promise<number>;
  /** Stops the backend (the static host too); `restart` brings it back on the same port. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** Stops the backend and deletes the temp directory (close the browsers first). */
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

async function withEnv<T>(name: string, value: string | undefined, run: () => Promise<T>): Promise<T> {
  const previous = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return await run();
  } finally {
    if (previous === undefined) delete process.env[name];
    else process.env[name] = previous;
  }
}

/** Protects MODEL as a new version of 'mnist' under `out`; returns the manifest's version. */
async function protectMnist(data: string, out: string): Promise<number> {
  const code = await withEnv('SEALED_EDGE_KEK', KEK, () => quietly(() => protectCommand([MODEL, '--id', 'mnist', '--data', data, '--out', out, '--json'])));
  if (code !== 0) throw new Error(`protect exited with ${code}`);
  return (JSON.parse(readFileSync(join(out, 'mnist', 'latest.json'), 'utf8')) as { version: number }).version;
}

/** The trained colour model's id once protected by `protectColour`. */
export const COLOUR_ID = 'colour';

/**
 * Protects the trained colour model (models/colour-poly-square.onnx: 3×32×32, per-channel
 * mean/std) as 'colour' into `root`/data and `root`/models, with the protect flags
 * recorded beside it (models/colour-poly-square.input.json) and `--calibration` its 200
 * test PNGs (tests/fixtures/colour-shapes/); the default split. Returns it as
 * `SiteOptions.model`.
 */
export async function protectColour(root: string): Promise<NonNullable<SiteOptions['model']>> {
  const flags = (JSON.parse(readFileSync(COLOUR_SPEC_FILE, 'utf8')) as { protectFlags: string }).protectFlags.split(' ');
  const dataDir = join(root, 'data');
  const out = join(root, 'models');
  const args = [COLOUR_MODEL, '--id', COLOUR_ID, ...flags, '--calibration', `${COLOUR_FIXTURE}/`, '--data', dataDir, '--out', out, '--json'];
  const code = await withEnv('SEALED_EDGE_KEK', KEK, () => quietly(() => protectCommand(args)));
  if (code !== 0) throw new Error(`protect ${args.join(' ')} exited with ${code}`);
  return { dataDir, modelDir: join(out, COLOUR_ID), env: { SEALED_EDGE_KEK: KEK } };
}

/** Builds the kiosk with `ownerKeyHex` pinned into `outDir`. */
export async function buildKiosk(outDir: string, ownerKeyHex: string, base?: string): Promise<void> {
  await withEnv('SEALED_EDGE_BASE', base, () =>
    build({
      configFile: resolve('vite.config.ts'),
      root: resolve('.'),
      logLevel: 'warn',
      define: { __SEALED_EDGE_OWNER_KEY__: JSON.stringify(ownerKeyHex) },
      build: { outDir, emptyOutDir: true },
    }),
  );
}

export async function buildSite(options: SiteOptions = {}): Promise<Site> {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-kiosk-'));
  let dataDir: string;
  let modelDir: string;
  let env: NodeJS.ProcessEnv;
  if (options.model === undefined) {
    dataDir = join(root, 'data');
    await protectMnist(dataDir, join(root, 'models'));
    modelDir = join(root, 'models', 'mnist');
    env = { SEALED_EDGE_KEK: KEK };
  } else {
    ({ dataDir, modelDir } = options.model);
    env = options.model.env ?? process.env;
  }
  const modelId = basename(modelDir);
  const ownerKeyHex = readFileSync(join(dataDir, 'owner-signing.pub'), 'utf8').trim();
  const staticRoot = join(root, 'static');
  const mount = options.mount ?? '';
  const site = join(staticRoot, mount);
  await buildKiosk(site, ownerKeyHex, options.base);
  rmSync(join(site, 'models'), { recursive: true, force: true });
  mkdirSync(join(site, 'models'), { recursive: true });
  cpSync(modelDir, join(site, 'models', modelId), { recursive: true });
  if (options.demo !== undefined) writeDemoStream(site, readDemoSource(options.demo));
  const ws = await openWorkspace(dataDir, env);
  const decryption = new DecryptionAgent(await nodeSeal(), ws.store, ws.kek);
  const make = () => new Backend({ store: ws.store, decryption, operatorToken: operatorToken(dataDir, env), staticDir: staticRoot, rateLimit: { burst: 100, perSecond: 50 } });
  const s: Site = {
    root,
    staticRoot,
    site,
    ws,
    dataDir,
    modelId,
    ownerKeyHex,
    decryption,
    backend: make(),
    port: 0,
    url: '',
    kioskUrl: '',
    async publishNextVersion() {
      if (options.model !== undefined) throw new Error('publishNextVersion protects MODEL: the site must have been built without options.model');
      const version = await protectMnist(dataDir, join(root, 'models'));
      cpSync(modelDir, join(site, 'models', modelId), { recursive: true });
      return version;
    },
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
      rmSync(root, { recursive: true, force: true });
    },
  };
  s.port = await s.backend.listen(0);
  s.url = `http://127.0.0.1:${s.port}`;
  s.kioskUrl = `${s.url}/${mount}`;
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

/** Enrolls the page's kiosk through its set-up panel with a fresh device token; returns the device id. */
export async function enrollKiosk(page: Page, ws: Workspace, name: string): Promise<string> {
  const { token, device } = await addDevice(ws, name);
  await page.fill('#enroll-token', token);
  await page.click('#enroll');
  await page.waitForSelector('#device-id[data-enrolled="true"]', { timeout: 30_000 });
  return device.id;
}

/** The kiosk's frame records as plain JSON (the image the model saw as a number array). */
export type FrameJson = Omit<FrameRecord, 'pixels'> & { pixels: number[] };

export function kioskFrames(page: Page): Promise<FrameJson[]> {
  return page.evaluate(() =>
    (globalThis as unknown as { sealedEdgeKiosk: Kiosk }).sealedEdgeKiosk.frames.map((f) => ({ ...f, pixels: Array.from(f.pixels) })),
  );
}

/** What no text the device receives or shows may contain: a decrypted label or score. */
export const PLAINTEXT = /label|score|predict/i;

/**
 * Watches the page's DOM from its first node on: every text or attribute value the page
 * adds or changes outside the static explanations (#about, .explain) and style sheets that matches
 * PLAINTEXT is recorded; `plaintextSeen` reads the record.
 */
export async function watchDom(context: BrowserContext): Promise<void> {
  await context.addInitScript((pattern: string) => {
    const re = new RegExp(pattern, 'i');
    const seen: string[] = [];
    (globalThis as unknown as { __plaintextSeen: string[] }).__plaintextSeen = seen;
    const check = (node: Node | null, text: string | null) => {
      const element = node instanceof Element ? node : node?.parentElement;
      if (text === null || element?.closest('#about, .explain, style, script')) return;
      if (re.test(text)) seen.push(text.slice(0, 200));
    };
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'characterData') check(r.target, r.target.textContent);
        else if (r.type === 'attributes') check(r.target, (r.target as Element).getAttribute(r.attributeName!));
        else {
          for (const n of r.addedNodes) {
            if (!(n instanceof Element)) check(n, n.textContent);
            else {
              for (const e of [n, ...n.querySelectorAll('*')]) {
                for (const child of e.childNodes) if (child.nodeType === Node.TEXT_NODE) check(e, child.textContent);
                for (const a of e.attributes) check(e, a.value);
              }
            }
          }
        }
      }
    }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
  }, PLAINTEXT.source);
}

export function plaintextSeen(page: Page): Promise<string[]> {
  return page.evaluate(() => (globalThis as unknown as { __plaintextSeen: string[] }).__plaintextSeen);
}

/** The page's text outside the static explanations ("what is encrypted where"). */
export function screenText(page: Page): Promise<string> {
  return page.evaluate(() => {
    const clone = document.body.cloneNode(true) as HTMLElement;
    clone.querySelectorAll('#about, .explain').forEach((e) => e.remove());
    return clone.innerText;
  });
}

/** The float model (the original ONNX `model` in onnxruntime-node): the scores of 28×28 grey images. */
export async function floatScores(model = MODEL): Promise<(pixels: Uint8Array) => Promise<Float32Array>> {
  const session = await ort.InferenceSession.create(readFileSync(model));
  return async (pixels) => {
    const input = new ort.Tensor('float32', preprocessMnist({ count: 1, pixels }, 0), [...MNIST_INPUT_SHAPE]);
    return Object.values(await session.run({ [session.inputNames[0]!]: input }))[0]!.data as Float32Array;
  };
}

/** The float model's label (argmax of floatScores) of 28×28 grey images. */
export async function floatModel(model = MODEL): Promise<(pixels: Uint8Array) => Promise<number>> {
  const scoresOf = await floatScores(model);
  return async (pixels) => {
    const scores = await scoresOf(pixels);
    return scores.reduce((best, v, i) => (v > scores[best]! ? i : best), 0);
  };
}
