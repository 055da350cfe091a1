import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classifierDepth, DeviceKeys, EncryptedClassifier, floatEvaluate, HeContext, OwnerKeys, planClassifier, planParameters } from '../../src/he';
import { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend } from '../../src/backend/server';
import { fetchBundle, NodeDevice } from '../../src/node/device-client';
import { nodeSeal } from '../../src/node/seal';
import type { ProtectReport } from '../../src/protect/protect';
import { addDevice, openWorkspace, operatorToken, signingKey, type Workspace } from '../../src/protect/workspace';
import { readContainer, writeContainer } from '../../src/he/container';
import { argmax, makeHead, makeInputs } from '../he/helpers';
import { decrypted, protectHead, startBackend } from './helpers';

const head = makeHead([256, 64, 10], 'realistic', 404);

describe('decryption backend', () => {
  let ws: Workspace;
  let report: ProtectReport;
  let url: string;
  let backend: Backend;
  let decryption: DecryptionAgent;
  let device: NodeDevice;
  let token: string;
  const accepted = new Set<string>();

  beforeAll(async () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-backend-'));
    ws = await openWorkspace(join(root, 'data'), {});
    report = await protectHead(ws, head, 'test-head', root);
    ({ backend, decryption, url } = await startBackend(ws, { staticDir: join(root, 'public') }));
    const added = await addDevice(ws, 'kiosk-1');
    token = added.token;
    device = await NodeDevice.enroll(url, token);
    const owner = await signingKey(ws);
    await device.load(await nodeSeal(), await fetchBundle(`${url}/models/test-head/v1/`, owner.publicKey));
  });

  afterAll(async () => {
    device?.unload();
    await backend?.close();
    await decryption?.dispose();
    await ws?.close();
  });

  async function post(x: Float64Array, key: string) {
    const { body, headers } = await device.request(device.classify(x), key);
    return device.post(body, headers);
  }

  it('stores the label the float model gives, and answers with a receipt that holds no plaintext', async () => {
    const inputs = makeInputs(256, 12, 'realistic', 405);
    for (const [i, x] of inputs.entries()) {
      const key = `frame-${i}-0001`;
      const outcome = await post(x, key);
      expect(outcome.status).toBe(201);
      accepted.add(key);
      const receipt = outcome.body.receipt as Record<string, unknown>;
      expect(Object.keys(receipt).sort()).toEqual(['bodySha256', 'deviceId', 'idempotencyKey', 'modelId', 'receivedAt', 'resultId', 'version']);
      expect(JSON.stringify(outcome.body)).not.toMatch(/label|score/i);
    }
    const stored = await decrypted(ws.store, { deviceId: device.deviceId });
    expect(stored.map((r) => r.label)).toEqual(inputs.map((x) => argmax(floatEvaluate(head, x))));
    expect(report.metrics.weightsBytes).toBeGreaterThan(0);
  });

  it('the same idempotency key with the same body answers 200 with the same receipt and stores nothing', async () => {
    const { body, headers } = await device.request(device.classify(makeInputs(256, 1, 'random', 9)[0]!), 'replayed-key-1');
    const first = await device.post(body, headers);
    accepted.add('replayed-key-1');
    const again = await device.post(body, headers);
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    expect(again.body.receipt).toEqual(first.body.receipt);
    const other = await device.request(device.classify(makeInputs(256, 1, 'random', 10)[0]!), 'replayed-key-1');
    expect((await device.post(other.body, other.headers)).status).toBe(409);
  });

  it('takes a result in base64 that is not canonical (padding left out or added), and refuses one that is not base64', async () => {
    const x = makeInputs(256, 1, 'random', 12)[0]!;
    const { body } = await device.request(device.classify(x), 'unpadded-1');
    const request = JSON.parse(new TextDecoder().decode(body)) as { result: string };
    const post = async (value: object) => {
      const bytes = new TextEncoder().encode(JSON.stringify(value));
      const outcome = await device.post(bytes, await device.signedHeaders(bytes));
      return { status: outcome.status, code: (outcome.body.error as { code?: string } | undefined)?.code };
    };
    // Not canonical, yet base64 as the pattern has it: without its padding, or (a length
    // that needs none) with padding it does not need.
    const unpadded = request.result.replace(/=+$/, '');
    const variant = unpadded === request.result ? `${request.result}==` : unpadded;
    for (const result of [`${unpadded.slice(0, 100)}*${unpadded.slice(100)}`, `${unpadded.slice(0, 100)}==${unpadded.slice(100)}`, `${request.result}===`, '', '====']) {
      expect(await post({ ...request, idempotencyKey: 'not-base64-1', result })).toEqual({ status: 400, code: 'E_BAD_REQUEST' });
    }
    expect(await post({ ...request, result: variant })).toEqual({ status: 201, code: undefined });
    accepted.add('unpadded-1');
    const [stored] = (await decrypted(ws.store, { deviceId: device.deviceId })).filter((r) => r.idempotencyKey === 'unpadded-1');
    expect(stored).toMatchObject({ state: 'decrypted', label: argmax(floatEvaluate(head, x)) });
    expect(await ws.store.listResults({ deviceId: device.deviceId })).not.toContainEqual(expect.objectContaining({ idempotencyKey: 'not-base64-1' }));
  });

  it('refuses bad requests with 4xx and stable codes, and keeps serving', async () => {
    const x = makeInputs(256, 1, 'random', 11)[0]!;
    const { body, headers } = await device.request(device.classify(x), 'bad-requests-1');
    const raw = (b: BodyInit, h: Record<string, string>) =>
      fetch(`${url}/api/v1/inferences`, { method: 'POST', headers: h, body: b }).then(async (r) => ({ status: r.status, code: ((await r.json()) as { error?: { code: string } }).error?.code }));
    expect(await raw(Buffer.from(body), { ...headers, 'x-signature': '' })).toEqual({ status: 401, code: 'E_SIGNATURE' });
    const stranger = await NodeDevice.enroll(url, (await addDevice(ws, 'kiosk-2')).token);
    const strangerHeaders = await stranger.signedHeaders(body);
    expect(await raw(Buffer.from(body), { ...strangerHeaders, 'x-device-id': device.deviceId })).toEqual({ status: 401, code: 'E_SIGNATURE' });
    expect(await raw(Buffer.from(body), { ...headers, 'x-device-id': 'no-such-device' })).toEqual({ status: 401, code: 'E_DEVICE' });
    expect(await raw(Buffer.from(body), { ...headers, 'x-device-id': '../etc/passwd' })).toEqual({ status: 401, code: 'E_DEVICE' });
    const tampered = Buffer.from(body);
    tampered[tampered.length - 5]! ^= 1;
    expect(await raw(tampered, headers)).toEqual({ status: 401, code: 'E_SIGNATURE' });
    const signed = async (value: unknown) => {
      const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : new TextEncoder().encode(JSON.stringify(value));
      return raw(Buffer.from(bytes), await device.signedHeaders(bytes));
    };
    const request = JSON.parse(new TextDecoder().decode(body)) as Record<string, unknown>;
    expect(await signed('\u0000garbage')).toEqual({ status: 400, code: 'E_BAD_REQUEST' });
    expect(await signed({ ...request, idempotencyKey: 'x' })).toEqual({ status: 400, code: 'E_BAD_REQUEST' });
    expect(await signed({ ...request, modelId: 'no-such-model' })).toEqual({ status: 404, code: 'E_MODEL' });
    expect(await signed({ ...request, version: 7 })).toEqual({ status: 404, code: 'E_MODEL' });
    expect(await signed({ ...request, keyId: 'ab'.repeat(16) })).toEqual({ status: 409, code: 'E_KEY' });
    // What is not a whole encrypted result (its container's lengths and checksums) is refused
    // at the door and nothing is stored; a well-formed container that cannot be decrypted is
    // stored (the device gets its receipt) and fails at decryption, with the reason, once.
    const result = Buffer.from(request.result as string, 'base64');
    expect(await signed({ ...request, idempotencyKey: 'truncated-1', result: result.subarray(0, result.length - 100).toString('base64') })).toEqual({ status: 422, code: 'E_CIPHERTEXT' });
    const mutated = Buffer.from(result);
    mutated[mutated.length - 1000]! ^= 0x10;
    expect(await signed({ ...request, idempotencyKey: 'mutated-1', result: mutated.toString('base64') })).toEqual({ status: 422, code: 'E_CIPHERTEXT' });
    expect(await signed({ ...request, idempotencyKey: 'random-1', result: Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7919) % 256)).toString('base64') })).toEqual({ status: 422, code: 'E_CIPHERTEXT' });
    const { header, sections } = readContainer<object>(result, 'result');
    const cut = writeContainer('result', header, [sections[0]!.subarray(0, sections[0]!.length - 100), ...sections.slice(1)]);
    expect(await signed({ ...request, idempotencyKey: 'truncated-inside-1', result: Buffer.from(cut).toString('base64') })).toEqual({ status: 201, code: undefined });
    accepted.add('truncated-inside-1');
    // A result computed under other parameters (192-bit) with a key of its own.
    const he192 = HeContext.create(await nodeSeal(), planParameters({ scheme: 'ckks', security: 192, depth: classifierDepth(head), precisionBits: 25 }));
    const owner192 = OwnerKeys.generate(he192, planClassifier(he192, head).rotationSteps);
    const keys192 = DeviceKeys.load(he192, owner192.deviceKeyBytes());
    const clf192 = EncryptedClassifier.load(he192, keys192, await (await import('../../src/he')).encryptClassifier(he192, owner192, head));
    const foreign = Buffer.from(clf192.evaluate(x).result).toString('base64');
    [clf192, keys192, owner192, he192].forEach((o) => o.dispose());
    expect(await signed({ ...request, idempotencyKey: 'foreign-1', result: foreign })).toEqual({ status: 201, code: undefined });
    accepted.add('foreign-1');
    const failed = (await decrypted(ws.store, { deviceId: device.deviceId })).filter((r) => r.state === 'failed');
    expect(failed.map((r) => r.idempotencyKey)).toEqual(['truncated-inside-1', 'foreign-1']);
    for (const r of failed) expect(r).toMatchObject({ label: null, scores: [], error: expect.stringMatching(/^E_CIPHERTEXT: the encrypted result was refused \(E_[A-Z]+\): ./) });
    await expect.poll(async () => (await ws.store.listAudit()).filter((e) => e.event === 'inference.failed').map((e) => e.details.resultId)).toEqual(failed.map((r) => r.id));
    const big = Buffer.alloc(3 * 1024 * 1024, 65);
    expect(await raw(big, await device.signedHeaders(big))).toEqual({ status: 413, code: 'E_TOO_LARGE' });
    expect(await raw(Buffer.from(body), headers)).toMatchObject({ status: 201 });
    accepted.add('bad-requests-1');
  });

  it('enrollment tokens work once; revoked devices are refused', async () => {
    await expect(NodeDevice.enroll(url, token)).rejects.toThrow(/401/);
    const enroll = (b: unknown) => fetch(`${url}/api/v1/devices/enroll`, { method: 'POST', body: JSON.stringify(b) }).then((r) => r.status);
    const fresh = await addDevice(ws, 'kiosk-3');
    expect(await enroll({ token: fresh.token, publicKey: { kty: 'EC', crv: 'P-256', x: 'A'.repeat(43), y: 'B'.repeat(43) } })).toBe(400);
    expect(await enroll({ token: fresh.token, publicKey: { kty: 'RSA', n: 'x', e: 'AQAB' } })).toBe(400);
    expect(await enroll('nonsense')).toBe(400);
    const kiosk3 = await NodeDevice.enroll(url, fresh.token);
    await ws.store.revokeDevice(kiosk3.deviceId);
    const bytes = new TextEncoder().encode('{}');
    const r = await fetch(`${url}/api/v1/inferences`, { method: 'POST', headers: await kiosk3.signedHeaders(bytes), body: Buffer.from(bytes) });
    expect(r.status).toBe(403);
  });

  it('operators need their token; they see labels, live, and the cockpit', async () => {
    expect((await fetch(`${url}/api/v1/results`)).status).toBe(401);
    expect((await fetch(`${url}/api/v1/results`, { headers: { authorization: 'Bearer wrong-token-123456' } })).status).toBe(401);
    const authorized = { authorization: `Bearer ${operatorToken(ws.dataDir, {})}` };
    expect((await fetch(`${url}/api/v1/results?deviceId=`, { headers: authorized })).status).toBe(400);
    expect((await fetch(`${url}/api/v1/results?limit=-1`, { headers: authorized })).status).toBe(400);
    expect((await fetch(`${url}/api/v1/results?state=done`, { headers: authorized })).status).toBe(400);
    const auth = { authorization: `Bearer ${operatorToken(ws.dataDir, {})}` };
    const listed = (await (await fetch(`${url}/api/v1/results?limit=5&state=decrypted`, { headers: auth })).json()) as {
      results: { label: number; noiseBudgetBits: number | null; state: string }[];
    };
    expect(listed.results).toHaveLength(5);
    expect(listed.results.map((r) => r.state)).toEqual(Array(5).fill('decrypted'));
    expect(typeof listed.results[0]!.label).toBe('number');
    // CKKS results have no noise budget.
    expect(listed.results.map((r) => r.noiseBudgetBits)).toEqual([null, null, null, null, null]);
    const stream = await fetch(`${url}/api/v1/results/stream`, { headers: auth });
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
    const x = makeInputs(256, 1, 'realistic', 77)[0]!;
    await post(x, 'streamed-0001');
    accepted.add('streamed-0001');
    let text = '';
    while (!text.includes('event: result')) text += (await reader.read()).value ?? '';
    await reader.cancel();
    const event = JSON.parse(text.split('data: ')[1]!.split('\n')[0]!) as { label: number; state: string };
    expect(event).toMatchObject({ state: 'decrypted', label: argmax(floatEvaluate(head, x)) });
    const cockpit = await fetch(`${url}/cockpit`);
    expect(await cockpit.text()).toMatch(/sealed-edge cockpit[\s\S]*<th>noise budget<\/th>/);
  });

  it('serves the static bundle with the isolation headers and nothing outside its directory', async () => {
    const manifest = await fetch(`${url}/models/test-head/v1/manifest.json`);
    expect(manifest.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
    expect(manifest.headers.get('cross-origin-opener-policy')).toBe('same-origin');
    expect((await manifest.json()) as unknown).toMatchObject({ modelId: 'test-head', version: 1 });
    expect((await fetch(`${url}/models/../data/sealed-edge.db`)).status).toBe(404);
    expect((await fetch(`${url}/%2e%2e/data/kek.key`)).status).toBe(404);
    expect((await fetch(`${url}/api/v1/nothing`)).status).toBe(404);
  });

  it('retired versions are refused; rate limits apply per device', async () => {
    const x = makeInputs(256, 1, 'random', 12)[0]!;
    const limited = await startBackend(ws, { rateLimit: { burst: 2, perSecond: 0.001 } });
    const { body, headers } = await device.request(device.classify(x), 'rate-limited-1');
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      statuses.push((await fetch(`${limited.url}/api/v1/inferences`, { method: 'POST', headers, body: Buffer.from(body) })).status);
    }
    accepted.add('rate-limited-1');
    expect(statuses).toEqual([201, 200, 429]);
    await limited.backend.close();
    await limited.decryption.dispose();
    await ws.store.retireModelVersion('test-head', 1);
    const late = await device.request(device.classify(x), 'after-retire-1');
    expect((await device.post(late.body, late.headers)).status).toBe(410);
  });

  it('afterwards the database is sound and holds exactly the accepted results', async () => {
    expect(await ws.store.integrityCheck()).toBe('ok');
    const stored = await decrypted(ws.store);
    expect(new Set(stored.map((r) => r.idempotencyKey))).toEqual(accepted);
    expect(stored).toHaveLength(accepted.size);
    expect(readFileSync(join(ws.dataDir, 'kek.key'), 'utf8').length).toBeGreaterThan(40);
  });
});
