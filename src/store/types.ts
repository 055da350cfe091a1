/**
 * The Trained & Protected DNN Database, as the rest of the owner's side sees it. SQLite is
 * the embedded default (sqlite.ts); the interface is async so that a PostgreSQL store can
 * implement it unchanged. Every write that a client's request depends on is committed
 * before the method resolves.
 */
import type { StoreError } from './errors';

export type ModelStatus = 'active' | 'retired';
export type DeviceStatus = 'pending' | 'active' | 'revoked';

export interface ModelVersion {
  modelId: string;
  version: number;
  keyId: string;
  status: ModelStatus;
  createdAt: string;
  /** Directory of the static bundle this version was published to. */
  bundleDir: string;
  /** SHA-256 (hex) of manifest.json: identifies the bundle. */
  manifestSha256: string;
  /** Number of classes the head outputs. */
  outputs: number;
  /** The paper's Table 1 figures for this version: time to encrypt, bundle size, peak memory. */
  protectMetrics: Record<string, number>;
}

export interface KeyPairRecord {
  keyId: string;
  modelId: string;
  createdAt: string;
  /** The secret key container, AES-GCM-wrapped under the key-encryption key. */
  wrappedSecretKey: Uint8Array;
  /** The device key set (public, relinearization, Galois), as shipped in keys.bin. */
  deviceKeys: Uint8Array;
}

export interface SigningKeyRecord {
  id: string;
  createdAt: string;
  /** Raw 32-byte Ed25519 public key. */
  publicKey: Uint8Array;
  /** PKCS#8 private key, AES-GCM-wrapped under the key-encryption key. */
  wrappedPrivateKey: Uint8Array;
}

export interface DeviceRecord {
  id: string;
  name: string;
  status: DeviceStatus;
  createdAt: string;
  enrolledAt: string | null;
  /** The device's ECDSA P-256 public key as a JWK, once enrolled. */
  publicKeyJwk: JsonWebKey | null;
}

export interface ResultRecord {
  id: number;
  deviceId: string;
  modelId: string;
  version: number;
  keyId: string;
  idempotencyKey: string;
  /** SHA-256 (hex) of the request body, to tell a replay from a conflicting reuse. */
  bodySha256: string;
  /** 'pending' until a decryption worker has written it once: 'decrypted', or 'failed' (`error` says why). */
  state: ResultState;
  /** The argmax of the scores; null when the result is flagged (`rangeFlag`) or not decrypted. */
  label: number | null;
  /** The decrypted scores; empty while pending and when decryption failed. */
  scores: number[];
  /**
   * BGV: the remaining noise budget of the result when it was decrypted, in bits (the
   * smallest over its CRT components). Null for CKKS, which has none, and for results
   * stored before the column existed.
   */
  noiseBudgetBits: number | null;
  /**
   * 'out-of-range': the scores lie outside the range the model was calibrated on (CKKS may
   * have wrapped around), so no label was kept. Null for every other result, and for
   * results stored before the column existed.
   */
  rangeFlag: RangeFlag | null;
  receivedAt: string;
  /**
   * When the device captured the frame, by the device's clock, as it said (results arrive
   * out of order when devices retry; this orders them by capture). Null when it did not say.
   */
  capturedAt: string | null;
  /** When it was decrypted or failed; null while pending. */
  decryptedAt: string | null;
  /** Why decryption failed (state 'failed'); null otherwise. */
  error: string | null;
  /** What the device was answered; holds no plaintext. */
  receipt: Record<string, unknown>;
}

export type ResultState = 'pending' | 'decrypted' | 'failed';

export interface AuditEvent {
  id: number;
  at: string;
  actor: string;
  event: string;
  details: Record<string, unknown>;
}

/** Why a result was stored without a label. */
export type RangeFlag = 'out-of-range';

/**
 * A result to store; `noiseBudgetBits` may be left out (null: a CKKS result), and so may
 * `rangeFlag` (null: not flagged). A flagged result has no label, and only a flagged one.
 */
export type NewResult = Omit<ResultRecord, 'id' | 'state' | 'decryptedAt' | 'error' | 'noiseBudgetBits' | 'rangeFlag' | 'capturedAt'> & {
  noiseBudgetBits?: number | null;
  rangeFlag?: RangeFlag | null;
  capturedAt?: string | null;
};

/** Which results listResults returns; every filter is optional. */
export interface ResultQuery {
  deviceId?: string;
  modelId?: string;
  /** With modelId: that version only. */
  version?: number;
  state?: ResultState;
  /** Received at or after this ISO timestamp. */
  since?: string;
  /** Received before this ISO timestamp. */
  until?: string;
  /** Ids above this one only. */
  afterId?: number;
  limit?: number;
  /** 'asc' (default): oldest first; 'desc': newest first. */
  order?: 'asc' | 'desc';
}

/**
 * What the cockpit shows of the results received since `since`: how many per outcome
 * (the label as a string, 'out-of-range', 'failed' or 'pending'), per device (with those
 * of the last minute and the latest receipt and capture times) and per minute (UTC, the
 * first 16 characters of the ISO time).
 */
export interface ResultStats {
  since: string;
  outcomes: Record<string, number>;
  devices: { deviceId: string; results: number; lastMinute: number; lastReceivedAt: string; lastCapturedAt: string | null }[];
  timeline: { minute: string; outcomes: Record<string, number> }[];
}

/** A result to store before it is decrypted: its identity, receipt and ciphertext. */
export type NewPendingResult = Omit<NewResult, 'label' | 'scores' | 'noiseBudgetBits' | 'rangeFlag'> & { ciphertext: Uint8Array };

/** A pending result a worker has claimed: what decrypting it needs, and the claim (`attempt`) that completes it. */
export interface ClaimedResult {
  id: number;
  deviceId: string;
  modelId: string;
  version: number;
  keyId: string;
  /** Which claim of this result this is (1 for the first); completeResult names it. */
  attempt: number;
  ciphertext: Uint8Array;
  receivedAt: string;
}

/** A claimed result's decryption, to write: completeResults' item. */
export interface CompletedResult {
  id: number;
  attempt: number;
  outcome: DecryptionOutcome;
}

/** What claimResults found: the results claimed now, and those given up (failed) because their claims kept expiring. */
export interface Claims {
  claimed: ClaimedResult[];
  abandoned: ResultRecord[];
}

/** How a decryption ended: scores with a label (or a range flag instead), or an error. */
export type DecryptionOutcome =
  | { label: number | null; scores: number[]; noiseBudgetBits?: number | null; rangeFlag?: RangeFlag | null }
  | { error: string };

/** Outcome of recording a result under an idempotency key. */
export type RecordOutcome =
  | { kind: 'created'; result: ResultRecord }
  | { kind: 'replayed'; result: ResultRecord }
  | { kind: 'conflict'; result: ResultRecord };

/**
 * Hears results as they are written (decrypted or failed), by any instance sharing the
 * store: PostgreSQL LISTEN/NOTIFY; SQLite, the writes of this process (one instance).
 * Only committed writes are announced.
 */
export interface ResultWatcher {
  /** The ids of results just written, in the order their transactions committed. */
  onResults(ids: number[]): void;
  /** The feed is lost (its database connection dropped): results written until `onResumed` are not announced. */
  onLost?(error: Error): void;
  /** The feed is back after a loss; what was written meanwhile was not announced (read it from listResults). */
  onResumed?(): void;
}

export interface ResultWatch {
  /** Stops the feed (idempotent). */
  close(): Promise<void>;
}

/** A per-device token bucket: `burst` requests at once, refilled at `perSecond`; `nowMs` is the caller's clock (ms since the epoch). */
export interface RateLimit {
  burst: number;
  perSecond: number;
  nowMs: number;
}

export interface Store {
  /**
   * The engine: 'sqlite' serves the instances of one process; 'postgres' is shared by
   * any number of instances on any number of machines.
   */
  readonly engineName: 'sqlite' | 'postgres';

  /** Schema version after migrations. */
  schemaVersion(): Promise<number>;

  addModelVersion(version: Omit<ModelVersion, 'version' | 'createdAt' | 'status'>, keyPair: Omit<KeyPairRecord, 'createdAt' | 'modelId'>): Promise<ModelVersion>;
  getModelVersion(modelId: string, version: number): Promise<ModelVersion | null>;
  latestModelVersion(modelId: string): Promise<ModelVersion | null>;
  listModelVersions(modelId?: string): Promise<ModelVersion[]>;
  retireModelVersion(modelId: string, version: number): Promise<ModelVersion>;
  getKeyPair(keyId: string): Promise<KeyPairRecord | null>;

  activeSigningKey(): Promise<SigningKeyRecord | null>;
  addSigningKey(key: Omit<SigningKeyRecord, 'createdAt'>): Promise<SigningKeyRecord>;

  /** Creates a pending device with the SHA-256 (hex) of its one-time enrollment token. */
  addDevice(device: { id: string; name: string; tokenSha256: string }): Promise<DeviceRecord>;
  /** Uses the token once: activates the device with its public key, or returns null. */
  enrollDevice(tokenSha256: string, publicKeyJwk: JsonWebKey): Promise<DeviceRecord | null>;
  getDevice(id: string): Promise<DeviceRecord | null>;
  listDevices(): Promise<DeviceRecord[]>;
  revokeDevice(id: string): Promise<DeviceRecord>;

  /** Stores a result (labelled, or flagged without a label) unless (deviceId, idempotencyKey) exists; never stores twice. */
  recordResult(result: NewResult): Promise<RecordOutcome>;
  /**
   * Stores a result pending decryption, with its ciphertext, unless (deviceId,
   * idempotencyKey) exists: the same outcomes as recordResult. Committed when it resolves.
   */
  acceptResult(result: NewPendingResult): Promise<RecordOutcome>;
  /**
   * Claims up to `limit` pending results, oldest first, for `worker`: those never claimed
   * and those whose claim is older than `claimTimeoutMs` (its worker died). Concurrent
   * callers, on any instance, never get the same result under live claims. A result whose
   * claims expired `maxAttempts` times is marked failed instead (returned in `abandoned`).
   */
  claimResults(options: { worker: string; limit: number; claimTimeoutMs: number; maxAttempts: number }): Promise<Claims>;
  /**
   * Writes a claimed result's decryption once: E_CONFLICT when it is no longer pending, or
   * when `attempt` is not its current claim (the claim expired and another worker holds it).
   */
  completeResult(id: number, attempt: number, outcome: DecryptionOutcome): Promise<ResultRecord>;
  /**
   * completeResult for several claimed results (at most 1000) in one transaction: for each,
   * in order, its written row, or the StoreError completeResult would have thrown for it
   * (E_NOT_FOUND, E_CONFLICT, E_INVALID), which writes nothing for that result and does
   * not stop the others. Any other failure writes none of them.
   */
  completeResults(items: readonly CompletedResult[]): Promise<Array<ResultRecord | StoreError>>;
  listResults(options?: ResultQuery): Promise<ResultRecord[]>;
  /** Counts of the results received since `since` (see ResultStats); `nowMs` (default: now) sets "the last minute". */
  resultStats(options: { since: string; nowMs?: number }): Promise<ResultStats>;
  /** The results with these ids (at most 1000), by ascending id; unknown ids are left out. */
  getResults(ids: readonly number[]): Promise<ResultRecord[]>;
  countResults(): Promise<number>;
  /**
   * Takes one token from the device's bucket, kept in the database so that every instance
   * sharing the store draws on the same bucket: true if there was one, false when the
   * device must wait. One statement, atomic under concurrency.
   */
  takeRateToken(deviceId: string, limit: RateLimit): Promise<boolean>;
  /** Starts announcing written results to `watcher` (see ResultWatcher); E_UNAVAILABLE when the feed cannot be opened. */
  watchResults(watcher: ResultWatcher): Promise<ResultWatch>;

  audit(actor: string, event: string, details?: Record<string, unknown>): Promise<void>;
  listAudit(options?: { limit?: number }): Promise<AuditEvent[]>;

  /** SQLite's PRAGMA integrity_check, or the equivalent: 'ok' when sound. */
  integrityCheck(): Promise<string>;
  close(): Promise<void>;
}
