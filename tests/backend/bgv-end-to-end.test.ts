import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../node-run';
import type { DecryptionAgent } from '../../src/backend/decrypt';
import type { Backend } from '../../src/backend/server';
import { containerScheme } from '../../src/he';
import { writeContainer } from '../../src/he/container';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import { secretKeyContext, unwrapSecret } from '../../src/node/kek';
import { addDevice, openWorkspace, operatorToken, signingKey, type Workspace } from '../../src/protect/workspace';
import { yieldToEventLoop } from '../he/helpers';
import { MODEL, mnistDigits } from './digits';
import { decrypted, startBackend } from './helpers';

/** BGV evaluates each image once per CRT modulus (~1.4 s for both at 128 bits): a handful of real digits. */
const COUNT = 4;
const KEK = '07'.repeat(32);

ort.env.logLevel = 'error';

describe('BGV: sealed-edge protect --scheme bgv → signed bundle → a Node device on real MNIST digits → backend', () => {
  const root = mkdtempSync(join(tmpdir(), 'sealed-edge-bgv-'));
  const data = join(root, 'data');
  const out = join(root, 'public', 'models');
  let printed: Record<string, unknown>;
  let ws: Workspace;
  let backend: Backend;
  let decryption: DecryptionAgent;
  let url: string;

  beforeAll(async () => {
    // The owner's side as an operator runs it: the CLI in its own process.
    const r = await runCli(['protect', MODEL, '--scheme', 'bgv', '--id', 'mnist-bgv', '--data', data, '--out', out, '--json'], {
      env: { ...process.env, SEALED_EDGE_KEK: KEK },
      timeout: 5 * 60_000,
    });
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    printed = JSON.parse(r.out) as Record<string, unknown>;
    ws = await openWorkspace(data, { SEALED_EDGE_KEK: KEK });
    ({ backend, decryption, url } = await startBackend(ws, { staticDir: join(root, 'public') }));
  });
  afterAll(async () => {
    await backend?.close();
    await decryption?.dispose();
    await ws?.close();
  });

  it('protect plans BGV from the extractor on MNIST training images, verifies the noise budget and stores the secret keys wrapped', async () => {
    expect(printed).toMatchObject({ modelId: 'mnist-bgv', version: 1, scheme: 'bgv', crtModuli: 2 });
    const bgv = printed.bgv as Record<string, unknown>;
    expect(bgv).toMatchObject({ calibrationVectors: 300, calibrationSource: 'the first 300 images of the MNIST training set, through the extractor' });
    expect(bgv.plainModuli).toHaveLength(2);
    expect((bgv.plainModuli as string[]).map((t) => BigInt(t) % (2n * 16384n))).toEqual([1n, 1n]);
    // One real evaluation at protect time left budget, at least what the (pessimistic) noise model predicted.
    expect(printed.noiseBudgetBits).toBeGreaterThan(0);
    expect(printed.noiseBudgetBits).toBeGreaterThanOrEqual(printed.predictedNoiseBudgetBits as number);

    const version = await ws.store.getModelVersion('mnist-bgv', 1);
    expect(version?.protectMetrics).toMatchObject({ crtModuli: 2, noiseBudgetBits: printed.noiseBudgetBits, weightsBytes: printed.weightsBytes });
    const pair = await ws.store.getKeyPair(printed.keyId as string);
    const secret = unwrapSecret(ws.kek, pair!.wrappedSecretKey, secretKeyContext(pair!.keyId));
    expect(containerScheme(secret, 'secretKey')).toBe('bgv');
    expect(containerScheme(pair!.deviceKeys, 'deviceKeys')).toBe('bgv');
    expect(() => containerScheme(pair!.wrappedSecretKey, 'secretKey')).toThrow(/magic/);
    expect((await ws.store.listAudit()).find((e) => e.event === 'model.protected')?.details).toMatchObject({ scheme: 'bgv', security: 128 });
  });

  it(`a device's encrypted results for ${COUNT} test digits are decrypted to the float model's labels, each with its noise budget`, async () => {
    const device = await NodeDevice.enroll(url, (await addDevice(ws, 'kiosk-bgv')).token);
    const bundle = await fetchBundle(`${url}/models/mnist-bgv/v1/`, (await signingKey(ws)).publicKey);
    const { he } = bundle.manifest;
    if (he.scheme !== 'bgv') throw new Error(`the bundle is ${he.scheme}`);
    expect([he.params.polyModulusDegree, he.params.plainModulusBits.length, he.params.security, he.depth]).toEqual([16384, 2, 128, 3]);
    expect(he.mode).toEqual({ weights: 'encrypted', input: 'encrypted' });
    await device.load(await nodeSeal(), bundle);
    const digits = await mnistDigits(bundle, COUNT);
    const expected = digits.map((d) => d.label);
    const posted: Uint8Array[] = [];
    for (const [i, { features }] of digits.entries()) {
      const result = device.classify(features);
      expect(containerScheme(result, 'result')).toBe('bgv');
      posted.push(result);
      const { body, headers } = await device.request(result, `bgv-digit-${i}`);
      const answer = await device.post(body, headers);
      expect(answer.status).toBe(201);
      // The device learns nothing decryption found: no label, no score, no noise budget.
      expect(Object.keys(answer.body.receipt as object).sort()).toEqual(['bodySha256', 'deviceId', 'idempotencyKey', 'modelId', 'receivedAt', 'resultId', 'version']);
      await yieldToEventLoop();
    }
    device.unload();

    const stored = await decrypted(ws.store, { deviceId: device.deviceId });
    expect(stored.map((r) => r.label)).toEqual(expected);
    expect(expected).toEqual([7, 2, 1, 0]);
    for (const r of stored) {
      expect(Number.isInteger(r.noiseBudgetBits)).toBe(true);
      expect(r.noiseBudgetBits).toBeGreaterThan(0);
    }
    const listed = await fetch(`${url}/api/v1/results?deviceId=${device.deviceId}`, { headers: { authorization: `Bearer ${operatorToken(data, {})}` } });
    const operators = ((await listed.json()) as { results: { label: number; noiseBudgetBits: number }[] }).results;
    expect(operators.map((r) => [r.label, r.noiseBudgetBits])).toEqual(stored.map((r) => [r.label, r.noiseBudgetBits]));

    // An altered ciphertext (its section's CRC no longer matches) is refused at the door and
    // nothing is stored; a whole container naming the other scheme is stored, and decryption
    // marks it failed (the key pair is BGV).
    const altered = posted[0]!.slice();
    altered[altered.length - 100]! ^= 0x40;
    const alteredRequest = await device.request(altered, 'bgv-altered');
    const refused = await device.post(alteredRequest.body, alteredRequest.headers);
    expect(refused.status).toBe(422);
    expect(refused.body.error).toMatchObject({ code: 'E_CIPHERTEXT' });
    const ckks = writeContainer('result', { params: { scheme: 'ckks' }, keyId: bundle.manifest.keyId, outputs: 10 }, []);
    const ckksRequest = await device.request(ckks, 'bgv-as-ckks');
    expect((await device.post(ckksRequest.body, ckksRequest.headers)).status).toBe(201);
    const after = await decrypted(ws.store, { deviceId: device.deviceId });
    expect(after).toHaveLength(COUNT + 1);
    expect(after[COUNT]).toMatchObject({ idempotencyKey: 'bgv-as-ckks', state: 'failed', error: expect.stringMatching(/^E_CIPHERTEXT: the encrypted result was refused \(E_PARAMS\): the result is a CKKS result; key .* is a BGV key/) });
  });
});
