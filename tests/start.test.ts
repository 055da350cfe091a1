import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './node-run';
import { greyPng } from './browser/media';

const ENV = { ...process.env, SEALED_EDGE_KEK: '3c'.repeat(32) };
const dirs = (root: string) => ['--port', '0', '--data', join(root, 'data'), '--out', join(root, 'models'), '--dist', join(root, 'dist')];

/** Runs `sealed-edge start` until it serves, hands its output to `check`, then stops it. */
async function whileServing(args: string[], check: (output: string) => Promise<void>): Promise<void> {
  const child = spawn(process.execPath, ['bin/sealed-edge.mjs', 'start', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: ENV });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  try {
    while (!/Ctrl-C stops/.test(output)) {
      if (child.exitCode !== null) throw new Error(`start exited early:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await check(output);
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
}

/** Runs `sealed-edge start` expecting it to refuse before serving. */
async function refused(args: string[]) {
  const { code, err } = await runCli(['start', ...args], { env: ENV, timeout: 60_000 });
  return { code, err };
}

describe('npm start (sealed-edge start)', () => {
  it('protects the committed model, builds the kiosk and serves kiosk, signed bundle and cockpit; refuses another scheme for the same id', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-start-'));
    // --demo: a folder of pictures replaces the kiosk's demo digits.
    const demo = join(root, 'pictures');
    mkdirSync(demo);
    writeFileSync(join(demo, 'seven.png'), greyPng(2, 2, Uint8Array.from([0, 255, 255, 0])));
    writeFileSync(join(demo, 'one.png'), greyPng(3, 1, Uint8Array.from([1, 2, 3])));
    await whileServing([...dirs(root), '--demo', demo], async (output) => {
      const kiosk = /kiosk: +(http:\S+)/.exec(output)![1]!;
      expect(output).toMatch(/protected mnist v1/);
      expect(output).toContain(`then "Start demo" classifies 2 image files of ${demo} under encryption`);
      expect(await (await fetch(`${kiosk}demo/stream.json`)).json()).toEqual({ format: 'sealed-edge-demo/1', images: ['00000.png', '00001.png'] });
      expect(Buffer.from(await (await fetch(`${kiosk}demo/00000.png`)).arrayBuffer())).toEqual(greyPng(3, 1, Uint8Array.from([1, 2, 3])));
      expect(output).toMatch(/enroll with the one-time token [\w-]{32}/);
      const page = await fetch(kiosk);
      expect(page.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
      expect(await page.text()).toMatch(/<script type="module"/);
      const latest = (await (await fetch(`${kiosk}models/mnist/latest.json`)).json()) as { version: number; path: string };
      expect(latest).toMatchObject({ version: 1, path: 'v1/' });
      expect((await fetch(`${kiosk}models/mnist/v1/manifest.sig`)).status).toBe(200);
      expect((await fetch(`${kiosk}cockpit`)).status).toBe(200);
    });
    expect(await refused([...dirs(root), '--scheme', 'bgv', '--id', 'mnist'])).toEqual({
      code: 2,
      err: expect.stringMatching(/model mnist is already published with CKKS, not BGV: give another --id/),
    });
  });

  it('--scheme bgv protects with BGV as mnist-bgv and prints a kiosk URL that names its bundle', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-start-bgv-'));
    await whileServing([...dirs(root), '--scheme', 'bgv'], async (output) => {
      expect(output).toMatch(/protecting models\/paper-cnn-x2\+2x\.onnx as mnist-bgv with BGV/);
      const kiosk = /kiosk: +(http:\S+)/.exec(output)![1]!;
      const url = new URL(kiosk);
      expect(url.searchParams.get('bundle')).toBe('models/mnist-bgv/latest.json');
      const manifest = (await (await fetch(new URL('models/mnist-bgv/v1/manifest.json', url))).json()) as { he: { scheme: string } };
      expect(manifest.he.scheme).toBe('bgv');
    });
  });

  it('refuses a scheme it does not know, and a published pointer it cannot read', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-start-bad-'));
    expect(await refused([...dirs(root), '--scheme', 'rsa'])).toEqual({ code: 2, err: expect.stringMatching(/--scheme must be ckks or bgv, got 'rsa'/) });
    mkdirSync(join(root, 'models', 'mnist'), { recursive: true });
    writeFileSync(join(root, 'models', 'mnist', 'latest.json'), '{"version": 1, "path": "v1/"');
    expect(await refused(dirs(root))).toEqual({ code: 1, err: expect.stringMatching(/cannot read the published bundle of mnist \(.*latest\.json\): .*JSON/) });
    expect(existsSync(join(root, 'data'))).toBe(false);
  });
});
