// The kiosk on a bundle encrypted from its first layer, in Debian's chromium: protect
// --split input (the CLI, in its own process) publishes the CryptoNets/LoLa network with no
// extractor.onnx (conv → x² → 845→100 → x² → 100→10, all encrypted); the kiosk preprocesses
// each demo digit, its HE workers pack the im2col planes, encrypt and evaluate, and the
// backend decrypts. Then the deeper CNN (two convs, the second on encrypted activations)
// the same way. NEEDS /usr/bin/chromium; skipped, loudly, when it is missing.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../node-run';
import { parseManifest } from '../../src/model/bundle';
import { MNIST_SPEC } from '../../src/model/input-spec';
import { buildSite, enrollKiosk, floatScores, hasChromium, kioskFrames, launch, PLAINTEXT, screenText, type Site } from './kiosk';
import { decrypted } from '../backend/helpers';

if (!hasChromium) console.warn('tests/browser/whole-model.test.ts SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)');

const KEK = '06'.repeat(32);

interface Case {
  readonly model: string;
  readonly id: string;
  readonly kinds: readonly string[];
  readonly layers: string;
  /** Demo digits per run, by HE worker count (no entry: no run); the whole file stays near two minutes on 2 cores. */
  readonly count: { readonly 1?: number; readonly 2: number };
}

const CASES: readonly Case[] = [
  {
    model: 'models/small-poly-square.onnx',
    id: 'lola',
    kinds: ['conv', 'poly', 'dense', 'poly', 'dense'],
    layers: 'conv 1×28×28 → 5×13×13 (5×5, stride 2)→x²→100→x²→10',
    count: { 2: 30, 1: 15 },
  },
  {
    model: 'models/deep-poly-square.onnx',
    id: 'deep',
    kinds: ['conv', 'poly', 'conv', 'poly', 'dense'],
    layers: 'conv 1×28×28 → 8×13×13 (5×5, stride 2)→x²→conv 8×13×13 → 16×11×11 (3×3, stride 1)→x²→10',
    count: { 2: 10 },
  },
];

const argmax = (v: ArrayLike<number>) => Array.from(v).reduce((best, x, i, all) => (x > all[best]! ? i : best), 0);

describe.skipIf(!hasChromium).each(CASES)('kiosk in Chromium on a bundle with every layer encrypted ($id: $model, --split input)', ({ model: MODEL, id, kinds, layers, count: COUNT }) => {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-kiosk-whole-'));
  const out = join(root, 'models');
  let site: Site;
  let context: BrowserContext;
  let page: Page;
  let deviceId: string | undefined;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    const data = join(root, 'data');
    const r = await runCli(['protect', MODEL, '--split', 'input', '--id', id, '--data', data, '--out', out, '--json'], {
      env: { ...process.env, SEALED_EDGE_KEK: KEK },
      timeout: 5 * 60_000,
    });
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    site = await buildSite({ model: { dataDir: data, modelDir: join(out, id), env: { SEALED_EDGE_KEK: KEK } } });
    context = await launch(site.root);
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
  });

  afterAll(async () => {
    await context?.close();
    await site?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('protect --split input publishes no extractor.onnx: the manifest’s extractor output is its input, the first layer a convolution', () => {
    const dir = join(out, id, 'v1');
    expect(existsSync(join(dir, 'extractor.onnx'))).toBe(false);
    const manifest = parseManifest(readFileSync(join(dir, 'manifest.json')));
    expect(manifest.files['extractor.onnx']).toBeUndefined();
    expect(manifest.extractor.output).toEqual(manifest.extractor.input);
    expect(manifest.extractor.input.shape).toEqual([1, 1, 28, 28]);
    expect(manifest.extractor.preprocessing).toEqual(MNIST_SPEC);
    expect(manifest.he.scheme).toBe('ckks');
    expect(manifest.he.params.security).toBe(128);
    expect(manifest.he.layers.map((l) => l.kind)).toEqual(kinds);
  });

  /**
   * Loads the kiosk with `workers` HE workers (enrolling it the first time), runs COUNT[workers] demo
   * digits and checks every stored label against the float model's for the frame's digit,
   * joined by idempotency key (results may be stored out of order), and logs the frame times.
   */
  async function run(workers: 1 | 2, source: 'network' | 'cache'): Promise<void> {
    const count = COUNT[workers]!;
    await page.goto(`${site.url}/?workers=${workers}&mode=shared&bundle=models/${id}/latest.json`);
    await page.waitForSelector('#state[data-state="ready"]', { timeout: 5 * 60_000 });
    expect(await page.textContent('#bundle-id')).toBe(`${id} v1`);
    expect(await page.textContent('#bundle-status')).toMatch(new RegExp(`verified \\(Ed25519 signature, 2 SHA-256s\\) from the ${source} .*CKKS N=8192, 128-bit`));
    deviceId ??= await enrollKiosk(page, site.ws, `kiosk-whole-model-${id}`);
    const before = new Set((await site.ws.store.listResults({ deviceId })).map((r) => r.idempotencyKey));
    await page.fill('#demo-count', String(count));
    await page.click('#demo-start');
    await page.waitForSelector(`#outbox[data-delivered="${count}"]`, { timeout: 5 * 60_000 });
    await page.waitForSelector('#state[data-state="ready"]');

    const frames = await kioskFrames(page);
    expect(frames).toHaveLength(count);
    expect(frames.map((f) => f.workers)).toEqual(frames.map(() => workers));
    const stored = new Map((await decrypted(site.ws.store, { deviceId })).filter((r) => !before.has(r.idempotencyKey)).map((r) => [r.idempotencyKey, r]));
    expect(stored.size).toBe(count);
    const scoresOf = await floatScores(MODEL);
    const expected: number[] = [];
    const labels: (number | null)[] = [];
    let worstError = 0;
    for (const frame of frames) {
      const result = stored.get(frame.idempotencyKey);
      expect(result, `frame ${frame.frame}'s result is stored`).toBeDefined();
      const float = await scoresOf(Uint8Array.from(frame.pixels));
      expected.push(argmax(float));
      labels.push(result!.label);
      expect(result!.scores).toHaveLength(float.length);
      worstError = Math.max(worstError, ...result!.scores.map((s, i) => Math.abs(s - float[i]!)));
    }
    expect(labels).toEqual(expected);
    // Ten MNIST test digits or more cover most classes: a constant label would not pass unnoticed.
    expect(new Set(expected).size).toBeGreaterThan(4);
    // Scores reach about ±60 and the protection keeps 16 bits of precision: errors stay near 1e-3.
    expect(worstError).toBeLessThan(0.1);
    expect(await screenText(page)).not.toMatch(PLAINTEXT);
    const totals = frames.map((f) => f.totalMs).sort((a, b) => a - b);
    const medianOf = (stage: 'extract' | 'encrypt' | 'evaluate') => frames.map((f) => f.ms[stage]!).sort((a, b) => a - b)[count >> 1]!.toFixed(0);
    console.log(
      `whole-model kiosk (${id}), ${workers} HE worker(s), Chromium: median frame ${totals[count >> 1]!.toFixed(0)} ms ` +
        `(min ${totals[0]!.toFixed(0)}, max ${totals.at(-1)!.toFixed(0)}; preprocess ${medianOf('extract')}, encrypt ${medianOf('encrypt')}, evaluate ${medianOf('evaluate')}); ` +
        `largest score error against the float model ${worstError.toExponential(2)}`,
    );
  }

  it('2 HE workers share each frame: the backend stores the float model’s labels; the page says every layer is encrypted', async () => {
    await run(2, 'network');
    expect(await page.textContent('#where-plain')).toBe('none: every layer is encrypted');
    expect(await page.textContent('#where-layers')).toBe(layers);
    expect(await page.textContent('#where-weights')).toBe("encrypted (CKKS, owner's key)");
    expect(await page.textContent('#where-input-what')).toBe('preprocessed image entering the encrypted layers');
    expect(await page.textContent('#where-input')).toBe('encrypted (public key)');
    expect(await page.textContent('#workers')).toMatch(/^2 HE worker\(s\), sharing each frame \(\?mode=shared\): \d+ ms\/frame; no extractor \(every layer encrypted\)$/);
    expect(consoleErrors).toEqual([]);
  });

  it.skipIf(COUNT[1] === undefined)('1 HE worker, the bundle from the cache: the backend stores the float model’s labels', async () => {
    await run(1, 'cache');
    expect(await page.textContent('#workers')).toMatch(/^1 HE worker\(s\): \d+ ms\/frame; no extractor \(every layer encrypted\)$/);
    expect(consoleErrors).toEqual([]);
  });
});
