// The kiosk deployed as a static site (`sealed-edge deploy`) and served by a plain static
// server on another origin than the backend: no COOP/COEP (the extractor runs on one
// thread), the backend reached across origins through its CORS for the configured kiosk
// origin. NEEDS /usr/bin/chromium (Debian's `chromium`) and playwright-core; skipped,
// loudly, without it.
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../node-run';
import { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend } from '../../src/backend/server';
import { nodeSeal } from '../../src/node/seal';
import { openWorkspace, operatorToken, type Workspace } from '../../src/protect/workspace';
import { decrypted } from '../backend/helpers';
import { enrollKiosk, floatModel, hasChromium, kioskFrames, launch, MODEL } from './kiosk';

if (!hasChromium) console.warn('tests/browser/static-site.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

const ENV = { ...process.env, SEALED_EDGE_KEK: '7e'.repeat(32) };
/** Where the static server mounts the deployed folder (the build's --base). */
const MOUNT = '/sites/kiosk/';
const FRAMES = 3;

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
};

/** A plain static host: files under `root` at MOUNT, no COOP/COEP, no CORS; records every path asked for. */
function staticServer(root: string, asked: string[]): Server {
  return createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://static').pathname);
    asked.push(`${req.method} ${path}`);
    let file = path.startsWith(MOUNT) ? resolve(root, normalize(path.slice(MOUNT.length))) : '';
    if (file !== '' && statSync(file, { throwIfNoEntry: false })?.isDirectory()) file = join(file, 'index.html');
    if (req.method !== 'GET' || !file.startsWith(root + sep) || !statSync(file, { throwIfNoEntry: false })?.isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
}

const listen = (server: Server) => new Promise<number>((done) => server.listen(0, '127.0.0.1', () => done((server.address() as { port: number }).port)));

async function cli(...args: string[]): Promise<void> {
  const r = await runCli(args, { env: ENV, timeout: 10 * 60_000 });
  if (r.code !== 0) throw new Error(`sealed-edge ${args[0]} exited with ${r.code}:\n${r.err}`);
}

describe.skipIf(!hasChromium)('the kiosk as a static site on another origin (Debian chromium, playwright-core)', () => {
  let root: string;
  let ws: Workspace;
  let decryption: DecryptionAgent;
  let backend: Backend;
  let backendUrl: string;
  let siteOrigin: string;
  let server: Server;
  let context: BrowserContext;
  let page: Page;
  const asked: string[] = [];

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sealed-edge-static-site-'));
    const data = join(root, 'data');
    await cli('protect', MODEL, '--id', 'digits', '--data', data, '--out', join(root, 'models'), '--json');
    server = staticServer(join(root, 'site'), asked);
    siteOrigin = `http://127.0.0.1:${await listen(server)}`;
    ws = await openWorkspace(data, ENV);
    decryption = new DecryptionAgent(await nodeSeal(), ws.store, ws.kek);
    backend = new Backend({ store: ws.store, decryption, operatorToken: operatorToken(data, ENV), kioskOrigins: [siteOrigin], rateLimit: { burst: 100, perSecond: 50 } });
    backendUrl = `http://127.0.0.1:${await backend.listen(0)}/`;
    await cli('deploy', 'digits', '--out', join(root, 'site'), '--models', join(root, 'models'), '--data', data, '--base', MOUNT, '--backend', backendUrl);
    context = await launch(root);
    page = await context.newPage();
  });

  afterAll(async () => {
    await context?.close();
    await backend?.close();
    server?.close();
    await decryption?.dispose();
    await ws?.close();
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
  });

  it('verifies the bundle, enrolls, classifies and delivers through the backend’s origin; the backend stores the float model’s labels', async () => {
    const posts: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push(r.url());
    });
    // No ?bundle= or ?backend=: the deployment pinned both.
    await page.goto(`${siteOrigin}${MOUNT}?workers=1`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);
    expect(await page.textContent('#workers')).toMatch(/extractor on 1 thread\(s\) \(page not cross-origin isolated\)/);
    expect(await page.textContent('#bundle-id')).toBe('digits v1');
    expect(await page.inputValue('#backend-url')).toBe(backendUrl);
    const deviceId = await enrollKiosk(page, ws, 'static-site-kiosk');
    await page.fill('#demo-count', String(FRAMES));
    await page.click('#demo-start');
    await page.waitForSelector(`#outbox[data-delivered="${FRAMES}"]`, { timeout: 10 * 60_000 });
    // Results are joined to frames by idempotency key: they may be stored out of order.
    const stored = new Map((await decrypted(ws.store, { deviceId })).map((r) => [r.idempotencyKey, r.label]));
    const frames = await kioskFrames(page);
    expect(frames).toHaveLength(FRAMES);
    expect(stored.size).toBe(FRAMES);
    const label = await floatModel();
    const expected = await Promise.all(frames.map((f) => label(Uint8Array.from(f.pixels))));
    expect(frames.map((f) => stored.get(f.idempotencyKey))).toEqual(expected);
    // Every POST went to the backend's origin; the static host served files only.
    expect(posts.map((url) => new URL(url).origin)).toEqual(Array(FRAMES + 1).fill(new URL(backendUrl).origin));
    expect(asked.filter((a) => !a.startsWith(`GET ${MOUNT}`))).toEqual([]);
    expect(asked).toContain(`GET ${MOUNT}models/digits/latest.json`);
  });
});
