/**
 * How the HE pool (./pool.ts) puts its workers to use, and how it chooses (`auto`).
 *
 * Three configurations ("modes"):
 * - `shared`: every frame is split across the workers (each evaluates a share of the first
 *   layer, one finishes). Lowest latency on idle cores, but a frame waits for its slower
 *   share: when another program takes a core, shared frames suffer first.
 * - `per-worker`: one whole frame per worker, several frames in flight (as many as
 *   workers). More frames per second; each frame takes as long as a whole frame on one
 *   (busier) worker.
 * - `single`: one worker only, one frame at a time.
 *
 * WHAT "FASTEST" MEANS FOR A CAMERA KIOSK. The camera always has a next frame (it delivers
 * ~30 frames/s; HE takes ~0.5 s per frame), so frames queue, and what the kiosk delivers
 * is frames classified per second: a frame it does not classify is a camera frame lost.
 * The pool therefore ranks modes by **pool milliseconds per frame** (`msPerFrame`): the
 * wall time the pool spends with frames in flight, each moment divided equally among the
 * frames in flight then. A frame alone in the pool is charged its whole duration; two
 * frames in flight together are charged half each. Over a window this is 1/throughput
 * when frames queue (the kiosk's stream keeps as many frames in flight as the pool asks,
 * `HePool.concurrency`), and it is the per-frame latency when frames come one at a time
 * (dropped files, a slow source) — then `per-worker` has nothing to run in parallel, is
 * measured as slow as `single`, and `shared` wins on latency. The measure follows the
 * demand the kiosk really gives the pool, and time the pool is idle is never charged.
 * (For one frame per worker the window's frames are combined per worker — each worker's
 * rate added up, scaled by how busy the workers were — so that a slow worker, which
 * completes fewer frames, weighs what it contributes; see `estimate`.)
 * Ties — modes within `margin` (10%) of the lowest ms/frame — go to the lowest per-frame
 * **latency** (median, admission to result): one frame per worker is chosen only when it
 * gives clearly more frames per second, since each of its frames is older when it lands.
 * A consequence, by the estimates: the chosen mode is never slower than `single` (if it
 * were, `single` would be within the margin of the best and have the lower latency).
 *
 * HOW `auto` MEASURES. Warm-up: a short run of each mode (single, shared, per-worker —
 * until every worker running a frame has completed one; the first frame of single and of
 * shared is discarded as cold), then the fastest.
 * Then continuously: the running mode's sliding window (its last `window` frames) is
 * compared with what it measured when chosen; a change of more than `change` (20%) either
 * way — another program took or freed a core — re-measures every mode at once
 * (`probeFrames` frames each: single first, the running mode last) and chooses again. A
 * mode that became much slower trips this after one or two frames, one 1.7× slower
 * (a shared frame waiting for a share on a busy core) after three, so it is left after a
 * few frames plus the re-measuring runs. Every `reprobeEvery` frames it also re-measures
 * the other mode it measured longest ago; if that one changed by more than `change`,
 * conditions changed and every mode is re-measured (recovery when a core frees up). A
 * choice of a mode whose figures are older than the current re-measuring is measured
 * first, so the pool never switches on stale figures alone.
 *
 * Pure logic, no timers: the pool reports each frame (`record`) and reads `mode`. Node
 * tests drive it with durations they control.
 */

export const POOL_MODES = ['shared', 'per-worker', 'single'] as const;
export type PoolMode = (typeof POOL_MODES)[number];
export const MODE_SETTINGS = ['auto', ...POOL_MODES] as const;
/** `?mode=`: a fixed mode, or `auto` (the default). */
export type ModeSetting = (typeof MODE_SETTINGS)[number];

export function isModeSetting(value: unknown): value is ModeSetting {
  return typeof value === 'string' && (MODE_SETTINGS as readonly string[]).includes(value);
}

export interface ModeOptions {
  /** Frames in a mode's sliding window (default 8). */
  window?: number;
  /** Measured frames per warm-up or re-measuring run (default 3; per-worker: at least one per worker). */
  probeFrames?: number;
  /** Modes within this fraction of the lowest ms/frame count as equally fast (default 0.1). */
  margin?: number;
  /** A change of the running mode's recent ms/frame by more than this fraction re-measures the others (default 0.2). */
  change?: number;
  /** Frames between re-measurements of another mode while nothing changes (default 40). */
  reprobeEvery?: number;
}

/** One completed frame, as the pool measured it. */
export interface ModeSample {
  mode: PoolMode;
  /** Pool time charged to the frame (see above). */
  msPerFrame: number;
  /** From the frame's admission to its result. */
  latencyMs: number;
  /** The worker that completed the frame, and how many workers took part. */
  worker: number;
  workers: number;
  /** Other frames still in flight when this one completed (default 0). */
  inFlight?: number;
}

export interface ModeEstimate {
  /** Mean pool ms per frame over the window. */
  msPerFrame: number;
  /** Median latency over the window. */
  latencyMs: number;
  /** Frames in the window. */
  frames: number;
  /** The pool's frame count when this mode last completed a measured frame. */
  at: number;
}

export type ModePhase = 'fixed' | 'warm-up' | 'probing' | 'steady';

export interface PoolChoice {
  setting: ModeSetting;
  workers: number;
  /** The mode new frames run in. */
  mode: PoolMode;
  /** fixed (`?mode=` or one worker), warm-up, probing (re-measuring another mode), steady. */
  phase: ModePhase;
  /** Why this mode, in words (for the screen). */
  reason: string;
  /** auto, while probing: the mode it ran before (it may return to it). */
  previous?: PoolMode;
  estimates: Partial<Record<PoolMode, ModeEstimate>>;
  /** Frames completed. */
  frames: number;
}

interface Window {
  /** The mode's recent frames, newest last (up to 4 × window: the estimate reads the last `window`). */
  samples: ModeSample[];
  at: number;
}

interface Run {
  mode: PoolMode;
  /** Completions still to discard (a cold mode). */
  settle: number;
  /** Measured completions that end the run (Infinity: steady or fixed). */
  measure: number;
  measured: number;
  /** Workers that completed a measured frame of the run (per-worker: the run waits for those in flight, up to 4 × measure frames). */
  workers: Set<number>;
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
const median = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

function checkedOption(name: string, value: number, min: number, integer: boolean): number {
  if (!Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} of at least ${min}, got ${value}`);
  }
  return value;
}

export class ModeChooser {
  private readonly windows = new Map<PoolMode, Window>();
  /** Modes never run yet: their first frames are discarded. */
  private readonly cold = new Set<PoolMode>(POOL_MODES);
  /** Runs still to measure before choosing. */
  private pending: PoolMode[] = [];
  private run!: Run;
  private phase: ModePhase;
  private reason = '';
  private previous?: PoolMode;
  private frames = 0;
  /** The running mode's ms/frame when it was chosen. */
  private reference = 0;
  /** Modes measured since the last choice: a choice of another mode than these and the running one measures it first. */
  private readonly cycle = new Set<PoolMode>();
  /** The mode being re-measured by a periodic check, and what it measured before. */
  private rechecking?: { mode: PoolMode; before: number | undefined };
  /** Per worker, its recent whole-frame durations while every worker ran one (same conditions for all). */
  private readonly workerMs = new Map<number, number[]>();
  private readonly window: number;
  private readonly probeFrames: number;
  private readonly margin: number;
  private readonly change: number;
  private readonly reprobeEvery: number;

  constructor(
    readonly setting: ModeSetting,
    readonly workers: number,
    options: ModeOptions = {},
  ) {
    if (!isModeSetting(setting)) throw new Error(`the pool mode must be one of ${MODE_SETTINGS.join(', ')}, got '${String(setting)}'`);
    this.window = checkedOption('window', options.window ?? 8, 1, true);
    this.probeFrames = checkedOption('probeFrames', options.probeFrames ?? 3, 1, true);
    this.margin = checkedOption('margin', options.margin ?? 0.1, 0, false);
    this.change = checkedOption('change', options.change ?? 0.2, 0, false);
    this.reprobeEvery = checkedOption('reprobeEvery', options.reprobeEvery ?? 40, 1, true);
    if (workers <= 1 || setting !== 'auto') {
      this.phase = 'fixed';
      this.reason = workers <= 1 ? 'one HE worker' : `?mode=${setting}`;
      this.run = { mode: workers <= 1 ? 'single' : (setting as PoolMode), settle: 0, measure: Infinity, measured: 0, workers: new Set() };
    } else {
      this.phase = 'warm-up';
      this.pending = ['single', 'shared', 'per-worker'];
      this.next('warm-up');
    }
  }

  /** The mode the next frame runs in. */
  get mode(): PoolMode {
    return this.run.mode;
  }

  /** Workers from fastest to slowest by their recent whole frames (unknown ones last, by index). */
  rankWorkers(): number[] {
    const speed = (i: number) => {
      const times = this.workerMs.get(i);
      return times === undefined || times.length === 0 ? Infinity : median(times);
    };
    return Array.from({ length: this.workers }, (_, i) => i).sort((a, b) => speed(a) - speed(b) || a - b);
  }

  estimate(mode: PoolMode): ModeEstimate | undefined {
    const w = this.windows.get(mode);
    if (w === undefined || w.samples.length === 0) return undefined;
    const recent = w.samples.slice(-this.window);
    const latencyMs = median(recent.map((x) => x.latencyMs));
    if (mode !== 'per-worker') return { msPerFrame: mean(recent.map((x) => x.msPerFrame)), latencyMs, frames: recent.length, at: w.at };
    // One frame per worker. Workers of different speeds complete frames at different rates,
    // so a few frames' mean would depend on which workers happened to finish; instead each
    // worker's rate (1 / its mean frame time) is added up — using its latest frame if none is
    // recent — and scaled by how busy the workers were (frames in flight per worker seen:
    // 1 when frames queue; one frame at a time on one worker counts that worker alone).
    const used = [...recent];
    const seen = new Set(recent.map((x) => x.worker));
    for (let i = w.samples.length - recent.length - 1; i >= 0; i--) {
      const older = w.samples[i]!;
      if (!seen.has(older.worker)) {
        seen.add(older.worker);
        used.push(older);
      }
    }
    let rate = 0;
    for (const worker of seen) rate += 1 / mean(used.filter((x) => x.worker === worker).map((x) => x.latencyMs));
    const concurrency = used.reduce((a, x) => a + x.latencyMs, 0) / used.reduce((a, x) => a + x.msPerFrame, 0);
    const busy = Math.min(1, concurrency / seen.size);
    return { msPerFrame: 1 / (rate * busy), latencyMs, frames: recent.length, at: w.at };
  }

  choice(): PoolChoice {
    const estimates: Partial<Record<PoolMode, ModeEstimate>> = {};
    for (const mode of POOL_MODES) {
      const e = this.estimate(mode);
      if (e !== undefined) estimates[mode] = e;
    }
    return {
      setting: this.setting,
      workers: this.workers,
      mode: this.run.mode,
      phase: this.phase,
      reason: this.reason,
      ...(this.phase === 'probing' && this.previous !== undefined ? { previous: this.previous } : {}),
      estimates,
      frames: this.frames,
    };
  }

  /** A completed frame (frames retried after a worker failure are not reported: they measure the failure). */
  record(sample: ModeSample): void {
    this.frames++;
    if (sample.mode === 'per-worker' && sample.workers === 1) {
      const times = this.workerMs.get(sample.worker) ?? [];
      times.push(sample.latencyMs);
      if (times.length > 4) times.shift();
      this.workerMs.set(sample.worker, times);
    }
    const run = this.run;
    if (sample.mode !== run.mode) {
      // A frame of the previous run, still in flight when the mode changed.
      this.push(sample);
      return;
    }
    if (run.settle > 0) {
      run.settle--;
      return;
    }
    this.push(sample);
    run.measured++;
    run.workers.add(sample.worker);
    if (this.phase === 'fixed') return;
    if (this.phase !== 'steady') {
      // One frame per worker: a slower worker completes fewer frames; a frame of it still in
      // flight must count too, or the run would measure the fast worker alone.
      const waiting = run.mode === 'per-worker' && (sample.inFlight ?? 0) > 0 && run.workers.size < this.workers && run.measured < 4 * run.measure;
      if (run.measured < run.measure || waiting) return;
      const recheck = this.rechecking;
      this.rechecking = undefined;
      const now = this.estimate(run.mode)?.msPerFrame;
      if (recheck?.mode === run.mode && recheck.before !== undefined && now !== undefined && Math.abs(now / recheck.before - 1) > this.change) {
        // The re-checked mode changed: so did the conditions; measure every mode again.
        this.round(this.previous!, `${SHORT[run.mode]} went from ${ms(recheck.before)} to ${ms(now)} ms/frame`, run.mode);
        return;
      }
      this.next(this.phase === 'warm-up' ? 'warm-up' : this.reason);
      return;
    }
    if (run.measured >= this.probeFrames) {
      const change = this.estimate(run.mode)!.msPerFrame / this.reference - 1;
      if (Math.abs(change) > this.change) {
        this.round(run.mode, `its frame times ${change > 0 ? 'rose' : 'fell'} ${Math.round(Math.abs(change) * 100)}%`);
        return;
      }
    }
    if (run.measured >= this.reprobeEvery) {
      const stalest = POOL_MODES.filter((m) => m !== run.mode).sort((a, b) => (this.windows.get(a)?.at ?? -1) - (this.windows.get(b)?.at ?? -1))[0]!;
      this.rechecking = { mode: stalest, before: this.estimate(stalest)?.msPerFrame };
      this.probe([stalest], 'periodic re-check');
    }
  }

  /**
   * Re-measures every mode but `fresh` (just measured): single first (the baseline),
   * `running` last (it goes on from there if it is still the fastest).
   */
  private round(running: PoolMode, why: string, fresh?: PoolMode): void {
    const others = POOL_MODES.filter((m) => m !== running && m !== 'single');
    const order: PoolMode[] = running === 'single' ? [...others, 'single'] : ['single', ...others, running];
    this.probe(
      order.filter((m) => m !== fresh),
      why,
    );
    this.previous = running;
  }

  private push(sample: ModeSample): void {
    const w = this.windows.get(sample.mode) ?? { samples: [], at: 0 };
    w.samples.push(sample);
    if (w.samples.length > 4 * this.window) w.samples.shift();
    w.at = this.frames;
    this.windows.set(sample.mode, w);
  }

  private probe(modes: PoolMode[], why: string): void {
    this.previous = this.run.mode;
    this.phase = 'probing';
    this.pending = modes;
    this.next(why);
  }

  /** Starts the next pending run, or chooses once none is left. */
  private next(why: string): void {
    const mode = this.pending.shift();
    if (mode === undefined) {
      this.decide();
      return;
    }
    this.cycle.add(mode);
    const perWorker = mode === 'per-worker';
    // A fresh measurement: the mode's older frames described other conditions.
    this.windows.delete(mode);
    this.run = {
      mode,
      // The first frame on worker 0 (single) and the first share on the others (shared) are
      // cold. One frame per worker comes after both: its frames are all measured, since a
      // slow worker may complete only one of them.
      settle: this.cold.has(mode) && !perWorker ? 1 : 0,
      measure: perWorker ? Math.max(this.probeFrames, this.workers) : this.probeFrames,
      measured: 0,
      workers: new Set(),
    };
    this.cold.delete(mode);
    this.reason = why;
  }

  /**
   * The fastest mode by the estimates: the lowest ms/frame, and among the modes within
   * `margin` of it the lowest latency (then single, shared, per-worker: fewer workers busy).
   */
  best(): PoolMode {
    const known = POOL_MODES.map((mode) => ({ mode, e: this.estimate(mode) })).filter((k): k is { mode: PoolMode; e: ModeEstimate } => k.e !== undefined);
    if (known.length === 0) return this.run.mode;
    const lowest = Math.min(...known.map((k) => k.e.msPerFrame));
    const near = known.filter((k) => k.e.msPerFrame <= lowest * (1 + this.margin));
    const order: PoolMode[] = ['single', 'shared', 'per-worker'];
    near.sort((a, b) => a.e.latencyMs - b.e.latencyMs || order.indexOf(a.mode) - order.indexOf(b.mode));
    return near[0]!.mode;
  }

  private decide(): void {
    const mode = this.best();
    if (mode !== this.previous && !this.cycle.has(mode)) {
      // Its figures are from older conditions: measure it before switching to it.
      this.pending = [mode];
      this.next(`checking ${SHORT[mode]} before switching to it`);
      return;
    }
    this.cycle.clear();
    this.phase = 'steady';
    this.previous = undefined;
    this.run = { mode, settle: 0, measure: Infinity, measured: 0, workers: new Set() };
    this.reference = this.estimate(mode)?.msPerFrame ?? 0;
    this.reason = 'fastest';
  }
}

const LABEL: Record<PoolMode, string> = { shared: 'sharing each frame', 'per-worker': 'one frame per worker', single: 'one worker at a time' };
const SHORT: Record<PoolMode, string> = { shared: 'shared', 'per-worker': 'one per worker', single: 'single' };
const ms = (value: number) => `${Math.round(value)}`;

/**
 * The screen's worker line: how many workers, the mode and why, e.g.
 * "2 HE worker(s), one frame per worker (auto): 410 ms/frame (each 820 ms) vs 530 shared, 560 single".
 */
export function describeChoice(choice: PoolChoice): string {
  const { workers, mode, estimates } = choice;
  const head = `${workers} HE worker(s)`;
  const figure = (m: PoolMode) => {
    const e = estimates[m];
    if (e === undefined) return undefined;
    // A per-worker frame's latency is not its share of the pool's time: say both.
    return m === 'per-worker' && e.latencyMs > e.msPerFrame * 1.05 ? `${ms(e.msPerFrame)} ms/frame (each ${ms(e.latencyMs)} ms)` : `${ms(e.msPerFrame)} ms/frame`;
  };
  const others = (except: PoolMode[]) =>
    POOL_MODES.filter((m) => !except.includes(m) && estimates[m] !== undefined)
      .sort((a, b) => estimates[a]!.msPerFrame - estimates[b]!.msPerFrame)
      .map((m) => `${ms(estimates[m]!.msPerFrame)} ${SHORT[m]}`);
  if (choice.phase === 'fixed') {
    const what = workers <= 1 ? head : `${head}, ${LABEL[mode]} (?mode=${choice.setting})`;
    const f = figure(mode);
    return f === undefined ? what : `${what}: ${f}`;
  }
  if (choice.phase === 'warm-up') {
    const so = others([]);
    return `${head}, auto: measuring ${SHORT[mode]} (warm-up)${so.length > 0 ? `; so far ${so.join(', ')}` : ''}`;
  }
  if (choice.phase === 'probing') {
    const back = choice.previous;
    const was = back !== undefined && estimates[back] !== undefined ? `; ${SHORT[back]} ${figure(back)}` : '';
    return `${head}, auto: re-measuring ${SHORT[mode]} (${choice.reason})${was}`;
  }
  const f = figure(mode);
  const vs = others([mode]);
  return `${head}, ${LABEL[mode]} (auto)${f === undefined ? '' : `: ${f}`}${vs.length > 0 ? ` vs ${vs.join(', ')}` : ''}`;
}
