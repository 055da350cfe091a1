/**
 * A pool of HE workers. Each worker holds its own copy of the keys and encrypted weights
 * and evaluates whole frames; frames go to the first idle worker, in arrival order.
 * A worker that throws, dies (error event), is killed, or does not answer within the
 * timeout (SEAL's out-of-memory hangs the module) is terminated and replaced by a fresh
 * one loaded from the pool's copy of the bundle, and the frame is retried.
 *
 * No DOM here: workers come from a factory, so Node tests drive the pool with in-process
 * services and the browser with comlink-wrapped Web Workers (see ./workers.ts).
 */
import type { HeParameters } from '../he';
import type { HeFrameResult, HeLoadInfo } from './he-service';

export interface WorkerHandle {
  load(params: HeParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo>;
  /** May take ownership of (transfer) `features`. */
  evaluate(features: Float32Array): Promise<HeFrameResult>;
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
  onEvent?: (event: PoolEvent) => void;
}

export type PoolEvent =
  | { kind: 'worker-ready'; index: number; generation: number; info: HeLoadInfo }
  | { kind: 'worker-replaced'; index: number; generation: number; reason: string };

export interface PoolFrameResult extends HeFrameResult {
  worker: number;
  attempts: number;
}

/** The pool's size from the machine: one worker per core, at least 1, at most `max`. */
export function defaultPoolSize(hardwareConcurrency: number | undefined, max = 4): number {
  const cores = Number.isInteger(hardwareConcurrency) && hardwareConcurrency! > 0 ? hardwareConcurrency! : 1;
  return Math.max(1, Math.min(max, cores));
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
  /** Rejects the pending call when the worker dies or is killed. */
  died: Promise<never>;
  kill: (reason: Error) => void;
}

interface Bundle {
  params: HeParameters;
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

export class HePool {
  private readonly slots: Slot[] = [];
  private readonly waiting: ((slot: Slot) => void)[] = [];
  private bundle?: Bundle;
  private disposed = false;
  readonly size: number;
  private readonly frameTimeoutMs: number;
  private readonly loadTimeoutMs: number;
  private readonly retries: number;
  /** Workers replaced since the pool started. */
  replacements = 0;

  constructor(
    private readonly factory: WorkerFactory,
    private readonly options: PoolOptions,
  ) {
    if (!Number.isInteger(options.size) || options.size < 1) throw new Error(`pool size must be a positive integer, got ${options.size}`);
    this.size = options.size;
    this.frameTimeoutMs = options.frameTimeoutMs ?? 120_000;
    this.loadTimeoutMs = options.loadTimeoutMs ?? 300_000;
    this.retries = options.retries ?? 2;
  }

  /** Starts every worker on the bundle; resolves when all are ready (fails if one cannot load it). */
  async load(params: HeParameters, keys: ArrayBuffer, weights: ArrayBuffer): Promise<HeLoadInfo[]> {
    if (this.disposed) throw new Error('the pool has been disposed');
    this.terminateAll();
    // The pool keeps its own copy so that replacement workers can be loaded again.
    this.bundle = { params, keys: keys.slice(0), weights: weights.slice(0) };
    const infos: HeLoadInfo[] = [];
    for (let i = 0; i < this.size; i++) this.slots.push(this.start(i, 0, (info) => (infos[i] = info)));
    await Promise.all(this.slots.map((s) => s.ready));
    return infos;
  }

  private start(index: number, generation: number, loaded?: (info: HeLoadInfo) => void): Slot {
    const bundle = this.bundle!;
    const handle = this.factory(index);
    let kill!: (reason: Error) => void;
    const died = new Promise<never>((_, reject) => (kill = reject));
    died.catch(() => undefined);
    handle.onDeath((reason) => kill(new WorkerFailure(`worker ${index} died: ${reason.message}`)));
    const slot: Slot = { index, generation, handle, busy: true, died, kill, ready: Promise.resolve() };
    slot.ready = withTimeout(
      Promise.race([handle.load(bundle.params, bundle.keys.slice(0), bundle.weights.slice(0)), died]),
      this.loadTimeoutMs,
      `loading worker ${index}`,
    ).then((info) => {
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
    if (next !== undefined) next(slot);
    else slot.busy = false;
  }

  private acquire(): Promise<Slot> {
    const idle = this.slots.find((s) => !s.busy);
    if (idle !== undefined) {
      idle.busy = true;
      return Promise.resolve(idle);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Replaces a failed worker with a fresh one (loading in the background). */
  private replace(slot: Slot, reason: string): void {
    if (this.slots[slot.index] !== slot || this.disposed) return;
    terminate(slot.handle);
    slot.kill(new WorkerFailure(reason));
    this.replacements++;
    const fresh = this.start(slot.index, slot.generation + 1);
    this.slots[slot.index] = fresh;
    this.options.onEvent?.({ kind: 'worker-replaced', index: slot.index, generation: fresh.generation, reason });
    fresh.ready.catch((error: Error) => this.replace(fresh, `reload failed: ${error.message}`));
  }

  /** Evaluates one frame; retried on another (or a fresh) worker if its worker fails. */
  async evaluate(features: Float32Array): Promise<PoolFrameResult> {
    if (this.bundle === undefined) throw new Error('the pool has no bundle loaded');
    let lastError: Error | undefined;
    for (let attempt = 1; attempt <= this.retries + 1; attempt++) {
      if (this.disposed) throw new Error('the pool has been disposed');
      const slot = await this.acquire();
      try {
        const frame = await withTimeout(Promise.race([slot.handle.evaluate(features.slice()), slot.died]), this.frameTimeoutMs, `a frame on worker ${slot.index}`);
        this.release(slot);
        return { ...frame, worker: slot.index, attempts: attempt };
      } catch (error) {
        lastError = error as Error;
        this.replace(slot, lastError.message);
      }
    }
    throw new Error(`the frame failed on ${this.retries + 1} workers; last error: ${lastError?.message}`);
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
  }
}
