import { loadavg } from 'node:os';
import type { Page } from 'playwright-core';
import type { FrameRecord, Kiosk, Stage } from '../src/edge/app';
import { buildSite, enrollKiosk, kioskFrames, launch, type SiteOptions } from '../tests/browser/kiosk';
import { machine, round, table } from './machine';

/** The per-frame stages the JSON reports (the outbox's IndexedDB write is reported apart, as storeMs). */
const STAGES = ['extract', 'encrypt', 'evaluate', 'serialize', 'send'] as const satisfies readonly Stage[];
type ReportedStage = (typeof STAGES)[number];

export interface BrowserBenchOptions {
  /**
   * A model protected beforehand: its data directory and model directory (as
   * tests/browser/kiosk.ts `SiteOptions.model`). Its extractor must take MNIST digits
   * (1×1×28×28), since the kiosk runs its demo stream. Default: models/paper-cnn-x2+2x.onnx
   * protected as 'mnist' (CKKS, 128-bit).
   */
  model?: SiteOptions['model'];
  /** One run per entry, with that many HE workers (default [1, 2]). */
  workers?: number[];
  /** Frames measured per run, after warm-up frames (default 100; 20 with quick). */
  frames?: number;
  quick?: boolean;
}

export interface BrowserRun {
  workers: number;
  frames: number;
  /** Per frame, from extraction until the encrypted result is stored in the outbox. */
  frameMs: { median: number; p95: number; min: number; max: number };
  /** Per-frame medians. */
  stagesMs: Record<ReportedStage, number>;
  stagesP95Ms: Record<ReportedStage, number>;
  /** Median of the outbox's IndexedDB write. */
  storeMs: number;
  /** Frames classified per second over the run (one frame in flight at a time). */
  framesPerSecond: number;
  /** The largest WASM heap among the run's HE workers, after the run. */
  wasmHeapMB: number;
  /** How many HE workers shared each frame. */
  workersPerFrame: number;
}

export interface BrowserReport {
  machine: Record<string, unknown>;
  browser: { name: string; version: string; headless: true; crossOriginIsolated: boolean; extractorThreads: number };
  model: { modelId: string; version: number; scheme: string; security: number; polyModulusDegree: number; bundleBytes: number };
  runs: BrowserRun[];
  /** The first start: the bundle downloaded from the static host and verified (signature, SHA-256s). */
  bundleLoadMs: number;
  /** Later starts: the bundle read from IndexedDB and verified again (median). */
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
 * The kiosk in headless Chromium (Debian's, through playwright-core) on the demo stream of
 * MNIST test digits, with the real backend on loopback: per frame, the time of each stage
 * (extract in onnxruntime-web; encrypt, evaluate and serialize in the HE workers; the
 * signed POST until the backend's acknowledgement), one run per worker count; the
 * bundle's download and verification; the HE workers' WASM heap.
 */
export async function benchBrowser(options: BrowserBenchOptions = {}): Promise<BrowserReport> {
  const workerCounts = options.workers ?? [1, 2];
  const frames = options.frames ?? (options.quick ? 20 : 100);
  if (!Number.isInteger(frames) || frames < 1 || frames > 1000) throw new Error(`frames must be a whole number from 1 to 1000, got ${frames}`);
  if (workerCounts.length === 0 || workerCounts.some((w) => !Number.isInteger(w) || w < 1 || w > 16)) {
    throw new Error(`workers must be whole numbers from 1 to 16, got [${workerCounts.join(', ')}]`);
  }
  const warmup = 2;
  const loadAtStart = loadavg()[0]!;
  const site = await buildSite({ model: options.model });
  const context = await launch(site.root);
  try {
    const page = await context.newPage();
    const url = (workers: number) => `${site.kioskUrl}?workers=${workers}&bundle=models/${site.modelId}/latest.json`;
    const first = await open(page, url(workerCounts[0]!));
    if (first.source !== 'network') throw new Error(`a fresh profile loaded the bundle from the ${first.source}`);
    await enrollKiosk(page, site.ws, 'bench-browser');
    const cacheLoads: number[] = [];
    const runs: BrowserRun[] = [];
    for (const workers of workerCounts) {
      // Every run starts from a fresh page: its own HE workers, the bundle from the cache.
      cacheLoads.push((await open(page, url(workers))).loadMs);
      process.stderr.write(`  ${workers} HE worker(s): ${warmup} warm-up + ${frames} frames…\n`);
      await demo(page, warmup);
      const run = await demo(page, frames);
      const stage = (s: ReportedStage) => run.frames.map((f) => f.ms[s]!);
      const totals = run.frames.map((f) => f.totalMs);
      const heaps = await (await kiosk(page)).evaluate((k) => k.pool!.heapBytes());
      runs.push({
        workers,
        frames,
        frameMs: { median: round(percentile(totals, 50)), p95: round(percentile(totals, 95)), min: round(Math.min(...totals)), max: round(Math.max(...totals)) },
        stagesMs: Object.fromEntries(STAGES.map((s) => [s, round(percentile(stage(s), 50))])) as Record<ReportedStage, number>,
        stagesP95Ms: Object.fromEntries(STAGES.map((s) => [s, round(percentile(stage(s), 95))])) as Record<ReportedStage, number>,
        storeMs: round(percentile(run.frames.map((f) => f.ms.store!), 50)),
        framesPerSecond: round((1000 * frames) / run.wallMs),
        wasmHeapMB: round(Math.max(...heaps) / 2 ** 20, 1),
        workersPerFrame: Math.max(...run.frames.map((f) => f.workers)),
      });
      process.stderr.write(`  ${workers} HE worker(s): median frame ${runs.at(-1)!.frameMs.median} ms\n`);
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
      runs,
      bundleLoadMs: round(first.loadMs),
      bundleCacheLoadMs: round(percentile(cacheLoads, 50)),
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
  const rows = table(
    ['HE workers', 'frames', 'median ms', 'p95 ms', 'extract', 'encrypt', 'evaluate', 'serialize', 'send', 'store', 'frames/s', 'heap MB/worker'],
    r.runs.map((run) => [
      run.workers,
      run.frames,
      run.frameMs.median,
      run.frameMs.p95,
      ...STAGES.map((s) => run.stagesMs[s]),
      run.storeMs,
      run.framesPerSecond,
      run.wasmHeapMB,
    ]),
  );
  const { model, browser } = r;
  return [
    `${model.modelId} v${model.version}: ${model.scheme.toUpperCase()} N=${model.polyModulusDegree}, ${model.security}-bit, bundle ${(model.bundleBytes / 1e6).toFixed(1)} MB; ` +
      `Chromium ${browser.version} headless, extractor on ${browser.extractorThreads} thread(s)`,
    rows,
    `bundle download + verify: ${r.bundleLoadMs} ms; from the IndexedDB cache, verified again: ${r.bundleCacheLoadMs} ms; ` +
      `load average ${r.loadAverage.start} → ${r.loadAverage.end}`,
  ].join('\n');
}
