import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import { startServeProcess, type ServeProcess } from '../../src/node/serve-process';
import { addDevice, openWorkspace, signingKey } from '../../src/protect/workspace';
import { makeHead, makeInputs } from '../he/helpers';
import { protectHead } from './helpers';

describe('a backend killed mid-load loses nothing and stores nothing twice', () => {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-restart-'));
  const data = join(root, 'data');
  const env = { ...process.env, SEALED_EDGE_KEK: 'cd'.repeat(32), SEALED_EDGE_OPERATOR_TOKEN: 'operator-token-for-tests' };
  let server: ServeProcess;
  const tokens: string[] = [];
  let ownerKey: Uint8Array;

  beforeAll(async () => {
    const ws = await openWorkspace(data, env);
    await protectHead(ws, makeHead([256, 64, 10], 'realistic', 5), 'restart', root);
    for (let i = 0; i < 4; i++) tokens.push((await addDevice(ws, `kiosk-${i}`)).token);
    ownerKey = (await signingKey(ws)).publicKey;
    await ws.close();
    server = await startServeProcess(['--port', '0', '--data', data, '--static', join(root, 'public'), '--decrypt-workers', '1'], env);
  });
  afterAll(async () => server?.stop('SIGKILL'));

  it('resending every unacknowledged request after a SIGKILL stores each result exactly once', async () => {
    const devices = await Promise.all(tokens.map((t) => NodeDevice.enroll(server.url, t)));
    const bundle = await fetchBundle(`${server.url}/models/restart/v1/`, ownerKey);
    const runtime = await nodeSeal();
    await devices[0]!.load(runtime, bundle);
    const results = makeInputs(256, 3, 'realistic', 6).map((x) => devices[0]!.classify(x));
    devices[0]!.unload();
    // Every device keeps an outbox; a request leaves it only when acknowledged.
    const outboxes = await Promise.all(
      devices.map(async (d, i) => {
        await d.load(runtime, bundle);
        const requests = [];
        for (let k = 0; k < 15; k++) requests.push({ key: `d${i}-frame-${String(k).padStart(4, '0')}`, ...(await d.request(results[k % 3]!, `d${i}-frame-${String(k).padStart(4, '0')}`)) });
        d.unload();
        return requests;
      }),
    );
    const acknowledged = new Set<string>();
    const drain = async (url: string) => {
      await Promise.all(
        outboxes.map(async (outbox) => {
          for (const r of outbox) {
            if (acknowledged.has(r.key)) continue;
            try {
              const response = await fetch(`${url}/api/v1/inferences`, { method: 'POST', headers: r.headers, body: Buffer.from(r.body) });
              if (response.status === 201 || response.status === 200) acknowledged.add(r.key);
              else throw new Error(`unexpected ${response.status}`);
            } catch (error) {
              if ((error as Error).message.startsWith('unexpected')) throw error;
              return; // the server is gone: keep the rest in the outbox
            }
          }
        }),
      );
    };
    const sending = drain(server.url);
    while (acknowledged.size < 8) await new Promise((r) => setTimeout(r, 5));
    await server.stop('SIGKILL');
    await sending;
    const beforeRestart = acknowledged.size;
    expect(beforeRestart).toBeGreaterThanOrEqual(8);
    expect(beforeRestart).toBeLessThan(60);
    server = await startServeProcess(['--port', '0', '--data', data, '--decrypt-workers', '1'], env);
    await drain(server.url);
    expect(acknowledged.size).toBe(60);
    // What the restarted instance acknowledged it also decrypts (in its worker thread); the
    // results the killed instance had claimed wait for their claims to expire.
    const operator = { authorization: `Bearer ${env.SEALED_EDGE_OPERATOR_TOKEN}` };
    const listed = async () => ((await (await fetch(`${server.url}/api/v1/results?limit=100`, { headers: operator })).json()) as { results: { state: string }[] }).results;
    await expect.poll(async () => (await listed()).filter((r) => r.state === 'decrypted').length, { timeout: 20_000 }).toBeGreaterThanOrEqual(60 - beforeRestart);
    await server.stop('SIGTERM');
    const ws = await openWorkspace(data, env);
    try {
      expect(await ws.store.integrityCheck()).toBe('ok');
      const stored = await ws.store.listResults();
      expect(stored).toHaveLength(60);
      expect(new Set(stored.map((r) => `${r.idempotencyKey}`)).size).toBe(60);
      expect(stored.every((r) => r.state === 'pending' || r.state === 'decrypted')).toBe(true);
    } finally {
      await ws.close();
    }
  });
});

describe('serve --decrypt-workers', () => {
  it('refuses anything but an integer from 0 to 256, with one clear line', () => {
    for (const bad of ['-1', 'two', '1.5', '257', '']) {
      const r = spawnSync(process.execPath, ['bin/sealed-edge.mjs', 'serve', '--data', mkdtempSync(join(tmpdir(), 'sealed-edge-flag-')), `--decrypt-workers=${bad}`], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, bad).toBe(2);
      expect(r.stderr, bad).toMatch(/--decrypt-workers must be an integer from 0 \(decrypt on the event loop\) to 256, got '/);
    }
  });
});
