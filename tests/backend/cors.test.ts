// CORS on the backend: a kiosk served from another origin (a static host) may call the
// device API, and only the device API, from the origins the owner configured.
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend, kioskOrigin } from '../../src/backend/server';
import { addDevice, openWorkspace, operatorToken, type Workspace } from '../../src/protect/workspace';
import { startBackend } from './helpers';

const KIOSK = 'http://127.0.0.1:5173';
const SECOND_KIOSK = 'https://kiosk.example';
const OTHER = 'https://evil.example';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request with exactly these headers (Node's fetch would add or refuse some, such as Origin). */
function call(url: string, method: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const corsHeaders = (a: Answer) => Object.keys(a.headers).filter((h) => h.startsWith('access-control-')).sort();

const preflight = (url: string, origin: string, method = 'POST', headers = 'content-type,x-device-id,x-signature') =>
  call(url, 'OPTIONS', { origin, 'access-control-request-method': method, 'access-control-request-headers': headers });

function publicJwk(): JsonWebKey {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  return { kty, crv, x, y };
}

describe('kioskOrigin', () => {
  it('takes an origin as a browser sends it and normalizes case, default port and a trailing /', () => {
    expect(kioskOrigin('http://127.0.0.1:5173')).toBe('http://127.0.0.1:5173');
    expect(kioskOrigin('https://Kiosk.Example/')).toBe('https://kiosk.example');
    expect(kioskOrigin('https://kiosk.example:443')).toBe('https://kiosk.example');
    expect(kioskOrigin('http://[::1]:8081')).toBe('http://[::1]:8081');
  });

  it('refuses what is not one exact origin, saying why', () => {
    const refusals: [string, RegExp][] = [
      ['https://kiosk.example/edge/', /no path, query, fragment/],
      ['https://kiosk.example?x=1', /no path, query, fragment/],
      ['https://kiosk.example#top', /no path, query, fragment/],
      ['https://user:pw@kiosk.example', /no path, query, fragment or user name/],
      ['kiosk.example', /no scheme/],
      ['localhost:8080', /no scheme/],
      ['*', /wildcards are not allowed/],
      ['https://*.example', /wildcards are not allowed/],
      ['null', /no scheme/],
      ['', /no scheme/],
      ['ftp://kiosk.example', /scheme must be http or https/],
      ['https://exa mple', /host is not valid/],
    ];
    for (const [value, reason] of refusals) expect(() => kioskOrigin(value), value).toThrow(reason);
    expect(() => kioskOrigin('https://kiosk.example/edge/')).toThrow(/^'https:\/\/kiosk\.example\/edge\/' is not a kiosk origin \(scheme:\/\/host\[:port\]/);
  });
});

describe('backend CORS', () => {
  let ws: Workspace;
  let backend: Backend;
  let decryption: DecryptionAgent;
  let url: string;

  beforeAll(async () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-cors-'));
    mkdirSync(join(root, 'public'));
    writeFileSync(join(root, 'public', 'index.html'), '<!doctype html>');
    ws = await openWorkspace(join(root, 'data'), {});
    ({ backend, decryption, url } = await startBackend(ws, { staticDir: join(root, 'public'), kioskOrigins: [`${KIOSK}/`, SECOND_KIOSK] }));
  });

  afterAll(async () => {
    await backend?.close();
    await decryption?.dispose();
    await ws?.close();
  });

  it('answers a configured kiosk origin’s preflight of the device API with exactly what the kiosk sends', async () => {
    for (const path of ['/api/v1/devices/enroll', '/api/v1/inferences']) {
      for (const origin of [KIOSK, SECOND_KIOSK]) {
        const answer = await preflight(`${url}${path}`, origin);
        expect(answer.status, `${origin} ${path}`).toBe(204);
        expect(answer.headers).toMatchObject({
          'access-control-allow-origin': origin,
          'access-control-allow-methods': 'POST',
          'access-control-allow-headers': 'content-type, x-device-id, x-signature',
          'access-control-max-age': '600',
          vary: 'Origin',
        });
        // Devices sign their requests: no cookies, so credentials are never allowed.
        expect(answer.headers['access-control-allow-credentials']).toBeUndefined();
      }
    }
    // A preflight that asks for fewer headers (or none) is answered too.
    expect((await preflight(`${url}/api/v1/devices/enroll`, KIOSK, 'POST', 'Content-Type')).status).toBe(204);
    expect((await call(`${url}/api/v1/devices/enroll`, 'OPTIONS', { origin: KIOSK, 'access-control-request-method': 'POST' })).status).toBe(204);
  });

  it('refuses other origins’ preflights, other methods and other headers with 403 and no CORS header', async () => {
    const refused: [Promise<Answer>, RegExp][] = [
      [preflight(`${url}/api/v1/devices/enroll`, OTHER), /origin https:\/\/evil\.example is not a kiosk origin of this backend/],
      [preflight(`${url}/api/v1/devices/enroll`, 'null'), /origin null is not a kiosk origin/],
      [preflight(`${url}/api/v1/inferences`, 'http://127.0.0.1:5174'), /is not a kiosk origin/],
      [call(`${url}/api/v1/inferences`, 'OPTIONS', {}), /origin \(none\) is not a kiosk origin/],
      [preflight(`${url}/api/v1/inferences`, KIOSK, 'PUT'), /takes POST, not PUT/],
      [preflight(`${url}/api/v1/inferences`, KIOSK, 'POST', 'content-type, authorization'), /does not take the header\(s\) authorization/],
    ];
    for (const [pending, message] of refused) {
      const answer = await pending;
      expect(answer.status).toBe(403);
      expect(corsHeaders(answer)).toEqual([]);
      expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'E_CORS', message: expect.stringMatching(message) } });
    }
  });

  it('lets a configured kiosk origin read the device API’s answers, errors included; other origins get nothing to read', async () => {
    const { token } = await addDevice(ws, 'cross-origin-kiosk');
    const enroll = (origin: string, body: unknown) =>
      call(`${url}/api/v1/devices/enroll`, 'POST', { origin, 'content-type': 'application/json' }, JSON.stringify(body));
    const enrolled = await enroll(KIOSK, { token, publicKey: publicJwk() });
    expect(enrolled.status).toBe(201);
    expect(enrolled.headers).toMatchObject({ 'access-control-allow-origin': KIOSK, vary: 'Origin' });
    expect(corsHeaders(enrolled)).toEqual(['access-control-allow-origin']);
    // The token is used: the refusal carries the header so the kiosk can show why.
    const reused = await enroll(SECOND_KIOSK, { token, publicKey: publicJwk() });
    expect(reused.status).toBe(401);
    expect(reused.headers['access-control-allow-origin']).toBe(SECOND_KIOSK);
    const unknownDevice = await call(`${url}/api/v1/inferences`, 'POST', { origin: KIOSK, 'x-device-id': 'nobody', 'content-type': 'application/json' }, '{}');
    expect(unknownDevice.status).toBe(401);
    expect(unknownDevice.headers['access-control-allow-origin']).toBe(KIOSK);
    // Another origin's request is answered as any request is (devices authenticate by
    // token and signature), but without the header its browser withholds the answer.
    const other = await enroll(OTHER, { token: 'x'.repeat(32), publicKey: publicJwk() });
    expect(other.status).toBe(401);
    expect(corsHeaders(other)).toEqual([]);
    expect(other.headers.vary).toBe('Origin');
  });

  it('never answers CORS on operator routes, the cockpit, health or static files, even for a kiosk origin', async () => {
    const operator = { origin: KIOSK, authorization: `Bearer ${operatorToken(ws.dataDir, {})}` };
    for (const path of ['/api/v1/results', '/api/v1/devices', '/api/v1/health', '/cockpit', '/index.html']) {
      const answer = await call(`${url}${path}`, 'GET', operator);
      expect(answer.status, path).toBe(200);
      expect(corsHeaders(answer), path).toEqual([]);
      const pre = await preflight(`${url}${path}`, KIOSK, 'GET', 'authorization');
      expect(pre.status, path).toBe(403);
      expect(corsHeaders(pre), path).toEqual([]);
      expect(JSON.parse(pre.body)).toMatchObject({ error: { code: 'E_CORS', message: `${path} answers no cross-origin requests (only the device API does)` } });
    }
  });

  it('without kiosk origins no origin is allowed; a bad one is refused when the backend is made', async () => {
    const plain = await startBackend(ws);
    try {
      const answer = await preflight(`${plain.url}/api/v1/devices/enroll`, KIOSK);
      expect(answer.status).toBe(403);
      expect(corsHeaders(answer)).toEqual([]);
    } finally {
      await plain.backend.close();
      await plain.decryption.dispose();
    }
    expect(() => new Backend({ store: ws.store, decryption, operatorToken: 'x'.repeat(16), kioskOrigins: ['*'] })).toThrow(/'\*' is not a kiosk origin/);
  });
});

describe('sealed-edge serve|start --kiosk-origin', () => {
  it('refuses a value that is not an origin before opening anything, with exit code 2', () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-cors-cli-'));
    const data = join(root, 'data');
    for (const [value, reason] of [
      ['https://kiosk.example/edge', /an origin has no path, query, fragment or user name/],
      ['kiosk.example', /it has no scheme:\/\//],
      ['*', /wildcards are not allowed/],
    ] as const) {
      const r = spawnSync(process.execPath, ['bin/sealed-edge.mjs', 'serve', '--port', '0', '--data', data, '--kiosk-origin', KIOSK, '--kiosk-origin', value], {
        encoding: 'utf8',
        env: { ...process.env, SEALED_EDGE_KEK: '5a'.repeat(32) },
        timeout: 60_000,
      });
      expect(r.status, value).toBe(2);
      expect(r.stderr).toMatch(new RegExp(`^sealed-edge serve: --kiosk-origin: '${value.replace(/[.*]/g, '\\$&')}' is not a kiosk origin`));
      expect(r.stderr).toMatch(reason);
    }
    expect(existsSync(data)).toBe(false);
  });

  it('start refuses one too, before protecting or building anything', () => {
    const root = mkdtempSync(join(tmpdir(), 'sealed-edge-cors-start-'));
    const dirs = ['--data', join(root, 'data'), '--out', join(root, 'models'), '--dist', join(root, 'dist')];
    const r = spawnSync(process.execPath, ['bin/sealed-edge.mjs', 'start', '--port', '0', ...dirs, '--kiosk-origin', 'https://kiosk.example/index.html'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^sealed-edge start: --kiosk-origin: 'https:\/\/kiosk\.example\/index\.html' is not a kiosk origin .*: an origin has no path/);
    expect(existsSync(join(root, 'data'))).toBe(false);
    expect(existsSync(join(root, 'models'))).toBe(false);
  });
});
