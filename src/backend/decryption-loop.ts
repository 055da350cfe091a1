import { HeError } from '../he';
import { StoreError } from '../store/errors';
import type { ClaimedResult, DecryptionOutcome, ModelVersion, ResultRecord, Store } from '../store/types';
import type { Decryptor } from './decrypt';
import { checkScoreRange } from './ranges';

export interface DecryptionLoopOptions {
  store: Store;
  decryptor: Decryptor;
  /** Names this loop's claims in the store (an instance id); printable ASCII, no spaces. */
  worker: string;
  /** A claim older than this is presumed dead and taken again (default 60 s: far above one decryption). */
  claimTimeoutMs?: number;
  /** Claims a result gets before it is marked failed (default 3): a ciphertext that kills its worker is not retried forever. */
  maxAttempts?: number;
  /** How often the loop looks for results it was not told about: other instances' and expired claims (default 1 s). */
  pollMs?: number;
  /**
   * Hears each result this loop wrote: decrypted (with a label or flagged) or failed.
   * (The backend's operator streams hear every instance's results from the store's feed instead.)
   */
  onDone?(result: ResultRecord): void;
  /** Where the loop reports what it cannot hand to a caller (a store that is down); stderr by default. */
  log?(line: string): void;
}

export const DEFAULT_CLAIM_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_ATTEMPTS = 3;
export const DEFAULT_POLL_MS = 1000;

/** A claim decrypted (or refused), with its outcome to write and its range check. */
interface Decided {
  claim: ClaimedResult;
  outcome: DecryptionOutcome;
  range: ReturnType<typeof checkScoreRange>;
}

/**
 * The Decryption Agent's work queue: claims pending results from the store in batches,
 * decrypts them with the decryptor (as many at a time as it runs at once), and writes each
 * batch's labels (or range flags, or the reasons ciphertexts were refused) in one
 * transaction, each result once. Ingest wakes it after storing a result; a timer wakes it
 * for results other instances stored and for claims whose worker died. A ciphertext the
 * decryptor refuses (HeError) is marked failed at once; any other failure (a worker thread
 * that died, a store that is down) leaves the claim to expire, so another attempt, here or
 * on another instance, takes the result again.
 */
export class DecryptionLoop {
  private readonly concurrency: number;
  private readonly claimTimeoutMs: number;
  private readonly maxAttempts: number;
  private readonly pollMs: number;
  private readonly log: (line: string) => void;
  /** The batches being decrypted or written. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Claims handed to the decryptor and not yet decrypted. */
  private decrypting = 0;
  private timer: NodeJS.Timeout | null = null;
  private pumping: Promise<void> | null = null;
  private wanted = false;
  private stopped = true;

  constructor(private readonly options: DecryptionLoopOptions) {
    const positive = (value: number | undefined, name: string, fallback: number, min: number, max: number) => {
      const v = value ?? fallback;
      if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
      return v;
    };
    this.concurrency = positive(options.decryptor.concurrency, 'the decryptor\'s concurrency', 1, 1, 10_000);
    this.claimTimeoutMs = positive(options.claimTimeoutMs, 'claimTimeoutMs', DEFAULT_CLAIM_TIMEOUT_MS, 1, 7 * 24 * 3600 * 1000);
    this.maxAttempts = positive(options.maxAttempts, 'maxAttempts', DEFAULT_MAX_ATTEMPTS, 1, 1000);
    this.pollMs = positive(options.pollMs, 'pollMs', DEFAULT_POLL_MS, 1, 3600 * 1000);
    if (typeof options.worker !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(options.worker)) {
      throw new RangeError(`worker must be 1–200 printable ASCII characters without spaces, got ${JSON.stringify(options.worker)}`);
    }
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.timer = setInterval(() => this.wake(), this.pollMs);
    this.timer.unref();
    this.wake();
  }

  /** Looks for work now (ingest calls this after storing a result). */
  wake(): void {
    if (this.stopped) return;
    this.wanted = true;
    this.pumping ??= this.pump().finally(() => {
      this.pumping = null;
      if (this.wanted) this.wake();
    });
  }

  /** Claims no more and waits for the decryptions under way to be written. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.pumping;
    await Promise.all(this.inFlight);
  }

  private async pump(): Promise<void> {
    while (this.wanted && !this.stopped) {
      this.wanted = false;
      const room = this.concurrency - this.decrypting;
      // Claims are taken in batches of at least half the room while some are decrypting:
      // one claim and one write per batch rather than per result.
      if (room <= 0 || (this.decrypting > 0 && room < Math.ceil(this.concurrency / 2))) return;
      let claims;
      try {
        claims = await this.options.store.claimResults({ worker: this.options.worker, limit: room, claimTimeoutMs: this.claimTimeoutMs, maxAttempts: this.maxAttempts });
      } catch (error) {
        this.log(`sealed-edge decryption: cannot claim results (retrying in ${this.pollMs} ms): ${describe(error)}`);
        return;
      }
      for (const result of claims.abandoned) await this.done(result);
      const batch = claims.claimed;
      if (batch.length > 0) {
        this.decrypting += batch.length;
        const task: Promise<void> = this.process(batch)
          .catch((error: unknown) => this.log(`sealed-edge decryption: results ${batch.map((c) => `${c.id} (claim ${c.attempt})`).join(', ')}: ${describe(error)}`))
          .finally(() => {
            this.inFlight.delete(task);
            this.wake();
          });
        this.inFlight.add(task);
      }
      // A full batch may mean more is waiting.
      if (batch.length === room) this.wanted = true;
    }
  }

  /** Decrypts a batch of claims (each as its own task of the decryptor) and writes their outcomes in one transaction. */
  private async process(batch: ClaimedResult[]): Promise<void> {
    let decided: Decided[];
    try {
      // Each model version the batch names is read once for it.
      const models = new Map<string, Promise<ModelVersion | null>>();
      decided = (await Promise.all(batch.map((claim) => this.decrypt(claim, models)))).filter((d): d is Decided => d !== null);
    } finally {
      // The decryptor has room again while this batch is written.
      this.decrypting -= batch.length;
      this.wake();
    }
    if (decided.length === 0) return;
    let written: Array<ResultRecord | StoreError>;
    try {
      written = await this.options.store.completeResults(decided.map(({ claim, outcome }) => ({ id: claim.id, attempt: claim.attempt, outcome })));
    } catch (error) {
      written = decided.map(() => error as StoreError);
    }
    for (const [i, { claim, range }] of decided.entries()) {
      const stored = written[i]!;
      if (stored instanceof Error) {
        this.log(`sealed-edge decryption: result ${claim.id} (claim ${claim.attempt}) decrypted but not written: ${describe(stored)}`);
        continue;
      }
      if (range !== null && range.flag !== null) {
        await this.audit(stored.deviceId, 'inference.out-of-range', { resultId: stored.id, modelId: stored.modelId, version: stored.version, scoreMax: range.scoreMax, bound: range.bound });
      }
      await this.done(stored);
    }
  }

  /** A claim's outcome, or null when it is left for another attempt (the decryptor failed for another reason than the ciphertext). */
  private async decrypt(claim: ClaimedResult, models: Map<string, Promise<ModelVersion | null>>): Promise<Decided | null> {
    try {
      const key = `${claim.modelId}\n${claim.version}`;
      if (!models.has(key)) models.set(key, this.options.store.getModelVersion(claim.modelId, claim.version));
      const model = await models.get(key)!;
      if (model === null) throw new StoreError('E_NOT_FOUND', `model ${claim.modelId} version ${claim.version} is gone`);
      const { scheme, scores, noiseBudgetBits } = await this.options.decryptor.decrypt(claim.keyId, claim.ciphertext);
      if (scores.length !== model.outputs || !scores.every(Number.isFinite)) {
        return { claim, range: null, outcome: { error: `E_CIPHERTEXT: the encrypted result does not hold this model's scores (${scores.length} values, the model has ${model.outputs} outputs)` } };
      }
      // CKKS wraps around silently past its first prime: scores beyond the calibrated range
      // are stored flagged, without a label. BGV has no such failure (its noise budget is
      // reported instead), and versions protected before calibration have no range.
      const range = scheme === 'ckks' ? checkScoreRange(scores, model.protectMetrics.calibratedScoreMax) : null;
      const rangeFlag = range?.flag ?? null;
      const label = rangeFlag === null ? scores.reduce((best, v, i, all) => (v > all[best]! ? i : best), 0) : null;
      return { claim, range, outcome: { label, scores: Array.from(scores), noiseBudgetBits, rangeFlag } };
    } catch (error) {
      if (!(error instanceof HeError)) {
        this.log(`sealed-edge decryption: result ${claim.id} (claim ${claim.attempt}) not decrypted, left for another attempt: ${describe(error)}`);
        return null;
      }
      return { claim, range: null, outcome: { error: `E_CIPHERTEXT: the encrypted result was refused (${error.code}): ${error.message}` } };
    }
  }

  private async done(result: ResultRecord): Promise<void> {
    if (result.state === 'failed') await this.audit(result.deviceId, 'inference.failed', { resultId: result.id, error: result.error });
    try {
      this.options.onDone?.(result);
    } catch (error) {
      this.log(`sealed-edge decryption: result ${result.id} written, but announcing it failed: ${describe(error)}`);
    }
  }

  private async audit(actor: string, event: string, details: Record<string, unknown>): Promise<void> {
    await this.options.store.audit(actor, event, details).catch((error: unknown) => this.log(`sealed-edge decryption: audit ${event} not written: ${describe(error)}`));
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
