import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

describe('npm start (sealed-edge start)', () => {
  it('protects the committed model, builds the kiosk and serves kiosk, signed bundle and cockpit', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-start-'));
    const child = spawn(
      process.execPath,
      ['bin/sealed-edge.mjs', 'start', '--port', '0', '--data', join(root, 'data'), '--out', join(root, 'models'), '--dist', join(root, 'dist')],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SEALED_EDGE_KEK: '3c'.repeat(32) } },
    );
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
    try {
      while (!/Ctrl-C stops/.test(output)) {
        if (child.exitCode !== null) throw new Error(`start exited early:\n${output}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const kiosk = /kiosk: +(http:\S+)/.exec(output)![1]!;
      expect(output).toMatch(/protected mnist v1/);
      expect(output).toMatch(/enroll with the one-time token [\w-]{32}/);
      const page = await fetch(kiosk);
      expect(page.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
      expect(await page.text()).toMatch(/<script type="module"/);
      const latest = (await (await fetch(`${kiosk}models/mnist/latest.json`)).json()) as { version: number; path: string };
      expect(latest).toMatchObject({ version: 1, path: 'v1/' });
      expect((await fetch(`${kiosk}models/mnist/v1/manifest.sig`)).status).toBe(200);
      expect((await fetch(`${kiosk}cockpit`)).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});
