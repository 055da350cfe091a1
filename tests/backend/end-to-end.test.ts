import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecryptionAgent } from '../../src/backend/decrypt';
import type { Backend } from '../../src/backend/server';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import { protectCommand } from '../../src/cli/protect';
import { addDevice, openWorkspace, signingKey, type Workspace } from '../../src/protect/workspace';
import { yieldToEventLoop } from '../he/helpers';
import { MODEL, mnistDigits } from './digits';
import { decrypted, startBackend } from './helpers';

const COUNT = 40;

describe('protect → signed bundle → a Node device on real MNIST digits → backend', () => {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-e2e-'));
  const data = join(root, 'data');
  const out = join(root, 'public', 'models');
  let ws: Workspace;
  let backend: Backend;
  let decryption: DecryptionAgent;
  let url: string;

  beforeAll(async () => {
    const previous = process.env.SEALED_EDGE_KEK;
    process.env.SEALED_EDGE_KEK = '01'.repeat(32);
    const quiet = process.stdout.write.bind(process.stdout);
    process.stdout.write = () => true;
    try {
      expect(await protectCommand([MODEL, '--id', 'mnist', '--data', data, '--out', out, '--json'])).toBe(0);
    } finally {
      process.stdout.write = quiet;
      if (previous === undefined) delete process.env.SEALED_EDGE_KEK;
      else process.env.SEALED_EDGE_KEK = previous;
    }
    ws = await openWorkspace(data, { SEALED_EDGE_KEK: '01'.repeat(32) });
    ({ backend, decryption, url } = await startBackend(ws, { staticDir: join(root, 'public') }));
  });
  afterAll(async () => {
    await backend?.close();
    await decryption?.dispose();
    await ws?.close();
  });

  it(`the stored labels of ${COUNT} test digits equal the float model's`, async () => {
    expect(existsSync(MODEL)).toBe(true);
    const device = await NodeDevice.enroll(url, (await addDevice(ws, 'kiosk')).token);
    const bundle = await fetchBundle(`${url}/models/mnist/v1/`, (await signingKey(ws)).publicKey);
    await device.load(await nodeSeal(), bundle);
    const digits = await mnistDigits(bundle, COUNT);
    for (const [i, { features }] of digits.entries()) {
      const { body, headers } = await device.request(device.classify(features), `digit-${String(i).padStart(5, '0')}`);
      expect((await device.post(body, headers)).status).toBe(201);
      await yieldToEventLoop();
    }
    device.unload();
    const stored = await decrypted(ws.store, { deviceId: device.deviceId });
    expect(stored.map((r) => r.label)).toEqual(digits.map((d) => d.label));
    const version = await ws.store.getModelVersion('mnist', 1);
    expect(version?.protectMetrics.encryptMs).toBeGreaterThan(0);
    expect(bundle.manifest.he.layers.map((l) => l.kind)).toEqual(['dense', 'poly', 'dense']);
  });
});
