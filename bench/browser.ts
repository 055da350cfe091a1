import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { FrameRecord, Kiosk, Stage } from '../src/edge/app';
import { isModeSetting, POOL_MODES, type ModeSetting, type PoolMode } from '../src/edge/pool-modes';
import { buildSite, enrollKiosk, kioskFrames, launch, protectColour, type Site, type SiteOptions } from '../tests/browser/kiosk';
import { COLOUR_FIXTURE } from '../tests/model/colour-fixture';
import { busyLoop, machine, round, table } from './machine';

/** The per-frame stages the JSON reports (the outbox's IndexedDB write is reported apart, as storeMs). */
const STAGES = ['extract', 'encrypt', 'evaluate', 'serialize', 'send'] as const satisfies readonly Stage[];
type ReportedStage = (typeof STAGES)[number];

/** The models `npm run bench -- browser --model NAME` protects and streams. */
export const BROWSER_MODELS = ['mnist', 'colour'] as const;
export type BrowserModelName = (typeof BROWSER_MODELS)[number];

/** The browser suite's `--model`: one of BROWSER_MODELS, else a clear error. */
export function browserModel(value: string): BrowserModelName {
  const found = BROWSER_MODELS.find((m) => m === value);
  if (found === undefined) throw new Error(`no browser benchmark for model '${value}': choose one of ${BROWSER_MODELS.join(', ')}`);
  return found;
}

/** Where `npm run bench -- browser [--model NAME]` writes by default, so that one model's run never overwrites another's. */
export function browserResultsFile(model: BrowserModelName): string {
  return model === 'mnist' ? 'bench/results/browser.json' : `bench/results/browser-${model}.json`;
}

export interface BrowserBenchOptions {
  /**
   * A model protected beforehand: its data directory and model directory (as
   * tests/browser/kiosk.ts `SiteOptions.model`). Its extractor must take the demo stream's
   * images (`demo`). Default: models/paper-cnn-x2+2x.onnx protected as 'mnist' (CKKS, 128-bit).
   */
  model?: SiteOptions['model'];
  /** The kiosk's demo stream for `model`, as `start --demo FILE|DIR` takes it (default: MNIST test digits). */
  demo?: string;
  /**
   * Instead of `model` and `demo`, a model by name (BROWSER_MODELS): 'mnist' is the
   * default; 'colour' protects models/colour-poly-square.onnx with its input spec flags
   * and --calibration tests/fixtures/colour-shapes/ (tests/browser/kiosk.ts
   * `protectColour`, the default split) and streams those 200 PNG files.
   */
  named?: string;
  /**
   * The runs: HE workers, the pool's mode (`?mode=`), and whether a CPU-bound process runs
   * beside the browser. Default: 1 worker; 2 workers auto, shared and per-worker — each
   * on the quiet machine and again loaded.
   */
  runs?: BrowserRunSpec[];
  /** Shorthand for runs of that many HE workers each, shared frames, not loaded (what the conv and paper suites ask). */
  workers?: number[];
  /** Frames measured per run, after warm-up frames (default 100; 20 with quick). */
  frames?: number;
  quick?: boolean;
}

export interface BrowserRunSpec {
  workers: number;
  mode: ModeSetting;
  /** A busy-loop child process (another CPU-bound program, pinned to nothing) runs during the run's warm-up and frames. */
  loaded: boolean;
}

/** `npm run bench -- browser`'s runs: is the kiosk with 2 workers ever slower than with 1, quiet or loaded? */
export const DEFAULT_BROWSER_RUNS: BrowserRunSpec[] = [false, true].flatMap((loaded) => [
  { workers: 1, mode: 'single' as const, loaded },
  { workers: 2, mode: 'auto' as const, loaded },
  { workers: 2, mode: 'shared' as const, loaded },
  { workers: 2, mode: 'per-worker' as const, loaded },
]);

export interface BrowserRun {
  workers: number;
  /** The pool's mode as asked (`?mode=`); with auto, `modes` says what it ran. */
  mode: ModeSetting;
  /** Whether a CPU-bound process ran beside the browser. */
  loaded: boolean;
  frames: number;
  /**
   * Per frame, from extraction until the encrypted result is stored in the outbox: the
   * frame's latency. With one frame per worker several frames are in flight at once, so
   * this is not the time per frame; `msPerFrame` is.
   */
  frameMs: { median: number; p95: number; min: number; max: number };
  /**
   * Wall time of the run divided by its frames (the kiosk's stream keeps as many frames
   * in flight as the pool asks): what auto minimizes (src/edge/pool-modes.ts). Equal to
   * frameMs plus the gaps between frames when one frame is in flight at a time.
   */
  msPerFrame: number;
  /** Frames run in each mode (auto re-measures the other modes now and then). */
  modes: Partial<Record<PoolMode, number>>;
  /** The kiosk's worker line after the run (the mode and why). */
  workerLine: string;
  /** Warm-up frames before the measured ones (auto: until it has chosen). */
  warmupFrames: number;
  /** The machine's 1-minute load average at the end of the run. */
  loadAverage: number;
  /** Per-frame medians. */
  stagesMs: Record<ReportedStage, number>;
  stagesP95Ms: Record<ReportedStage, number>;
  /** Median of the outbox's IndexedDB write. */
  storeMs: number;
  /** Frames classified per second over the run (1000 / msPerFrame). */
  framesPerSecond: number;
  /** The largest WASM heap among the run's HE workers, after the run. */
  wasmHeapMB: number;
  /** The most HE workers that shared a frame (1: frames ran whole). */
  workersPerFrame: number;
}

export interface BrowserReport {
  machine: Record<string, unknown>;
  browser: { name: string; version: string; headless: true; crossOriginIsolated: boolean; extractorThreads: number };
  model: { modelId: string; version: number; scheme: string; security: number; polyModulusDegree: number; bundleBytes: number };
  /** The kiosk's demo stream, as it names it (e.g. '200 image files'). */
  demo: string;
  runs: BrowserRun[];
  /** The first start: the bundle downloaded from the static host and verified (signature, SHA-256s). */
  bundleLoadMs: number;
  /** Later starts: the bundle read from IndexedDB and verified again (median over the runs without load). */
  bundleCacheLoadMs: number;
  /** The largest HE worker WASM heap over all runs. */
  wasmHeapMB: number;
  /** The machine's 1-minute load average before and after (other work on the cores slows the shared frames first). */
  loadAverage: { start: number; end: number };
}

const kiosk = (page: Page) => page.evaluateHandle(() => (globalThis as unknown as { sealedEdgeKiosk: Kiosk }).sealedEdgeKiosk);

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  if (sorted.length === 0) throw new Error('no samples');
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  return sorted[low]! + (sorted[Math.min(low + 1, sorted.length - 1)]! - sorted[low]!) * (rank - low);
}

/** Loads the kiosk with `workers` HE workers; returns the bundle's load time and where it came from. */
async function open(page: Page, url: string): Promise<{ loadMs: number; source: string }> {
  await page.goto(url);
  await page.waitForSelector('#state[data-state="ready"], #state[data-state="refused"], #state[data-state="error"]', { timeout: 10 * 60_000 });
  const state = await page.getAttribute('#state', 'data-state');
  if (state !== 'ready') throw new Error(`the kiosk did not start: ${await page.textContent('#error')}`);
  return (await kiosk(page)).evaluate((k) => ({ loadMs: k.bundle!.loadMs, source: k.bundle!.source }));
}

/**
 * Auto's warm-up: the kiosk's demo stream (frames queue, as from a camera) until the pool
 * has measured every mode and chosen, at most `max` frames; returns how many frames ran.
 */
async function warmUpAuto(page: Page, max: number): Promise<number> {
  const frames = await (await kiosk(page)).evaluate(async (k, limit) => {
    const before = k.frameCount;
    const run = k.runDemo(Infinity);
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (k.pool!.choice.phase === 'steady' || k.frameCount - before >= limit || k.state !== 'running') {
          clearInterval(timer);
          resolve();
        }
      }, 20);
    });
    await k.stop();
    await run;
    if (k.state !== 'ready') throw new Error(`the demo stream stopped: ${document.getElementById('error')?.textContent}`);
    if (k.pool!.choice.phase !== 'steady') throw new Error(`auto had not chosen a mode after ${k.frameCount - before} frames: ${k.pool!.choice.reason}`);
    return k.frameCount - before;
  }, max);
  await page.waitForSelector('#outbox[data-pending="0"]', { timeout: 10 * 60_000 });
  return frames;
}

/** Runs `count` demo frames through the kiosk's own stream; returns their records and the wall time. */
async function demo(page: Page, count: number): Promise<{ frames: Omit<FrameRecord, 'pixels'>[]; wallMs: number }> {
  const before = (await kioskFrames(page)).length;
  const wallMs = await (await kiosk(page)).evaluate(async (k, n) => {
    const t = performance.now();
    await k.runDemo(n);
    if (k.state !== 'ready') throw new Error(`the demo stream stopped: ${document.getElementById('error')?.textContent}`);
    return performance.now() - t;
  }, count);
  // Send times arrive with the backend's acknowledgements.
  await page.waitForSelector('#outbox[data-pending="0"]', { timeout: 10 * 60_000 });
  const frames = (await kioskFrames(page)).slice(before);
  if (frames.length !== count) throw new Error(`${count} demo frames were asked for, ${frames.length} were classified`);
  return { frames, wallMs };
}

/**
 * The kiosk in headless Chromium (Debian's, through playwright-core) on its demo stream
 * (MNIST test digits; for the colour model its 200 test PNGs), with the real backend on
 * loopback: per frame, the time of each stage (extract in onnxruntime-web; encrypt,
 * evaluate and serialize in the HE workers; the signed POST until the backend's
 * acknowledgement), one run per worker count and pool mode, each on the quiet machine or
 * with a CPU-bound process beside it; the bundle's download and verification; the HE
 * workers' WASM heap.
 */
export async function benchBrowser(options: BrowserBenchOptions = {}): Promise<BrowserReport> {
  const specs = options.runs ?? (options.workers === undefined ? DEFAULT_BROWSER_RUNS : options.workers.map((workers) => ({ workers, mode: 'shared' as const, loaded: false })));
  const frames = options.frames ?? (options.quick ? 20 : 100);
  if (!Number.isInteger(frames) || frames < 1 || frames > 1000) throw new Error(`frames must be a whole number from 1 to 1000, got ${frames}`);
  if (specs.length === 0 || specs.some((r) => !Number.isInteger(r.workers) || r.workers < 1 || r.workers > 16)) {
    throw new Error(`workers must be whole numbers from 1 to 16, got [${specs.map((r) => r.workers).join(', ')}]`);
  }
  const badMode = specs.find((r) => !isModeSetting(r.mode));
  if (badMode !== undefined) throw new Error(`mode must be auto, shared, per-worker or single, got '${String(badMode.mode)}'`);
  const named = options.named === undefined ? undefined : browserModel(options.named);
  if (named !== undefined && (options.model !== undefined || options.demo !== undefined)) throw new Error('a model by name (named) comes with its own demo stream: give named, or model and demo, not both');
  const loadAtStart = loadavg()[0]!;
  // The colour model is protected for the run into a scratch directory the site's workspace lives in.
  const scratch = named === 'colour' ? mkdtempSync(join(tmpdir(), 'sealed-edge-bench-colour-')) : undefined;
  try {
    const site = await buildSite(scratch === undefined ? { model: options.model, demo: options.demo } : { model: await protectColour(scratch), demo: COLOUR_FIXTURE });
    return await measure(site, specs, frames, loadAtStart);
  } finally {
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  }
}

/** The runs of benchBrowser on a built site (closed afterwards). */
async function measure(site: Site, specs: BrowserRunSpec[], frames: number, loadAtStart: number): Promise<BrowserReport> {
  const warmup = 2;
  const context = await launch(site.root).catch(async (error: unknown) => {
    await site.close();
    throw error;
  });
  try {
    const page = await context.newPage();
    const url = (spec: BrowserRunSpec) => `${site.kioskUrl}?workers=${spec.workers}&mode=${spec.mode}&bundle=models/${site.modelId}/latest.json`;
    const first = await open(page, url(specs[0]!));
    if (first.source !== 'network') throw new Error(`a fresh profile loaded the bundle from the ${first.source}`);
    await enrollKiosk(page, site.ws, 'bench-browser');
    const cacheLoads: number[] = [];
    const runs: BrowserRun[] = [];
    for (const spec of specs) {
      const { workers, mode, loaded } = spec;
      const what = `${workers} HE worker(s), ${mode}${loaded ? ', beside a busy loop' : ''}`;
      // Every run starts from a fresh page: its own HE workers, the bundle from the cache.
      const opened = await open(page, url(spec));
      if (!loaded) cacheLoads.push(opened.loadMs);
      // The other program starts before the warm-up, so auto measures under the same load.
      const busy = loaded ? busyLoop() : undefined;
      let run: Awaited<ReturnType<typeof demo>>;
      let warmupFrames: number;
      let loadAverage: number;
      try {
        process.stderr.write(`  ${what}: warm-up + ${frames} frames…\n`);
        if (mode === 'auto' && workers > 1) warmupFrames = await warmUpAuto(page, 60);
        else {
          await demo(page, warmup);
          warmupFrames = warmup;
        }
        run = await demo(page, frames);
        loadAverage = loadavg()[0]!;
      } finally {
        await busy?.stop();
      }
      const stage = (s: ReportedStage) => run.frames.map((f) => f.ms[s]!);
      const totals = run.frames.map((f) => f.totalMs);
      const after = await (await kiosk(page)).evaluate(async (k) => ({ heaps: await k.pool!.heapBytes(), workerLine: document.getElementById('workers')?.textContent ?? '' }));
      const modes: Partial<Record<PoolMode, number>> = {};
      for (const m of POOL_MODES) {
        const n = run.frames.filter((f) => f.mode === m).length;
        if (n > 0) modes[m] = n;
      }
      runs.push({
        workers,
        mode,
        loaded,
        frames,
        frameMs: { median: round(percentile(totals, 50)), p95: round(percentile(totals, 95)), min: round(Math.min(...totals)), max: round(Math.max(...totals)) },
        msPerFrame: round(run.wallMs / frames),
        modes,
        workerLine: after.workerLine,
        warmupFrames,
        loadAverage: round(loadAverage),
        stagesMs: Object.fromEntries(STAGES.map((s) => [s, round(percentile(stage(s), 50))])) as Record<ReportedStage, number>,
        stagesP95Ms: Object.fromEntries(STAGES.map((s) => [s, round(percentile(stage(s), 95))])) as Record<ReportedStage, number>,
        storeMs: round(percentile(run.frames.map((f) => f.ms.store!), 50)),
        framesPerSecond: round((1000 * frames) / run.wallMs),
        wasmHeapMB: round(Math.max(...after.heaps) / 2 ** 20, 1),
        workersPerFrame: Math.max(...run.frames.map((f) => f.workers)),
      });
      const r = runs.at(-1)!;
      process.stderr.write(`  ${what}: ${r.msPerFrame} ms per frame, median frame ${r.frameMs.median} ms (${after.workerLine})\n`);
    }
    const info = await (await kiosk(page)).evaluate(async (k) => {
      const m = k.bundle!.manifest;
      // The user agent string says 156.0.0.0; the full version is a high-entropy value.
      type Brands = { fullVersionList?: { brand: string; version: string }[] };
      const agent = (navigator as Navigator & { userAgentData?: { getHighEntropyValues(hints: string[]): Promise<Brands> } }).userAgentData;
      const brands = (await agent?.getHighEntropyValues(['fullVersionList']))?.fullVersionList ?? [];
      return {
        version: brands.find((b) => /chrom/i.test(b.brand))?.version ?? navigator.userAgent,
        crossOriginIsolated,
        extractor: document.getElementById('workers')?.textContent ?? '',
        demo: document.getElementById('demo-what')?.textContent ?? '',
        model: {
          modelId: m.modelId,
          version: m.version,
          scheme: m.he.params.scheme,
          security: m.he.params.security,
          polyModulusDegree: m.he.params.polyModulusDegree,
          bundleBytes: Object.values(m.files).reduce((n, f) => n + f.size, 0),
        },
      };
    });
    return {
      machine: machine(),
      browser: {
        name: 'Chromium',
        version: info.version,
        headless: true,
        crossOriginIsolated: info.crossOriginIsolated,
        extractorThreads: Number(/extractor on (\d+) thread/.exec(info.extractor)?.[1] ?? NaN),
      },
      model: info.model,
      demo: info.demo,
      runs,
      bundleLoadMs: round(first.loadMs),
      bundleCacheLoadMs: cacheLoads.length > 0 ? round(percentile(cacheLoads, 50)) : NaN,
      wasmHeapMB: Math.max(...runs.map((r) => r.wasmHeapMB)),
      loadAverage: { start: round(loadAtStart), end: round(loadavg()[0]!) },
    };
  } finally {
    await context.close();
    await site.close();
  }
}

export function browserTable(report: Record<string, unknown>): string {
  const r = report as unknown as BrowserReport;
  const modes = (run: BrowserRun) =>
    Object.entries(run.modes ?? {})
      .map(([m, n]) => `${m} ${n}`)
      .join(', ');
  const rows = table(
    ['HE workers', 'mode', 'loaded', 'frames', 'ms/frame', 'median ms', 'p95 ms', 'extract', 'encrypt', 'evaluate', 'serialize', 'send', 'store', 'frames/s', 'heap MB/worker', 'ran'],
    r.runs.map((run) => [
      run.workers,
      run.mode ?? 'shared',
      run.loaded ? 'yes' : 'no',
      run.frames,
      run.msPerFrame ?? '',
      run.frameMs.median,
      run.frameMs.p95,
      ...STAGES.map((s) => run.stagesMs[s]),
      run.storeMs,
      run.framesPerSecond,
      run.wasmHeapMB,
      modes(run),
    ]),
  );
  const { model, browser } = r;
  return [
    `${model.modelId} v${model.version}: ${model.scheme.toUpperCase()} N=${model.polyModulusDegree}, ${model.security}-bit, bundle ${(model.bundleBytes / 1e6).toFixed(1)} MB, demo stream ${r.demo}; ` +
      `Chromium ${browser.version} headless, extractor on ${browser.extractorThreads} thread(s)`,
    rows,
    'ms/frame: wall time per frame (frames queue, as from a camera: what auto minimizes); median ms: one frame, extraction to outbox (its latency)',
    `bundle download + verify: ${r.bundleLoadMs} ms; from the IndexedDB cache, verified again: ${r.bundleCacheLoadMs} ms; ` +
      `load average ${r.loadAverage.start} → ${r.loadAverage.end}`,
  ].join('\n');
}
