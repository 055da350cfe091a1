/**
 * A pool of HE workers. Each worker holds its own copy of the keys and encrypted weights.
 * With one worker, frames run whole, in arrival order. With several, frames run in one of
 * three modes (./pool-modes.ts): `shared` — each worker encrypts the features and
 * evaluates its share of the first layer's giant-step groups (the bulk of the work), one
 * worker adds the partial sums and finishes the frame, frames one after another;
 * `per-worker` — one whole frame per worker, as many frames in flight as workers;
 * `single` — one worker (the fastest measured), one frame at a time. `auto` (the default)
 * measures the three during warm-up and then continuously, and runs the fastest; what
 * "fastest" means, and how it is measured, is documented in ./pool-modes.ts. Frames are
 * admitted in arrival order; a frame of another mode waits until the frames in flight
 * are done, so every frame is measured in one mode. `concurrency` tells the caller how
 * many frames to keep in flight (the kiosk's stream loop, ./frame-loop.ts).
 * A worker that throws, dies (error event), is killed, or does not answer within the
 * timeout (SEAL's out-of-memory hangs the module) is terminated and replaced by a fresh
 * one loaded from the pool's copy of the bundle, and the frame is retried. A replacement
 * that cannot load is retried with exponential backoff, and given up after
 * `maxReloads` failures in a row; frames then use the workers that remain.
 *
 * No DOM here: workers come from a factory, so Node tests drive the pool with in-process
 * services and the browser with comlink-wrapped Web Workers (see ./workers.ts).
 */
import type { HeFrameResult, HeLoadInfo, HeShareResult, KioskParameters } from './he-service';
import { isModeSetting, MODE_SETTINGS, ModeChooser, type ModeOptions, type ModeSetting, type PoolChoice, type PoolMode } from './pool-modes';

export interface WorkerHandle {
  load(params: KioskParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo>;
  /** May take ownership of (transfer) `features`. */
  evaluate(features: Float32Array): Promise<HeFrameResult>;
  /** May take ownership of (transfer) `features`. */
  evaluateShare(features: Float32Array, index: number, count: number): Promise<HeShareResult>;
  /** May take ownership of (transfer) the partials. */
  finish(partials: Uint8Array[]): Promise<HeFrameResult>;
  heapBytes(): Promise<number>;
  /** Registers the callback for a worker that dies by itself (uncaught error, crash). */
  onDeath(callback: (reason: Error) => void): void;
  terminate(): void;
}

export type WorkerFactory = (index: number) => WorkerHandle;

export interface PoolOptions {
  size: number;
  /** A frame that takes longer than this is treated as a hung worker. */
  frameTimeoutMs?: number;
  /** Loading keys and weights into a fresh worker may take this long. */
  loadTimeoutMs?: number;
  /** Attempts per frame beyond the first, each on a fresh or another worker. */
  retries?: number;
  /** A replacement that fails to load is retried after 250 ms, doubling up to 30 s, this many times. */
  maxReloads?: number;
  /** How frames use the workers: auto (default), shared, per-worker or single (./pool-modes.ts). */
  mode?: ModeSetting;
  /** Tuning of the auto mode (tests). */
  modeOptions?: ModeOptions;
  /** The clock frames are measured with, in ms (default performance.now; tests pass a fake one). */
  now?: () => number;
  onEvent?: (event: PoolEvent) => void;
  /** After every measured frame: the mode, why, and the estimates (the screen's worker line). */
  onChoice?: (choice: PoolChoice) => void;
}

export type PoolEvent =
  | { kind: 'worker-ready'; index: number; generation: number; info: HeLoadInfo }
  | { kind: 'worker-replaced'; index: number; generation: number; reason: string }
  | { kind: 'worker-lost'; index: number; generation: number; reason: string };

export interface PoolFrameResult extends HeFrameResult {
  /** The worker that completed the frame. */
  worker: number;
  /** Workers that evaluated a share of the frame (1: evaluated whole). */
  workers: number;
  attempts: number;
  /** The mode the frame ran in. */
  mode: PoolMode;
}

/** The pool's size from the machine: one worker per core, at least 1, at most `max`. */
export function defaultPoolSize(hardwareConcurrency: number | undefined, max = 4): number {
  const cores = Number.isInteger(hardwareConcurrency) && hardwareConcurrency! > 0 ? hardwareConcurrency! : 1;
  return Math.max(1, Math.min(max, cores));
}

/** `value` if it is an integer of at least `min`; a clear error otherwise. */
function checked(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer of at least ${min}, got ${value}`);
  return value;
}

class WorkerFailure extends Error {}

function terminate(handle: WorkerHandle): void {
  try {
    handle.terminate();
  } catch {
    // already gone
  }
}

interface Slot {
  index: number;
  generation: number;
  handle: WorkerHandle;
  ready: Promise<void>;
  busy: boolean;
  /** Loaded and not given up. */
  live: boolean;
  /** Failed loads in a row before this one. */
  failures: number;
  /** Rejects the pending call when the worker dies or is killed. */
  died: Promise<never>;
  kill: (reason: Error) => void;
}

interface Waiter {
  resolve: (slot: Slot) => void;
  reject: (error: Error) => void;
}

/** A frame admitted to run: its mode, when, and the pool time charged so far (see `charge`). */
interface Admission {
  mode: PoolMode;
  startedAt: number;
  charged: number;
}

interface AdmissionWaiter {
  resolve: (admission: Admission) => void;
  reject: (error: Error) => void;
}

interface Bundle {
  params: KioskParameters;
  keys: ArrayBuffer;
  weights: ArrayBuffer;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WorkerFailure(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class HePool {
  private readonly slots: Slot[] = [];
  private readonly waiting: Waiter[] = [];
  private readonly admissions: AdmissionWaiter[] = [];
  private bundle?: Bundle;
  private disposed = false;
  private chooser: ModeChooser;
  /** Frames admitted and not yet done, and their mode. */
  private inFlight = 0;
  private inFlightMode?: PoolMode;
  /**
   * Pool time per frame: ∫ dt / (frames in flight) over the time frames are in flight. A
   * frame is charged the growth of this clock between its admission and its end.
   */
  private charge = 0;
  private chargedAt = 0;
  private readonly now: () => number;
  readonly size: number;
  readonly setting: ModeSetting;
  private readonly frameTimeoutMs: number;
  private readonly loadTimeoutMs: number;
  private readonly retries: number;
  private readonly maxReloads: number;
  /** Workers replaced since the pool started. */
  replacements = 0;

  constructor(
    private readonly factory: WorkerFactory,
    private readonly options: PoolOptions,
  ) {
    this.size = checked('pool size', options.size, 1);
    this.frameTimeoutMs = checked('frameTimeoutMs', options.frameTimeoutMs ?? 120_000, 1);
    this.loadTimeoutMs = checked('loadTimeoutMs', options.loadTimeoutMs ?? 300_000, 1);
    this.retries = checked('retries', options.retries ?? 2, 0);
    this.maxReloads = checked('maxReloads', options.maxReloads ?? 5, 0);
    const mode: unknown = options.mode ?? 'auto';
    if (!isModeSetting(mode)) throw new Error(`the pool mode must be one of ${MODE_SETTINGS.join(', ')}, got '${String(mode)}'`);
    this.setting = mode;
    this.now = options.now ?? (() => performance.now());
    this.chooser = new ModeChooser(mode, this.size, options.modeOptions);
  }

  /** The mode frames run in now, why, and what each mode measured. */
  get choice(): PoolChoice {
    return this.chooser.choice();
  }

  /**
   * Frames the caller should keep in flight: one per usable worker while frames run one
   * per worker, else 1 (a second frame would only wait). Read it again after every frame.
   */
  get concurrency(): number {
    return this.chooser.mode === 'per-worker' ? this.usable() : 1;
  }

  /** Workers loaded or loading (not given up). */
  private usable(): number {
    return Math.max(1, this.slots.filter((s) => s.live || s.failures <= this.maxReloads).length);
  }

  /** Starts every worker on the bundle; resolves when all are ready (fails if one cannot load it). */
  async load(params: KioskParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo[]> {
    if (this.disposed) throw new Error('the pool has been disposed');
    this.terminateAll();
    this.chooser = new ModeChooser(this.setting, this.size, this.options.modeOptions);
    // The pool keeps its own copy so that replacement workers can be loaded again.
    this.bundle = { params, keys: keys.slice(0), weights: weights.slice(0) };
    const infos: HeLoadInfo[] = [];
    for (let i = 0; i < this.size; i++) this.slots.push(this.start(i, 0, 0, 0, (info) => (infos[i] = info)));
    try {
      await Promise.all(this.slots.map((s) => s.ready));
    } catch (error) {
      // The bundle itself does not load: no replacement would do better.
      for (const slot of this.slots) if (!slot.live) slot.failures = this.maxReloads + 1;
      throw error;
    }
    return infos;
  }

  private start(index: number, generation: number, failures: number, delayMs: number, loaded?: (info: HeLoadInfo) => void): Slot {
    const bundle = this.bundle!;
    const handle = this.factory(index);
    let kill!: (reason: Error) => void;
    const died = new Promise<never>((_, reject) => (kill = reject));
    died.catch(() => undefined);
    handle.onDeath((reason) => kill(new WorkerFailure(`worker ${index} died: ${reason.message}`)));
    const slot: Slot = { index, generation, handle, busy: true, live: false, failures, died, kill, ready: Promise.resolve() };
    slot.ready = sleep(delayMs)
      .then(() =>
        withTimeout(Promise.race([handle.load(bundle.params, bundle.keys.slice(0), bundle.weights.slice(0)), died]), this.loadTimeoutMs, `loading worker ${index}`),
      )
      .then((info) => {
        slot.live = true;
        slot.failures = 0;
        loaded?.(info);
        this.options.onEvent?.({ kind: 'worker-ready', index, generation, info });
        this.release(slot);
      });
    slot.ready.catch(() => undefined);
    return slot;
  }

  private release(slot: Slot): void {
    if (this.slots[slot.index] !== slot) return;
    const next = this.waiting.shift();
    if (next !== undefined) next.resolve(slot);
    else slot.busy = false;
  }

  private noWorkerLeft(): Error | undefined {
    if (this.slots.some((s) => s.live || s.failures <= this.maxReloads)) return undefined;
    return new Error(`no HE worker is left: every worker failed to load ${this.maxReloads + 1} times in a row`);
  }

  /** An idle worker, the first of `prefer` that is idle if any; else waits for one. */
  private acquire(prefer: number[] = []): Promise<Slot> {
    const idle = [...prefer.map((i) => this.slots[i]), ...this.slots].find((s) => s !== undefined && !s.busy);
    if (idle !== undefined) {
      idle.busy = true;
      return Promise.resolve(idle);
    }
    const gone = this.noWorkerLeft();
    if (gone !== undefined) return Promise.reject(gone);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /**
   * Replaces a failed worker with a fresh one, loading in the background; a replacement
   * that fails to load is replaced again after a growing delay, until `maxReloads`.
   */
  private replace(slot: Slot, reason: string, loadFailed = false): void {
    if (this.slots[slot.index] !== slot || this.disposed) return;
    terminate(slot.handle);
    slot.kill(new WorkerFailure(reason));
    slot.live = false;
    const failures = loadFailed ? slot.failures + 1 : 0;
    if (failures > this.maxReloads) {
      slot.failures = failures;
      this.options.onEvent?.({ kind: 'worker-lost', index: slot.index, generation: slot.generation, reason });
      const gone = this.noWorkerLeft();
      if (gone !== undefined) for (const waiter of this.waiting.splice(0)) waiter.reject(gone);
      return;
    }
    this.replacements++;
    const fresh = this.start(slot.index, slot.generation + 1, failures, failures === 0 ? 0 : Math.min(30_000, 250 * 2 ** (failures - 1)));
    this.slots[slot.index] = fresh;
    this.options.onEvent?.({ kind: 'worker-replaced', index: slot.index, generation: fresh.generation, reason });
    fresh.ready.catch((error: Error) => this.replace(fresh, `reload failed: ${error.message}`, true));
  }

  /**
   * Evaluates one frame in the pool's mode (shared by every worker, whole on one worker);
   * retried on other or fresh workers if a worker fails.
   */
  async evaluate(features: Float32Array): Promise<PoolFrameResult> {
    if (this.bundle === undefined) throw new Error('the pool has no bundle loaded');
    const { mode, startedAt, charged } = await this.admit();
    let frame: Omit<PoolFrameResult, 'mode'> | undefined;
    try {
      frame = mode === 'shared' ? await this.evaluateShared(features) : await this.evaluateWhole(features, mode);
      return { ...frame, mode };
    } finally {
      const end = this.tick();
      this.inFlight--;
      if (this.inFlight === 0) this.inFlightMode = undefined;
      // A frame retried after a worker failure measures the failure, not the mode.
      if (frame !== undefined && frame.attempts === 1 && !this.disposed) {
        const sample = { mode, msPerFrame: end - charged, latencyMs: this.now() - startedAt, worker: frame.worker, workers: frame.workers, inFlight: this.inFlight };
        this.chooser.record(sample);
        this.options.onChoice?.(this.chooser.choice());
      }
      this.admitWaiting();
    }
  }

  /** Advances the pool-time clock to now; returns it. */
  private tick(): number {
    const t = this.now();
    if (this.inFlight > 0) this.charge += (t - this.chargedAt) / this.inFlight;
    this.chargedAt = t;
    return this.charge;
  }

  /** Waits for the frame's turn (arrival order) and for the frames in flight its mode cannot run beside. */
  private admit(): Promise<Admission> {
    if (this.disposed) return Promise.reject(new Error('the pool has been disposed'));
    return new Promise((resolve, reject) => {
      this.admissions.push({ resolve, reject });
      this.admitWaiting();
    });
  }

  private admitWaiting(): void {
    while (this.admissions.length > 0) {
      const mode = this.chooser.mode;
      // Shared and single frames run alone; per-worker frames beside per-worker frames, one per worker.
      if (this.inFlight > 0 && (mode !== 'per-worker' || this.inFlightMode !== 'per-worker' || this.inFlight >= this.usable())) return;
      const waiter = this.admissions.shift()!;
      const charged = this.tick();
      this.inFlight++;
      this.inFlightMode = mode;
      waiter.resolve({ mode, startedAt: this.now(), charged });
    }
  }

  private call<T>(slot: Slot, work: Promise<T>, what: string): Promise<T> {
    return withTimeout(Promise.race([work, slot.died]), this.frameTimeoutMs, `${what} on worker ${slot.index}`);
  }

  /** One frame, whole, on one worker: single mode's (the fastest measured), or the fastest idle one. */
  private async evaluateWhole(features: Float32Array, mode: 'single' | 'per-worker'): Promise<Omit<PoolFrameResult, 'mode'>> {
    let lastError: Error | undefined;
    for (let attempt = 1; attempt <= this.retries + 1; attempt++) {
      if (this.disposed) throw new Error('the pool has been disposed');
      const ranked = this.chooser.rankWorkers();
      const slot = await this.acquire(mode === 'single' ? ranked.slice(0, 1) : ranked);
      try {
        const frame = await this.call(slot, slot.handle.evaluate(features.slice()), 'a frame');
        this.release(slot);
        return { ...frame, worker: slot.index, workers: 1, attempts: attempt };
      } catch (error) {
        lastError = error as Error;
        this.replace(slot, lastError.message);
      }
    }
    throw new Error(`the frame failed on ${this.retries + 1} workers; last error: ${lastError?.message}`);
  }

  /** Waits for the workers that are loading (replacements) and takes every live one. */
  private async takeAll(): Promise<Slot[]> {
    for (;;) {
      if (this.disposed) throw new Error('the pool has been disposed');
      const gone = this.noWorkerLeft();
      if (gone !== undefined) throw gone;
      const loading = this.slots.filter((s) => !s.live && s.failures <= this.maxReloads);
      if (loading.length === 0) break;
      await Promise.allSettled(loading.map((s) => s.ready));
      // A failed load has scheduled its own replacement; wait for that one too.
      await sleep(0);
    }
    const live = this.slots.filter((s) => s.live);
    for (const slot of live) slot.busy = true;
    return live;
  }

  private async evaluateShared(features: Float32Array): Promise<Omit<PoolFrameResult, 'mode'>> {
    let lastError: Error | undefined;
    for (let attempt = 1; attempt <= this.retries + 1; attempt++) {
      const slots = await this.takeAll();
      const t0 = this.now();
      const shares = await Promise.allSettled(
        slots.map((slot, k) => this.call(slot, slot.handle.evaluateShare(features.slice(), k, slots.length), 'a share')),
      );
      const sharesMs = this.now() - t0;
      const failed = slots.filter((slot, k) => {
        const share = shares[k]!;
        if (share.status === 'fulfilled') return false;
        lastError = share.reason as Error;
        this.replace(slot, lastError.message);
        return true;
      });
      if (failed.length > 0) {
        for (const slot of slots) if (!failed.includes(slot)) this.release(slot);
        continue;
      }
      const done = shares.map((s) => (s as PromiseFulfilledResult<HeShareResult>).value);
      const finisher = slots[0]!;
      try {
        const frame = await this.call(finisher, finisher.handle.finish(done.map((d) => d.partial)), 'finishing a frame');
        for (const slot of slots) this.release(slot);
        const encryptMs = Math.max(...done.map((d) => d.encryptMs));
        return {
          ...frame,
          encryptMs,
          // Wall time of the shares (with the transfer of their partial sums) and of finishing.
          evaluateMs: sharesMs - encryptMs + frame.evaluateMs,
          worker: finisher.index,
          workers: slots.length,
          attempts: attempt,
        };
      } catch (error) {
        lastError = error as Error;
        this.replace(finisher, lastError.message);
        for (const slot of slots) if (slot !== finisher) this.release(slot);
      }
    }
    throw new Error(`the frame failed ${this.retries + 1} times; last error: ${lastError?.message}`);
  }

  /** Workers evaluating (or loading) right now. */
  get busy(): number {
    return this.slots.filter((s) => s.busy).length;
  }

  /** Terminates worker `index` as a crash would (tests and the kiosk's diagnostics use it). */
  kill(index: number): void {
    const slot = this.slots[index];
    if (slot === undefined) throw new Error(`no worker ${index}`);
    terminate(slot.handle);
    slot.kill(new WorkerFailure(`worker ${index} was killed`));
    if (!slot.busy) this.replace(slot, `worker ${index} was killed`);
  }

  async heapBytes(): Promise<number[]> {
    return Promise.all(this.slots.map((s) => s.ready.then(() => s.handle.heapBytes()).catch(() => 0)));
  }

  private terminateAll(): void {
    for (const slot of this.slots) {
      terminate(slot.handle);
      slot.kill(new WorkerFailure('the pool was reloaded'));
    }
    this.slots.length = 0;
  }

  dispose(): void {
    this.disposed = true;
    this.terminateAll();
    this.bundle = undefined;
    const error = new Error('the pool has been disposed');
    for (const waiter of this.waiting.splice(0)) waiter.reject(error);
    for (const waiter of this.admissions.splice(0)) waiter.reject(error);
  }
}
