/**
 * The outbox: every encrypted result is written to IndexedDB first, then posted signed
 * with its idempotency key, and deleted only once the backend acknowledges it (201, or
 * 200 for a retry of a result it already holds). Network errors, 429 and 5xx are retried
 * with exponential backoff; other refusals are kept as 'refused' (never silently lost).
 * A 410 says the owner retired the result's model version: the outcome names it.
 */
import type { BundleManifest } from '../model/bundle';
import { base64, sha256Hex, toArrayBuffer } from './bytes';
import type { DeviceIdentity, KioskDatabase, OutboxEntry } from './db';
import { apiUrl, signedHeaders } from './device';

export interface OutboxCounts {
  pending: number;
  refused: number;
  delivered: number;
}

export interface SendOutcome {
  idempotencyKey: string;
  status: number | 'network';
  /** ms from the start of the POST to its answer. */
  ms: number;
  /** delivered: acknowledged; retry: will be sent again; refused: kept, not sent again. */
  outcome: 'delivered' | 'retry' | 'refused';
  /** Set when the backend refused the result because the owner retired its model version (410). */
  retired?: { modelId: string; version: number };
}

export function backoffMs(attempts: number, random = Math.random): number {
  const base = Math.min(60_000, 1000 * 2 ** Math.max(0, attempts - 1));
  return Math.round(base * (0.75 + 0.5 * random()));
}

export function newIdempotencyKey(): string {
  return `r-${crypto.randomUUID()}`;
}

export class Outbox {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  delivered = 0;

  constructor(
    private readonly db: KioskDatabase,
    private readonly device: () => DeviceIdentity | undefined,
    private readonly onChange: (counts: OutboxCounts, sent?: SendOutcome) => void,
  ) {}

  /**
   * Stores the result durably; sending happens after, in the background. `capturedAt` (ms
   * since the epoch, by this device's clock) tells the owner's cockpit when the frame was
   * captured: results arrive out of order when they are retried.
   */
  async enqueue(manifest: BundleManifest, result: Uint8Array, capturedAt = Date.now()): Promise<OutboxEntry> {
    const idempotencyKey = newIdempotencyKey();
    const body = new TextEncoder().encode(
      JSON.stringify({
        modelId: manifest.modelId,
        version: manifest.version,
        keyId: manifest.keyId,
        idempotencyKey,
        result: base64(result),
        capturedAt: new Date(capturedAt).toISOString(),
      }),
    );
    const entry: OutboxEntry = {
      idempotencyKey,
      body: toArrayBuffer(body),
      createdAt: Date.now(),
      attempts: 0,
      nextAttemptAt: 0,
      state: 'pending',
      resultSha256: await sha256Hex(result),
      resultBytes: result.length,
    };
    await this.db.put('outbox', entry);
    await this.report();
    this.kick();
    return entry;
  }

  async counts(): Promise<OutboxCounts> {
    const all = await this.db.getAll('outbox');
    return { pending: all.filter((e) => e.state === 'pending').length, refused: all.filter((e) => e.state === 'refused').length, delivered: this.delivered };
  }

  private async report(sent?: SendOutcome): Promise<void> {
    this.onChange(await this.counts(), sent);
  }

  /** Sends what is due now (again after the current round if already running). */
  kick(): void {
    if (this.stopped) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = this.flush()
      .catch((error: unknown) => console.error('outbox', error))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private schedule(at: number): void {
    clearTimeout(this.timer);
    if (!this.stopped) this.timer = setTimeout(() => this.kick(), Math.max(50, at - Date.now()));
  }

  private async flush(): Promise<void> {
    const device = this.device();
    if (device === undefined) return;
    const entries = (await this.db.getAllFromIndex('outbox', 'createdAt')).filter((e) => e.state === 'pending');
    let next = Infinity;
    for (const entry of entries) {
      if (this.stopped) return;
      if (entry.nextAttemptAt > Date.now()) {
        next = Math.min(next, entry.nextAttemptAt);
        continue;
      }
      const outcome = await this.send(device, entry);
      if (outcome === 'retry') next = Math.min(next, entry.nextAttemptAt);
    }
    if (next < Infinity) this.schedule(next);
  }

  private async send(device: DeviceIdentity, entry: OutboxEntry): Promise<'done' | 'retry' | 'refused'> {
    const body = new Uint8Array(entry.body);
    const started = performance.now();
    let status: number | 'network';
    let message = '';
    try {
      const response = await fetch(apiUrl(device.backendUrl, 'api/v1/inferences'), { method: 'POST', headers: await signedHeaders(device, body), body });
      status = response.status;
      const answer = (await response.json().catch(() => ({}))) as { error?: { code: string; message: string } };
      if (answer.error) message = `${answer.error.code}: ${answer.error.message}`;
    } catch (error) {
      status = 'network';
      message = (error as Error).message;
    }
    const delivered = status === 200 || status === 201;
    const transient = status === 'network' || status === 429 || status === 408 || status >= 500;
    const sent: SendOutcome = { idempotencyKey: entry.idempotencyKey, status, ms: performance.now() - started, outcome: delivered ? 'delivered' : transient ? 'retry' : 'refused' };
    if (status === 410) {
      const { modelId, version } = JSON.parse(new TextDecoder().decode(body)) as { modelId: string; version: number };
      sent.retired = { modelId, version };
    }
    entry.attempts++;
    if (delivered) {
      await this.db.delete('outbox', entry.idempotencyKey);
      this.delivered++;
      await this.report(sent);
      return 'done';
    }
    entry.lastError = `${status === 'network' ? 'network error' : `HTTP ${status}`}${message ? ` ${message}` : ''}`;
    if (transient) {
      entry.nextAttemptAt = Date.now() + backoffMs(entry.attempts);
      await this.db.put('outbox', entry);
      await this.report(sent);
      return 'retry';
    }
    entry.state = 'refused';
    await this.db.put('outbox', entry);
    await this.report(sent);
    return 'refused';
  }

  /** Makes every pending entry due now (e.g. when the browser comes back online). */
  async retryNow(): Promise<void> {
    const tx = this.db.transaction('outbox', 'readwrite');
    for (const e of await tx.store.getAll()) if (e.state === 'pending' && e.nextAttemptAt > 0) await tx.store.put({ ...e, nextAttemptAt: 0 });
    await tx.done;
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
