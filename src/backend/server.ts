import { createHash, createPublicKey, type KeyObject, randomBytes, timingSafeEqual, verify } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { containerScheme, HeError } from '../he';
import { isModelId } from '../model/bundle';
import { COCKPIT_HTML } from './cockpit';
import type { Decryptor } from './decrypt';
import { DecryptionLoop } from './decryption-loop';
import { OperatorStreams } from './operator-streams';
import { checkRateLimit, defaultRateLimitScope, rateLimiter, type RateLimiter, type RateLimitScope } from './rate-limit';
import { StoreError, type StoreErrorCode } from '../store/errors';
import type { DeviceRecord, ResultQuery, ResultRecord, ResultState, Store } from '../store/types';

/** Store refusals that a request caused, as HTTP statuses; the rest are 500s. */
const STORE_STATUS: Partial<Record<StoreErrorCode, number>> = { E_INVALID: 400, E_NOT_FOUND: 404, E_CONFLICT: 409, E_BUSY: 503, E_UNAVAILABLE: 503 };
/** How long an idle keep-alive connection stays open: longer than a load balancer's idle timeout (commonly 60 s). */
const KEEP_ALIVE_MS = 65_000;
/** How often (at most) an unavailable database is reported on stderr: once per outage window, not once per request. */
const UNAVAILABLE_LOG_MS = 5000;

/** Every error a client sees: an HTTP status, a stable code and a message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface BackendOptions {
  store: Store;
  /** Decrypts the results this instance claims: on its event loop (DecryptionAgent) or in worker threads (DecryptionPool). */
  decryption: Decryptor;
  /** Names this instance's claims on pending results (default: host, process id and a random suffix). */
  instanceId?: string;
  /** A claim older than this is taken again (default DEFAULT_CLAIM_TIMEOUT_MS). */
  claimTimeoutMs?: number;
  /** How often pending results are looked for besides when this instance stores one (default DEFAULT_POLL_MS). */
  pollMs?: number;
  /** Bearer token operators present; compared in constant time. */
  operatorToken: string;
  /** Directory served as static files (the kiosk and bundles), with COOP/COEP. */
  staticDir?: string;
  /**
   * Origins of kiosks served elsewhere (a static host: `https://kiosk.example`) that may
   * call the device API across origins (CORS); each must be what kioskOrigin() accepts.
   */
  kioskOrigins?: readonly string[];
  /** Largest request body accepted, in bytes. */
  maxBodyBytes?: number;
  /** Per-device token bucket: burst size and refill per second. */
  rateLimit?: { burst: number; perSecond: number };
  /**
   * Where the buckets live (rate-limit.ts): 'store', shared by every instance on the
   * database; 'instance', this process's memory. Default: 'store' on PostgreSQL, where
   * several instances serve one database; 'instance' on SQLite, which serves one.
   */
  rateLimitScope?: RateLimitScope;
  now?: () => number;
}

const DEFAULT_MAX_BODY = 2 * 1024 * 1024;
const RESULT_STATES: readonly ResultState[] = ['pending', 'decrypted', 'failed'];
const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{8,128}$/;

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** The request body a device posts to /api/v1/inferences, signed as raw bytes. */
interface InferenceRequest {
  modelId: string;
  version: number;
  keyId: string;
  idempotencyKey: string;
  /** Base64 of the encrypted result container. */
  result: string;
  /** When the device captured the frame, by its clock (optional): an ISO 8601 UTC time. */
  capturedAt?: string;
}

/** The cockpit's window: at most this far back. */
const MAX_STATS_WINDOW_MS = 31 * 24 * 3600 * 1000;

/**
 * An ISO 8601 time with a time zone, from a device or an operator, as Date.toISOString()
 * writes it; undefined when it is not one. Any year from 1970 is taken: a device whose
 * clock is wrong still delivers its results (the cockpit shows the odd capture time).
 */
function isoTime(value: unknown): string | undefined {
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(value)) return undefined;
  const ms = Date.parse(value);
  if (!Number.isFinite(ms) || ms < 0 || ms >= Date.UTC(10000, 0, 1)) return undefined;
  return new Date(ms).toISOString();
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': bytes.length, 'cache-control': 'no-store', ...headers });
  res.end(bytes);
}

async function readBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new ApiError(413, 'E_TOO_LARGE', `the body is ${declared} bytes; the limit is ${limit}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new ApiError(413, 'E_TOO_LARGE', `the body exceeds the limit of ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    if (!isUtf8(bytes)) throw new TypeError('not UTF-8');
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    throw new ApiError(400, 'E_BAD_REQUEST', 'the body is not UTF-8 JSON');
  }
}

/** Devices' public keys as key objects, by their JWK's point: made once per key rather than once per request. */
const deviceKeys = new Map<string, KeyObject>();
/** The most key objects kept (the map starts again when it is full). */
const MAX_DEVICE_KEYS = 100_000;

function deviceKey(jwk: JsonWebKey): KeyObject {
  const point = `${jwk.x}.${jwk.y}`;
  let key = deviceKeys.get(point);
  if (key === undefined) {
    key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y } as import('node:crypto').JsonWebKey, format: 'jwk' });
    if (deviceKeys.size >= MAX_DEVICE_KEYS) deviceKeys.clear();
    deviceKeys.set(point, key);
  }
  return key;
}

/** Checks an ECDSA P-256 / SHA-256 signature in WebCrypto's raw r‖s form over `body`. */
function signatureValid(device: DeviceRecord, body: Uint8Array, signature: string | undefined): boolean {
  if (device.publicKeyJwk === null || typeof signature !== 'string') return false;
  const sig = Buffer.from(signature, 'base64');
  if (sig.length !== 64) return false;
  try {
    return verify('sha256', body, { key: deviceKey(device.publicKeyJwk), dsaEncoding: 'ieee-p1363' }, sig);
  } catch {
    return false;
  }
}

/** A public key a device may register: an EC P-256 JWK with its public part only. */
export function checkDeviceKey(value: unknown): JsonWebKey {
  const jwk = value as JsonWebKey | null;
  const b64url = (v: unknown) => typeof v === 'string' && /^[A-Za-z0-9_-]{43}$/.test(v);
  if (jwk === null || typeof jwk !== 'object' || jwk.kty !== 'EC' || jwk.crv !== 'P-256' || !b64url(jwk.x) || !b64url(jwk.y)) {
    throw new ApiError(400, 'E_BAD_KEY', 'publicKey must be an EC P-256 public JWK (kty, crv, x, y)');
  }
  if (jwk.d !== undefined) throw new ApiError(400, 'E_BAD_KEY', 'publicKey must not contain the private part');
  try {
    createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y } as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch {
    throw new ApiError(400, 'E_BAD_KEY', 'publicKey is not a point on P-256');
  }
  return { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y };
}

/** The request's fields, checked, with its result's bytes decoded. */
function checkInference(value: unknown): InferenceRequest & { ciphertext: Buffer } {
  const r = value as Partial<InferenceRequest> | null;
  if (r === null || typeof r !== 'object') throw new ApiError(400, 'E_BAD_REQUEST', 'the body must be a JSON object');
  if (!isModelId(r.modelId)) throw new ApiError(400, 'E_BAD_REQUEST', 'modelId is missing or malformed');
  if (!Number.isInteger(r.version) || (r.version as number) < 1) throw new ApiError(400, 'E_BAD_REQUEST', 'version must be a positive integer');
  if (typeof r.keyId !== 'string' || !/^[0-9a-f]{32}$/.test(r.keyId)) throw new ApiError(400, 'E_BAD_REQUEST', 'keyId must be 32 hex digits');
  if (typeof r.idempotencyKey !== 'string' || !IDEMPOTENCY_KEY.test(r.idempotencyKey)) {
    throw new ApiError(400, 'E_BAD_REQUEST', 'idempotencyKey must be 8–128 characters of A–Z, a–z, 0–9, ".", "_", ":", "-"');
  }
  const ciphertext = typeof r.result === 'string' ? base64Bytes(r.result) : undefined;
  if (ciphertext === undefined) throw new ApiError(400, 'E_BAD_REQUEST', 'result must be the base64 of an encrypted result');
  if (r.capturedAt !== undefined) {
    const at = isoTime(r.capturedAt);
    if (at === undefined) throw new ApiError(400, 'E_BAD_REQUEST', 'capturedAt must be an ISO 8601 time with a time zone (such as 2026-03-01T12:00:00.000Z), from 1970');
    return { ...(r as InferenceRequest), capturedAt: at, ciphertext };
  }
  return { ...(r as InferenceRequest), ciphertext };
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The bytes of a base64 string, or undefined when it is not base64 (BASE64). Canonical
 * base64, what devices send, is decoded once and recognised by encoding the bytes back
 * (several times faster than the pattern over ~155 KB); any other string goes through
 * the pattern, so the same strings are accepted either way.
 */
function base64Bytes(value: string): Buffer | undefined {
  const bytes = Buffer.from(value, 'base64');
  if (bytes.length > 0 && bytes.toString('base64') === value) return bytes;
  return BASE64.test(value) ? bytes : undefined;
}

/** What a device gets back: proof of receipt, never a label or a score. */
function receiptOf(result: Pick<ResultRecord, 'deviceId' | 'modelId' | 'version' | 'idempotencyKey' | 'bodySha256' | 'receivedAt'> & { id?: number }): Record<string, unknown> {
  return {
    resultId: result.id,
    deviceId: result.deviceId,
    modelId: result.modelId,
    version: result.version,
    idempotencyKey: result.idempotencyKey,
    bodySha256: result.bodySha256,
    receivedAt: result.receivedAt,
  };
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.sig': 'application/octet-stream',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.y4m': 'video/x-yuv4mpeg',
  '.idx': 'application/octet-stream',
};

/** The device API: the only routes a kiosk on another origin calls, and the only ones that answer CORS. */
const DEVICE_ROUTES: ReadonlySet<string> = new Set(['/api/v1/devices/enroll', '/api/v1/inferences']);
/** The request headers a kiosk sends the device API that CORS does not allow by itself. */
const DEVICE_HEADERS = ['content-type', 'x-device-id', 'x-signature'];

/**
 * A kiosk origin as browsers send it in `Origin`: http(s)://host[:port], lower case, no
 * default port; a trailing '/' is accepted and dropped. Throws on anything else (a path,
 * a query, no scheme, '*', 'null', credentials): each kiosk origin is named exactly, as a
 * pattern would let other sites read the device API's answers.
 */
export function kioskOrigin(value: string): string {
  const refuse = (why: string): never => {
    throw new Error(`'${value}' is not a kiosk origin (scheme://host[:port], such as https://kiosk.example): ${why}`);
  };
  if (value.includes('*')) refuse('wildcards are not allowed; name each origin');
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined || !value.includes('//')) refuse('it has no scheme://');
  if (scheme !== 'http' && scheme !== 'https') refuse('the scheme must be http or https');
  if (!/^https?:\/\/[^/?#@]+\/?$/i.test(value)) refuse('an origin has no path, query, fragment or user name');
  try {
    return new URL(value).origin;
  } catch {
    return refuse('the host is not valid');
  }
}

/** Headers that make the page cross-origin isolated (onnxruntime-web's threads need it). */
const ISOLATION = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
};

/**
 * The decryption backend's HTTP API: devices enroll and post encrypted results; operators
 * read labels (JSON, server-sent events, the cockpit page); a static directory is served
 * for the demo. Nothing decrypted is ever sent to a device.
 *
 * Ingest and decryption are apart: a device's result is authenticated, size- and
 * rate-checked, made idempotent and stored pending with its ciphertext before the device
 * gets its receipt; this instance's DecryptionLoop (woken at once) claims pending results,
 * from any instance sharing the store, decrypts them and writes each label once; the
 * operators' streams of every instance announce each result when it is written, whichever
 * instance wrote it (OperatorStreams, from the store's feed). Instances keep no state of
 * their own: on PostgreSQL any number of them serve behind any HTTP load balancer.
 */
export class Backend {
  readonly server: Server;
  private readonly streams: OperatorStreams;
  private readonly maxBody: number;
  private readonly rate: { burst: number; perSecond: number };
  private readonly limiter: RateLimiter;
  private readonly now: () => number;
  private unavailableLoggedAt = Number.NEGATIVE_INFINITY;
  private readonly kioskOrigins: ReadonlySet<string>;
  readonly decryptions: DecryptionLoop;

  constructor(private readonly options: BackendOptions) {
    this.kioskOrigins = new Set((options.kioskOrigins ?? []).map(kioskOrigin));
    this.maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
    this.rate = checkRateLimit(options.rateLimit ?? { burst: 20, perSecond: 10 });
    this.now = options.now ?? Date.now;
    this.limiter = rateLimiter(options.rateLimitScope ?? defaultRateLimitScope(options.store), options.store, this.rate, this.now);
    this.streams = new OperatorStreams(options.store, forOperator);
    this.decryptions = new DecryptionLoop({
      store: options.store,
      decryptor: options.decryption,
      worker: options.instanceId ?? `${hostname().replace(/[^\x21-\x7e]/g, '_').slice(0, 100)}-${process.pid}-${randomBytes(4).toString('hex')}`,
      claimTimeoutMs: options.claimTimeoutMs,
      pollMs: options.pollMs,
    });
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => this.fail(res, error));
    });
    // Behind a load balancer, an idle connection must be closed by the balancer, never by
    // the instance while the balancer sends a request on it (a spurious 502): the instance
    // keeps idle connections longer than balancers usually do (60 s).
    this.server.keepAliveTimeout = KEEP_ALIVE_MS;
    this.server.headersTimeout = KEEP_ALIVE_MS + 1000;
  }

  /**
   * Opens the store's feed of written results (for the operators' streams), listens, and
   * starts decrypting pending results. Rejects (StoreError E_UNAVAILABLE) when the feed
   * cannot be opened, or with the listening error.
   */
  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    await this.streams.start();
    try {
      return await new Promise((done, reject) => {
        this.server.once('error', reject);
        this.server.listen(port, host, () => {
          this.server.off('error', reject);
          this.decryptions.start();
          const address = this.server.address();
          done(typeof address === 'object' && address !== null ? address.port : port);
        });
      });
    } catch (error) {
      await this.streams.close();
      throw error;
    }
  }

  /** Stops listening and claiming; resolves once the decryptions under way are written. */
  async close(): Promise<void> {
    await this.decryptions.stop();
    await this.streams.close();
    await new Promise<void>((done) => {
      this.server.close(() => done());
      this.server.closeAllConnections();
    });
  }

  private fail(res: ServerResponse, error: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (error instanceof ApiError) {
      send(res, error.status, { error: { code: error.code, message: error.message } }, error.status === 413 ? { connection: 'close' } : {});
      return;
    }
    if (error instanceof StoreError && error.code === 'E_UNAVAILABLE') {
      // The database is away: said plainly to the client (without the server's address),
      // reported on stderr once per window. A write under way was committed whole or not
      // at all; a device retries with the same idempotency key.
      const at = Date.now();
      if (at - this.unavailableLoggedAt >= UNAVAILABLE_LOG_MS) {
        this.unavailableLoggedAt = at;
        process.stderr.write(`sealed-edge serve: the database is unavailable (answering 503 until it is back): ${error.message}\n`);
      }
      send(res, 503, { error: { code: 'E_UNAVAILABLE', message: 'the database is unavailable; retry later (a result is stored once per idempotency key)' } }, { 'retry-after': '1' });
      return;
    }
    if (error instanceof StoreError && STORE_STATUS[error.code] !== undefined) {
      send(res, STORE_STATUS[error.code]!, { error: { code: error.code, message: error.message } });
      return;
    }
    process.stderr.write(`sealed-edge serve: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    send(res, 500, { error: { code: 'E_INTERNAL', message: 'internal error' } });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://backend');
    const route = `${req.method} ${url.pathname}`;
    if (req.method === 'OPTIONS') return this.preflight(req, res, url.pathname);
    if (DEVICE_ROUTES.has(url.pathname)) this.allowOrigin(req, res);
    switch (route) {
      case 'POST /api/v1/devices/enroll':
        return this.enroll(req, res);
      case 'POST /api/v1/inferences':
        return this.inference(req, res);
      case 'GET /api/v1/results':
        this.operator(req, url);
        return send(res, 200, { results: (await this.options.store.listResults(this.listOptions(url))).map(forOperator) });
      case 'GET /api/v1/results/stream':
        this.operator(req, url);
        return this.streams.add(res);
      case 'GET /api/v1/stats':
        this.operator(req, url);
        return send(res, 200, await this.options.store.resultStats({ since: this.statsSince(url), nowMs: Math.floor(this.now()) }));
      case 'GET /api/v1/devices':
        this.operator(req, url);
        return send(res, 200, { devices: await this.options.store.listDevices() });
      case 'GET /cockpit':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', ...ISOLATION });
        res.end(COCKPIT_HTML);
        return;
      case 'GET /api/v1/health':
        return send(res, 200, { ok: true, schemaVersion: await this.options.store.schemaVersion() });
    }
    if (url.pathname.startsWith('/api/')) throw new ApiError(404, 'E_NOT_FOUND', `no route ${route}`);
    if ((req.method === 'GET' || req.method === 'HEAD') && this.options.staticDir !== undefined) return this.serveStatic(url.pathname, req, res);
    throw new ApiError(404, 'E_NOT_FOUND', `no route ${route}`);
  }

  /**
   * CORS, on the device API only: an answer to a configured kiosk origin carries
   * Access-Control-Allow-Origin (errors too, so the kiosk reads their codes); any other
   * origin's browser is given nothing to read. Devices authenticate by signature, not by
   * cookie, so credentials are never allowed.
   */
  private allowOrigin(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('vary', 'Origin');
    const origin = req.headers.origin;
    if (origin !== undefined && this.kioskOrigins.has(origin)) res.setHeader('access-control-allow-origin', origin);
  }

  /** A CORS preflight: answered (204) for a configured kiosk origin's POST to the device API; 403 for anything else. */
  private preflight(req: IncomingMessage, res: ServerResponse, pathname: string): void {
    const origin = req.headers.origin;
    if (!DEVICE_ROUTES.has(pathname)) throw new ApiError(403, 'E_CORS', `${pathname} answers no cross-origin requests (only the device API does)`);
    res.setHeader('vary', 'Origin');
    if (origin === undefined || !this.kioskOrigins.has(origin)) {
      throw new ApiError(403, 'E_CORS', `origin ${origin ?? '(none)'} is not a kiosk origin of this backend (sealed-edge serve --kiosk-origin)`);
    }
    const method = req.headers['access-control-request-method'];
    if (method !== 'POST') throw new ApiError(403, 'E_CORS', `${pathname} takes POST, not ${method ?? '(no method)'}`);
    const headers = (req.headers['access-control-request-headers'] ?? '').split(',').map((h) => h.trim().toLowerCase()).filter((h) => h !== '');
    const extra = headers.filter((h) => !DEVICE_HEADERS.includes(h));
    if (extra.length > 0) throw new ApiError(403, 'E_CORS', `the device API does not take the header(s) ${extra.join(', ')}`);
    res.writeHead(204, {
      'access-control-allow-origin': origin,
      'access-control-allow-methods': 'POST',
      'access-control-allow-headers': DEVICE_HEADERS.join(', '),
      'access-control-max-age': '600',
      'cache-control': 'no-store',
    });
    res.end();
  }

  /** The results API's filters: deviceId, modelId (and version), state, since/until (receipt time), afterId, limit, order. */
  private listOptions(url: URL): ResultQuery {
    const int = (name: string, min: number, max: number) => {
      const raw = url.searchParams.get(name);
      if (raw === null) return undefined;
      const n = Number(raw);
      if (!/^\d+$/.test(raw) || n < min || n > max) throw new ApiError(400, 'E_BAD_REQUEST', `${name} must be an integer from ${min} to ${max}`);
      return n;
    };
    const time = (name: string) => {
      const raw = url.searchParams.get(name);
      if (raw === null) return undefined;
      const at = isoTime(raw);
      if (at === undefined) throw new ApiError(400, 'E_BAD_REQUEST', `${name} must be an ISO 8601 time with a time zone, such as 2026-03-01T12:00:00Z`);
      return at;
    };
    const deviceId = url.searchParams.get('deviceId') ?? undefined;
    const modelId = url.searchParams.get('modelId') ?? undefined;
    if (modelId !== undefined && !isModelId(modelId)) throw new ApiError(400, 'E_BAD_REQUEST', 'modelId is malformed');
    const version = int('version', 1, 1_000_000);
    if (version !== undefined && modelId === undefined) throw new ApiError(400, 'E_BAD_REQUEST', 'version filters a model: give modelId too');
    const state = url.searchParams.get('state') ?? undefined;
    if (state !== undefined && !RESULT_STATES.includes(state as ResultState)) {
      throw new ApiError(400, 'E_BAD_REQUEST', `state must be one of ${RESULT_STATES.join(', ')}`);
    }
    const order = url.searchParams.get('order') ?? undefined;
    if (order !== undefined && order !== 'asc' && order !== 'desc') throw new ApiError(400, 'E_BAD_REQUEST', 'order must be asc or desc');
    return {
      deviceId,
      modelId,
      version,
      state: state as ResultState | undefined,
      since: time('since'),
      until: time('until'),
      afterId: int('afterId', 0, Number.MAX_SAFE_INTEGER),
      limit: int('limit', 0, 10_000) ?? 1000,
      order: order as 'asc' | 'desc' | undefined,
    };
  }

  /** The stats window's start: ?since= (at most 31 days back), else the last hour. */
  private statsSince(url: URL): string {
    const raw = url.searchParams.get('since');
    const now = this.now();
    if (raw === null) return new Date(now - 3600_000).toISOString();
    const at = isoTime(raw);
    if (at === undefined || Date.parse(at) < now - MAX_STATS_WINDOW_MS) {
      throw new ApiError(400, 'E_BAD_REQUEST', 'since must be an ISO 8601 time with a time zone, at most 31 days ago');
    }
    return at;
  }

  private operator(req: IncomingMessage, url: URL): void {
    const header = req.headers.authorization;
    const presented = header?.startsWith('Bearer ') ? header.slice(7) : url.searchParams.get('access_token');
    const expected = createHash('sha256').update(this.options.operatorToken).digest();
    const given = createHash('sha256').update(presented ?? '').digest();
    if (presented === null || presented === undefined || !timingSafeEqual(expected, given)) {
      throw new ApiError(401, 'E_OPERATOR', 'operator access needs the operator token (Authorization: Bearer …)');
    }
  }

  private async enroll(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = parseJson(await readBody(req, 16 * 1024)) as { token?: unknown; publicKey?: unknown } | null;
    if (body === null || typeof body !== 'object' || typeof body.token !== 'string' || body.token.length < 16 || body.token.length > 256) {
      throw new ApiError(400, 'E_BAD_REQUEST', 'enrollment needs { token, publicKey }');
    }
    const publicKey = checkDeviceKey(body.publicKey);
    const device = await this.options.store.enrollDevice(sha256(new TextEncoder().encode(body.token)), publicKey);
    if (device === null) {
      await this.options.store.audit('anonymous', 'enroll.refused', {});
      throw new ApiError(401, 'E_TOKEN', 'the enrollment token is unknown or already used');
    }
    await this.options.store.audit(device.id, 'device.enrolled', { name: device.name });
    send(res, 201, { deviceId: device.id, name: device.name });
  }

  private async inference(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { store } = this.options;
    const deviceId = req.headers['x-device-id'];
    const device = typeof deviceId === 'string' && /^[\w-]{1,64}$/.test(deviceId) ? await store.getDevice(deviceId) : null;
    if (device === null || device.status === 'pending') throw new ApiError(401, 'E_DEVICE', 'unknown or unenrolled device');
    if (device.status === 'revoked') throw new ApiError(403, 'E_REVOKED', 'this device has been revoked');
    // The body is read (size-limited) and authenticated before anything parses it.
    const body = await readBody(req, this.maxBody);
    const signature = req.headers['x-signature'];
    if (!signatureValid(device, body, typeof signature === 'string' ? signature : undefined)) {
      await store.audit(device.id, 'inference.bad-signature', {});
      throw new ApiError(401, 'E_SIGNATURE', 'the X-Signature header is not a valid signature of the body by this device');
    }
    if (!(await this.limiter.allow(device.id))) {
      throw new ApiError(429, 'E_RATE', `more than ${this.rate.perSecond} requests per second`);
    }
    const request = checkInference(parseJson(body));
    const model = await store.getModelVersion(request.modelId, request.version);
    if (model === null) throw new ApiError(404, 'E_MODEL', `no model ${request.modelId} version ${request.version}`);
    if (model.status === 'retired') throw new ApiError(410, 'E_RETIRED', `${request.modelId} version ${request.version} is retired`);
    if (model.keyId !== request.keyId) throw new ApiError(409, 'E_KEY', `${request.modelId} version ${request.version} uses another key`);
    const { ciphertext } = request;
    try {
      // The container is checked here, without a key (its lengths and checksums): what is
      // not a whole encrypted result is refused at the door; a whole one that cannot be
      // decrypted (another key or scheme, a bad SEAL object) is stored and fails later.
      containerScheme(ciphertext, 'result');
    } catch (error) {
      if (error instanceof HeError) throw new ApiError(422, 'E_CIPHERTEXT', `the encrypted result was refused: ${error.code}`);
      throw error;
    }
    const base = {
      deviceId: device.id,
      modelId: request.modelId,
      version: request.version,
      keyId: request.keyId,
      idempotencyKey: request.idempotencyKey,
      bodySha256: sha256(body),
      receivedAt: new Date(this.now()).toISOString(),
    };
    const capturedAt = request.capturedAt ?? null;
    // The receipt is made from `base`, before anything is decrypted: the device learns
    // nothing decryption finds, not even whether it succeeded.
    const outcome = await store.acceptResult({ ...base, capturedAt, ciphertext, receipt: receiptOf(base) });
    if (outcome.kind === 'conflict') {
      throw new ApiError(409, 'E_IDEMPOTENCY', 'this idempotency key was used with another body');
    }
    if (outcome.kind === 'created') this.decryptions.wake();
    send(res, outcome.kind === 'created' ? 201 : 200, { receipt: { ...outcome.result.receipt, resultId: outcome.result.id } });
  }

  private serveStatic(pathname: string, req: IncomingMessage, res: ServerResponse): void {
    const root = resolve(this.options.staticDir!);
    let relative: string;
    try {
      relative = normalize(decodeURIComponent(pathname));
    } catch {
      throw new ApiError(400, 'E_BAD_REQUEST', 'malformed path');
    }
    let file = resolve(join(root, relative));
    if (file !== root && !file.startsWith(root + sep)) throw new ApiError(404, 'E_NOT_FOUND', 'not found');
    let stat = statSync(file, { throwIfNoEntry: false });
    if (stat?.isDirectory()) {
      file = join(file, 'index.html');
      stat = statSync(file, { throwIfNoEntry: false });
    }
    if (stat === undefined || !stat.isFile()) throw new ApiError(404, 'E_NOT_FOUND', `no file ${pathname}`);
    res.writeHead(200, {
      'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': stat.size,
      'cache-control': 'no-cache',
      ...ISOLATION,
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  }
}

/**
 * What operators see of a result: its state ('pending' until decrypted, 'decrypted', or
 * 'failed' with the error), the label and scores, the noise budget left (BGV; null for
 * CKKS), the range flag ('out-of-range', with a null label, when the CKKS scores lay
 * beyond the calibrated range; null otherwise), where, and when: captured (by the
 * device's clock, if it said), received, decrypted.
 */
function forOperator(r: ResultRecord): Record<string, unknown> {
  return {
    id: r.id,
    deviceId: r.deviceId,
    modelId: r.modelId,
    version: r.version,
    state: r.state,
    error: r.error,
    label: r.label,
    scores: r.scores,
    noiseBudgetBits: r.noiseBudgetBits,
    rangeFlag: r.rangeFlag,
    capturedAt: r.capturedAt,
    receivedAt: r.receivedAt,
    decryptedAt: r.decryptedAt,
  };
}
