// Runs in Node (no browser, no SEAL): the HE pool's modes and how `auto` chooses among them
// (src/edge/pool.ts, src/edge/pool-modes.ts), driven through the kiosk's own stream loop
// (src/edge/frame-loop.ts). The workers are simulated on a simulated machine whose speed
// the tests control; time is Vitest's fake clock, so every duration is exact and nothing
// sleeps.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { runFrameLoop } from '../../src/edge/frame-loop';
import type { HeFrameResult } from '../../src/edge/he-service';
import { HePool, type PoolFrameResult, type WorkerHandle } from '../../src/edge/pool';
import { describeChoice, ModeChooser, type PoolMode } from '../../src/edge/pool-modes';

/**
 * What a frame costs, in ms of one free core (about the MNIST head's proportions in
 * Chromium): encrypting, the first layer (split across the workers when shared), the rest
 * of the head, and merging the partial sums (with their transfer) when shared.
 */
const COST = { encrypt: 10, layer1: 400, rest: 100, merge: 20 };
const WHOLE = COST.encrypt + COST.layer1 + COST.rest; // 510

interface Job {
  worker: number;
  left: number;
  done: () => void;
}

/**
 * A machine whose HE workers share `cores` free cores (processor sharing: k busy workers
 * run at min(1, cores / k) each), worker i at `speeds[i]` of that (below 1: another program
 * shares its core). Jobs finish on the fake clock.
 */
class Machine {
  private readonly jobs = new Set<Job>();
  private at = Date.now();
  private timer?: ReturnType<typeof setTimeout>;

  constructor(
    private cores: number,
    private readonly speeds: number[],
  ) {}

  private rate(job: Job): number {
    return this.speeds[job.worker]! * Math.min(1, this.cores / this.jobs.size);
  }

  /** Advances every job to now, finishes those done, schedules the next finish. */
  private step(): void {
    const now = Date.now();
    for (const job of this.jobs) job.left -= (now - this.at) * this.rate(job);
    this.at = now;
    for (const job of [...this.jobs]) {
      if (job.left > 1e-6) continue;
      this.jobs.delete(job);
      job.done();
    }
    clearTimeout(this.timer);
    if (this.jobs.size === 0) return;
    const next = Math.min(...[...this.jobs].map((job) => job.left / this.rate(job)));
    this.timer = setTimeout(() => this.step(), Math.ceil(next));
  }

  run(worker: number, work: number): Promise<void> {
    this.step();
    return new Promise((done) => {
      this.jobs.add({ worker, left: work, done });
      this.step();
    });
  }

  /** Changes the conditions from now on. */
  set(change: { cores?: number; speed?: [worker: number, speed: number] }): void {
    this.step();
    if (change.cores !== undefined) this.cores = change.cores;
    if (change.speed !== undefined) this.speeds[change.speed[0]] = change.speed[1];
    this.step();
  }
}

function simulatedWorker(machine: Machine, index: number, calls: string[]): WorkerHandle {
  const frame = (): HeFrameResult => ({ result: new Uint8Array(8), encryptMs: 0, evaluateMs: 0, serializeMs: 0, heapBytes: 0 });
  return {
    load: async () => ({ keyId: 'k', contextMs: 0, keysMs: 0, weightsMs: 0, heapBytes: 0, streamed: false }),
    async evaluate() {
      calls.push(`evaluate:${index}`);
      await machine.run(index, WHOLE);
      return frame();
    },
    async evaluateShare(_features, _share, count) {
      calls.push(`share:${index}`);
      await machine.run(index, COST.encrypt + COST.layer1 / count);
      return { partial: new Uint8Array(8), encryptMs: 0, evaluateMs: 0 };
    },
    async finish() {
      await machine.run(index, COST.merge + COST.rest);
      return frame();
    },
    heapBytes: async () => 0,
    onDeath: () => undefined,
    terminate: () => undefined,
  };
}

/** Resolves `work` while advancing the fake clock from one timer to the next (microtasks settle in between). */
async function drive<T>(work: Promise<T>): Promise<T> {
  let settled = false;
  work.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (;;) {
    // setImmediate is not faked: every pending promise reaction runs before the clock moves.
    await new Promise((resolve) => setImmediate(resolve));
    if (settled) return work;
    if (vi.getTimerCount() === 0) throw new Error('stalled: no frame is running and nothing is scheduled');
    await vi.advanceTimersToNextTimerAsync();
  }
}

type Demand = 'queue' | 'one-at-a-time';

interface Setup {
  cores?: number;
  speeds?: [number, number];
  mode?: 'auto' | PoolMode;
  reprobeEvery?: number;
}

async function makePool(setup: Setup = {}) {
  const machine = new Machine(setup.cores ?? 2, [...(setup.speeds ?? [1, 1])]);
  const calls: string[] = [];
  const choices: string[] = [];
  const pool = new HePool((index) => simulatedWorker(machine, index, calls), {
    size: 2,
    mode: setup.mode ?? 'auto',
    now: () => Date.now(),
    modeOptions: { reprobeEvery: setup.reprobeEvery ?? 40 },
    onChoice: (choice) => choices.push(describeChoice(choice)),
  });
  await drive(pool.load({} as never, new ArrayBuffer(8), new ArrayBuffer(8)));
  /**
   * Classifies `count` frames through the kiosk's stream loop: `queue` as a camera (as many
   * frames in flight as the pool asks), `one-at-a-time` as dropped files. `after(n)` runs
   * once n frames are done (to change the conditions).
   */
  const stream = (count: number, demand: Demand, after?: (done: number) => void): Promise<PoolFrameResult[]> => {
    const frames: PoolFrameResult[] = [];
    let taken = 0;
    const loop = runFrameLoop({
      next: async () => (taken < count ? taken++ : undefined),
      process: async () => {
        frames.push(await pool.evaluate(new Float32Array(4)));
        after?.(frames.length);
      },
      concurrency: () => (demand === 'queue' ? pool.concurrency : 1),
      running: () => true,
    });
    return drive(loop.then(() => frames));
  };
  return { machine, pool, calls, choices, stream };
}

const modes = (frames: PoolFrameResult[]) => frames.map((f) => f.mode);
/** The longest run of consecutive frames in `mode`. */
const longestRun = (sequence: PoolMode[], mode: PoolMode) => {
  let longest = 0;
  let run = 0;
  for (const m of sequence) longest = Math.max(longest, (run = m === mode ? run + 1 : 0));
  return longest;
};
/** The first frame from `from` on that starts `count` frames in a row in `mode` (-1: none). */
const firstSteady = (frames: PoolFrameResult[], from: number, mode: PoolMode, count: number) => {
  for (let i = from; i + count <= frames.length; i++) if (frames.slice(i, i + count).every((f) => f.mode === mode)) return i;
  return -1;
};
/** The mode every frame from `from` on ran in, if they all ran in one. */
const settledOn = (frames: PoolFrameResult[], from: number) => {
  const tail = new Set(modes(frames.slice(from)));
  return tail.size === 1 ? [...tail][0] : [...tail].join('+');
};

describe('HE pool modes (Node, simulated workers, fake clock)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('quiet machine, frames queue (camera): warm-up measures each mode, then one frame per worker (most frames per second)', async () => {
    const { pool, stream, calls } = await makePool();
    const frames = await stream(30, 'queue');
    // Warm-up: single (1 cold + 3), shared (1 cold + 3), per-worker (2 cold + 3).
    expect(modes(frames).slice(0, 8)).toEqual(['single', 'single', 'single', 'single', 'shared', 'shared', 'shared', 'shared']);
    expect(settledOn(frames, 8)).toBe('per-worker');
    const { estimates, mode, phase } = pool.choice;
    expect([mode, phase]).toEqual(['per-worker', 'steady']);
    // 510 ms per whole frame; shared: 10 + 200 per share, then 20 + 100 to finish.
    expect(estimates.single!.msPerFrame).toBeCloseTo(510, 0);
    expect(estimates.shared!.msPerFrame).toBeCloseTo(330, 0);
    expect(estimates['per-worker']!.msPerFrame).toBeCloseTo(255, 0);
    expect(estimates['per-worker']!.latencyMs).toBeCloseTo(510, 0);
    expect(describeChoice(pool.choice)).toBe('2 HE worker(s), one frame per worker (auto): 255 ms/frame (each 510 ms) vs 330 shared, 510 single');
    // Both workers ran whole frames, two at a time.
    expect(calls.slice(-10).filter((c) => c === 'evaluate:0').length).toBeGreaterThanOrEqual(4);
    expect(calls.slice(-10).filter((c) => c === 'evaluate:1').length).toBeGreaterThanOrEqual(4);
    expect(pool.concurrency).toBe(2);
  });

  it('frames one at a time (dropped files): one frame per worker is no faster than one worker, sharing wins on latency', async () => {
    const { pool, stream } = await makePool();
    const frames = await stream(20, 'one-at-a-time');
    expect(settledOn(frames, 14)).toBe('shared');
    expect(pool.choice.estimates['per-worker']!.msPerFrame).toBeCloseTo(510, 0);
    expect(describeChoice(pool.choice)).toBe('2 HE worker(s), sharing each frame (auto): 330 ms/frame vs 510 one per worker, 510 single');
    expect(pool.concurrency).toBe(1);
  });

  it('a slow share makes auto leave shared within a few frames, for one worker when the other is loaded', async () => {
    const { pool, stream, machine } = await makePool();
    const slowFrom = 20;
    const frames = await stream(40, 'one-at-a-time', (done) => {
      // Another program now shares worker 1's core: its share takes 4× as long.
      if (done === slowFrom) machine.set({ speed: [1, 0.25] });
    });
    expect(settledOn(frames.slice(0, slowFrom), 14)).toBe('shared');
    const after = modes(frames.slice(slowFrom));
    // The first slow shared frame trips the change; then single, one per worker, shared again are re-measured.
    expect(after.slice(0, 2)).toEqual(['shared', 'single']);
    expect(after.filter((m) => m === 'shared').length).toBeLessThanOrEqual(1 + 3);
    expect(settledOn(frames, slowFrom + 12)).toBe('single');
    const { estimates } = pool.choice;
    // A shared frame waits for the slow share: (10 + 200) / 0.25 + 120.
    expect(estimates.shared!.msPerFrame).toBeCloseTo(960, 0);
    expect(estimates.single!.msPerFrame).toBeCloseTo(510, 0);
    // Single runs on the worker that is not loaded.
    expect(new Set(frames.slice(slowFrom + 12).map((f) => f.worker))).toEqual(new Set([0]));
    expect(describeChoice(pool.choice)).toMatch(/^2 HE worker\(s\), one worker at a time \(auto\): 510 ms\/frame vs 510 one per worker, 960 shared$/);
  });

  it('frames queue and worker 1 is loaded: one frame per worker still gives more frames per second than one worker', async () => {
    const { pool, stream } = await makePool({ speeds: [1, 0.5] });
    const frames = await stream(40, 'queue');
    expect(settledOn(frames, 16)).toBe('per-worker');
    const { estimates } = pool.choice;
    // 1/510 + 0.5/510 frames per ms: 340 ms per frame, against 510 single and (10 + 200) / 0.5 + 120 = 540 shared.
    expect(estimates['per-worker']!.msPerFrame).toBeGreaterThan(300);
    expect(estimates['per-worker']!.msPerFrame).toBeLessThan(390);
    expect(estimates.shared!.msPerFrame).toBeCloseTo(540, 0);
  });

  it('frames queue and worker 1 is at a quarter speed: still one frame per worker, measured without flapping', async () => {
    const { pool, stream } = await makePool({ speeds: [1, 0.25] });
    const frames = await stream(60, 'queue');
    // Worker 0 completes four frames for each of worker 1's: 1/510 + 1/2040 frames per ms = 408 ms per frame.
    const afterWarmUp = modes(frames.slice(16));
    expect(afterWarmUp.filter((m) => m !== 'per-worker').length).toBeLessThanOrEqual(3);
    expect(pool.choice.mode).toBe('per-worker');
    expect(pool.choice.estimates['per-worker']!.msPerFrame).toBeGreaterThan(330);
    expect(pool.choice.estimates['per-worker']!.msPerFrame).toBeLessThan(490);
    expect(pool.choice.estimates.shared!.msPerFrame).toBeCloseTo(960, 0);
  });

  it('another CPU-bound program takes one of the two cores: auto falls back to one worker, frames queuing or not', async () => {
    for (const demand of ['queue', 'one-at-a-time'] as const) {
      const { pool, stream } = await makePool({ cores: 1 });
      const frames = await stream(24, demand);
      expect(settledOn(frames, 14)).toBe('single');
      const { estimates } = pool.choice;
      expect(estimates.single!.msPerFrame).toBeCloseTo(510, 0);
      // Both shares on one core (420), then finishing (120).
      expect(estimates.shared!.msPerFrame).toBeCloseTo(540, 0);
      // Two whole frames on one core: no more frames per second, and each takes twice as long.
      if (demand === 'queue') expect(estimates['per-worker']!.latencyMs).toBeCloseTo(1020, 0);
      expect(pool.concurrency).toBe(1);
      pool.dispose();
    }
  });

  it('conditions change: a core taken mid-stream leaves one frame per worker for one worker; freed, it comes back (recovery)', async () => {
    const { pool, stream, machine } = await makePool({ reprobeEvery: 10 });
    const loadedAt = 20;
    const freedAt = 50;
    const frames = await stream(90, 'queue', (done) => {
      if (done === loadedAt) machine.set({ cores: 1 });
      if (done === freedAt) machine.set({ cores: 2 });
    });
    expect(settledOn(frames.slice(0, loadedAt), 13)).toBe('per-worker');
    // Loaded (one core for both workers): single 510 ms/frame, shared 540, one per worker
    // 510 (two frames of 1020 ms at once, so no slower, but each frame twice as old). The
    // only frames slower than one worker are shared's re-measuring runs, 3 frames at most in
    // a row. Here a periodic re-check falls on the change (frame 21) and measures one per
    // worker across it, so it takes a re-check, a confirmation, the change and a re-measuring
    // round before one worker runs steadily: under 25 frames.
    const loaded = modes(frames.slice(loadedAt, freedAt));
    expect(longestRun(loaded, 'shared')).toBeLessThanOrEqual(3);
    const singleFrom = firstSteady(frames, loadedAt, 'single', 8);
    expect(singleFrom).toBeGreaterThan(loadedAt);
    expect(singleFrom - loadedAt).toBeLessThanOrEqual(25);
    // Freed: single's frame times do not change, but the periodic re-check finds one frame
    // per worker twice as fast as before, so every mode is re-measured and it comes back.
    const backFrom = firstSteady(frames, freedAt, 'per-worker', 8);
    expect(backFrom).toBeGreaterThan(freedAt);
    expect(backFrom - freedAt).toBeLessThanOrEqual(10 + 4 + 4 + 3);
    expect(pool.choice.estimates['per-worker']!.msPerFrame).toBeCloseTo(255, 0);
    expect(pool.choice.estimates.shared!.msPerFrame).toBeCloseTo(330, 0);
  });

  it('a core taken while one frame per worker runs steadily: one worker within a few frames', async () => {
    const { pool, stream, machine } = await makePool();
    const frames = await stream(45, 'queue', (done) => {
      if (done === 20) machine.set({ cores: 1 });
    });
    const after = frames.slice(20).map((f) => f.mode);
    // Two frames of one per worker at 510 ms/frame (from 255) trip the change; then single,
    // shared and one per worker are re-measured (3 + 3 + 3, with the frames in flight), then single.
    const singleFrom = firstSteady(frames, 20, 'single', 10);
    expect(singleFrom - 20).toBeLessThanOrEqual(14);
    expect(longestRun(after, 'shared')).toBeLessThanOrEqual(3);
    expect(pool.choice).toMatchObject({ mode: 'single', phase: 'steady' });
  });

  it('a fixed ?mode= is kept whatever the measurements say', async () => {
    const shared = await makePool({ mode: 'shared', speeds: [1, 0.25] });
    const a = await shared.stream(12, 'queue');
    expect(new Set(modes(a))).toEqual(new Set(['shared']));
    expect(a.every((f) => f.workers === 2)).toBe(true);
    expect(describeChoice(shared.pool.choice)).toBe('2 HE worker(s), sharing each frame (?mode=shared): 960 ms/frame');

    const perWorker = await makePool({ mode: 'per-worker' });
    const b = await perWorker.stream(12, 'queue');
    expect(new Set(modes(b))).toEqual(new Set(['per-worker']));
    expect(new Set(b.map((f) => f.worker))).toEqual(new Set([0, 1]));
    expect(perWorker.pool.concurrency).toBe(2);
    expect(describeChoice(perWorker.pool.choice)).toBe('2 HE worker(s), one frame per worker (?mode=per-worker): 255 ms/frame (each 510 ms)');

    const single = await makePool({ mode: 'single' });
    const c = await single.stream(6, 'queue');
    expect(new Set(c.map((f) => `${f.mode}:${f.worker}:${f.workers}`))).toEqual(new Set(['single:0:1']));
    expect(single.calls.filter((call) => call.endsWith(':1'))).toEqual([]);
    expect(single.pool.concurrency).toBe(1);
  });

  it('the worker line during warm-up and re-measuring, and with one worker', () => {
    const chooser = new ModeChooser('auto', 2);
    expect(describeChoice(chooser.choice())).toBe('2 HE worker(s), auto: measuring single (warm-up)');
    const sample = (mode: PoolMode, ms: number) => chooser.record({ mode, msPerFrame: ms, latencyMs: ms, worker: 0, workers: mode === 'shared' ? 2 : 1 });
    for (let i = 0; i < 4; i++) sample('single', 500);
    expect(describeChoice(chooser.choice())).toBe('2 HE worker(s), auto: measuring shared (warm-up); so far 500 single');
    for (let i = 0; i < 4; i++) sample('shared', 300);
    for (let i = 0; i < 5; i++) chooser.record({ mode: 'per-worker', msPerFrame: 400, latencyMs: 800, worker: i % 2, workers: 1 });
    expect(chooser.choice()).toMatchObject({ mode: 'shared', phase: 'steady' });
    expect(describeChoice(chooser.choice())).toBe('2 HE worker(s), sharing each frame (auto): 300 ms/frame vs 400 one per worker, 500 single');
    // Slower frames: the mean of the window (3 measured at warm-up + 3 now) is 67% above what shared measured when chosen.
    for (let i = 0; i < 3; i++) sample('shared', 700);
    expect(chooser.choice()).toMatchObject({ mode: 'single', phase: 'probing', previous: 'shared' });
    expect(describeChoice(chooser.choice())).toBe('2 HE worker(s), auto: re-measuring single (its frame times rose 67%); shared 500 ms/frame');
    // Single, then one per worker, then shared again are re-measured; single is now the fastest.
    for (let i = 0; i < 3; i++) sample('single', 500);
    expect(chooser.mode).toBe('per-worker');
    for (let i = 0; i < 3; i++) chooser.record({ mode: 'per-worker', msPerFrame: 600, latencyMs: 1200, worker: i % 2, workers: 1 });
    expect(chooser.mode).toBe('shared');
    for (let i = 0; i < 3; i++) sample('shared', 700);
    expect(chooser.choice()).toMatchObject({ mode: 'single', phase: 'steady' });
    expect(describeChoice(chooser.choice())).toBe('2 HE worker(s), one worker at a time (auto): 500 ms/frame vs 600 one per worker, 700 shared');
    expect(describeChoice(new ModeChooser('auto', 1).choice())).toBe('1 HE worker(s)');
    expect(new ModeChooser('per-worker', 1).mode).toBe('single');
  });

  it('refuses a mode that does not exist, and bad tuning', () => {
    const factory = () => ({}) as WorkerHandle;
    expect(() => new HePool(factory, { size: 2, mode: 'fast' as never })).toThrow("the pool mode must be one of auto, shared, per-worker, single, got 'fast'");
    expect(() => new HePool(factory, { size: 2, mode: 'per_worker' as never })).toThrow(/got 'per_worker'/);
    expect(() => new HePool(factory, { size: 2, modeOptions: { window: 0 } })).toThrow('window must be an integer of at least 1, got 0');
    expect(() => new HePool(factory, { size: 2, modeOptions: { margin: -0.1 } })).toThrow('margin must be a number of at least 0, got -0.1');
    expect(new HePool(factory, { size: 2 }).setting).toBe('auto');
  });
});

describe('the kiosk stream loop (src/edge/frame-loop.ts)', () => {
  it('keeps up to concurrency() frames in flight, finishes those in flight after an error, then throws it', async () => {
    const started: number[] = [];
    const finished: number[] = [];
    const pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
    let taken = 0;
    let peak = 0;
    const loop = runFrameLoop({
      next: async () => (taken < 10 ? taken++ : undefined),
      process: (frame) =>
        new Promise<void>((resolve, reject) => {
          started.push(frame);
          peak = Math.max(peak, started.length - finished.length);
          pending.set(frame, {
            resolve: () => {
              finished.push(frame);
              resolve();
            },
            reject,
          });
        }),
      concurrency: () => 2,
      running: () => true,
    });
    const tick = () => new Promise((resolve) => setImmediate(resolve));
    await tick();
    expect(started).toEqual([0, 1]);
    pending.get(0)!.resolve();
    await tick();
    expect(started).toEqual([0, 1, 2]);
    pending.get(2)!.reject(new Error('std::bad_alloc'));
    await tick();
    // No new frame after the error; frame 1 is still in flight and is finished, not dropped.
    expect(started).toEqual([0, 1, 2]);
    let thrown: Error | undefined;
    void loop.catch((error: Error) => (thrown = error));
    await tick();
    expect(thrown).toBeUndefined();
    pending.get(1)!.resolve();
    await tick();
    expect(thrown?.message).toBe('std::bad_alloc');
    expect(finished).toEqual([0, 1]);
    expect(peak).toBe(2);
  });
});
