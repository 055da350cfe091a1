/**
 * The kiosk: loads and verifies the bundle, runs extractor → HE pool → outbox per frame,
 * and shows the pipeline's stages and timings, the ciphertext's size and hash, the
 * outbox count and the bundle's model/version. It never holds a decrypted label or score:
 * the backend answers with receipts only.
 */
import { preprocessMnist, type MnistImages } from '../model/idx';
import { Camera, digitizeFile, loadDemoDigits } from './acquire';
import { KioskBundleError, loadBundle, type LoadedBundle } from './bundle-loader';
import { toArrayBuffer } from './bytes';
import { openKioskDb, type DeviceIdentity, type KioskDatabase } from './db';
import { currentDevice, enroll } from './device';
import { asMnistImages } from './digitize';
import { configureOrt, Extractor } from './extractor';
import { Outbox, type OutboxCounts } from './outbox';
import { defaultPoolSize, HePool } from './pool';
import { createHeWorker } from './workers';

export const STAGES = ['extract', 'encrypt', 'evaluate', 'serialize', 'store', 'send'] as const;
export type Stage = (typeof STAGES)[number];

export interface FrameRecord {
  frame: number;
  ms: Record<Stage, number | undefined>;
  totalMs: number;
  resultBytes: number;
  resultSha256: string;
  worker: number;
  attempts: number;
}

export interface Settings {
  backendUrl: string;
  bundleUrl: string;
  workers: number;
}

const SETTINGS_KEY = 'sealed-edge.settings';

export function loadSettings(): Settings {
  const params = new URLSearchParams(location.search);
  let stored: Partial<Settings> = {};
  try {
    stored = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? '{}') as Partial<Settings>;
  } catch {
    stored = {};
  }
  const workers = Number(params.get('workers') ?? stored.workers ?? 0);
  return {
    backendUrl: params.get('backend') ?? stored.backendUrl ?? new URL('/', location.href).href,
    bundleUrl: params.get('bundle') ?? stored.bundleUrl ?? 'models/mnist/latest.json',
    workers: Number.isInteger(workers) && workers > 0 ? workers : defaultPoolSize(navigator.hardwareConcurrency),
  };
}

export function saveSettings(settings: Settings): void {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}

const $ = <T extends HTMLElement>(id: string) => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} is missing from the page`);
  return el as T;
};

const median = (values: number[]) => {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const fmt = (ms: number | undefined) => (ms === undefined ? '—' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

export class Kiosk {
  db!: KioskDatabase;
  device?: DeviceIdentity;
  bundle?: LoadedBundle;
  pool?: HePool;
  extractor?: Extractor;
  outbox!: Outbox;
  demo?: MnistImages;
  readonly frames: FrameRecord[] = [];
  private readonly sendMs = new Map<string, number>();
  private frameCount = 0;
  private running = false;
  private readonly camera = new Camera();
  private cameraTimer: ReturnType<typeof setInterval> | undefined;
  private cameraBusy = false;
  state: 'starting' | 'loading' | 'ready' | 'running' | 'refused' | 'error' = 'starting';
  settings = loadSettings();

  async start(): Promise<void> {
    this.bindUi();
    this.db = await openKioskDb();
    this.device = await currentDevice(this.db);
    this.showDevice();
    this.outbox = new Outbox(this.db, () => this.device, (counts, sent) => this.onOutbox(counts, sent));
    this.onOutbox(await this.outbox.counts());
    this.outbox.kick();
    addEventListener('online', () => void this.outbox.retryNow());
    await this.loadBundle();
  }

  private setState(state: Kiosk['state'], text: string): void {
    this.state = state;
    const el = $('state');
    el.dataset.state = state;
    el.textContent = text;
    ($<HTMLButtonElement>('demo-start')).disabled = state !== 'ready';
    ($<HTMLButtonElement>('camera-start')).disabled = state !== 'ready';
    ($<HTMLInputElement>('file-input')).disabled = state !== 'ready';
  }

  showError(message: string | undefined): void {
    const el = $('error');
    el.hidden = message === undefined;
    el.textContent = message ?? '';
  }

  async loadBundle(): Promise<void> {
    this.pool?.dispose();
    this.pool = undefined;
    await this.extractor?.dispose();
    this.extractor = undefined;
    this.bundle = undefined;
    this.setState('loading', 'loading the bundle…');
    this.showError(undefined);
    const progress = $<HTMLProgressElement>('bundle-progress');
    try {
      const bundle = await loadBundle({
        url: this.settings.bundleUrl,
        ownerKeyHex: __SEALED_EDGE_OWNER_KEY__,
        db: this.db,
        onProgress: (loaded, total, file) => {
          progress.max = total;
          progress.value = loaded;
          $('bundle-status').textContent = `downloading ${file}: ${(loaded / 2 ** 20).toFixed(1)} / ${(total / 2 ** 20).toFixed(1)} MiB`;
        },
      });
      progress.max = 1;
      progress.value = 1;
      const { manifest } = bundle;
      $('bundle-id').textContent = `${manifest.modelId} v${manifest.version}`;
      $('bundle-status').textContent =
        `verified (Ed25519 signature, ${Object.keys(manifest.files).length} SHA-256s) from the ${bundle.source} in ${fmt(bundle.loadMs)}; ` +
        `key ${manifest.keyId.slice(0, 8)}…, CKKS N=${manifest.he.params.polyModulusDegree}, ${manifest.he.params.security}-bit`;
      this.setState('loading', 'starting the extractor and the HE workers…');
      const { threads } = configureOrt(new URL(`${import.meta.env.BASE_URL}ort/`, location.href).href);
      const pool = new HePool(createHeWorker, {
        size: this.settings.workers,
        onEvent: (e) => {
          if (e.kind === 'worker-replaced') $('workers').textContent = `${this.settings.workers} HE worker(s); worker ${e.index} replaced (${e.reason})`;
        },
      });
      const [extractor] = await Promise.all([
        Extractor.create(bundle.files['extractor.onnx'], manifest),
        pool.load(manifest.he.params, toArrayBuffer(bundle.files['keys.bin']), toArrayBuffer(bundle.files['weights.bin'])),
        (async () => (this.demo ??= await loadDemoDigits(import.meta.env.BASE_URL)))(),
      ]);
      this.bundle = bundle;
      this.pool = pool;
      this.extractor = extractor;
      $('workers').textContent = `${pool.size} HE worker(s), extractor on ${threads} thread(s)${crossOriginIsolated ? '' : ' (page not cross-origin isolated)'}`;
      this.setState('ready', 'ready');
    } catch (error) {
      const refused = error instanceof KioskBundleError || (error as Error).name === 'BundleError';
      progress.value = 0;
      this.setState(refused ? 'refused' : 'error', refused ? 'bundle refused' : 'error');
      this.showError(refused ? `Bundle refused — it is not used: ${(error as Error).message}` : `Could not start: ${(error as Error).message}`);
      $('bundle-id').textContent = 'no bundle';
    }
  }

  /** One 28×28 grey image through the whole pipeline; the encrypted result lands in the outbox. */
  async classify(images: MnistImages, index: number): Promise<FrameRecord> {
    const { bundle, pool, extractor } = this;
    if (bundle === undefined || pool === undefined || extractor === undefined) throw new Error('no verified bundle loaded');
    const frame = ++this.frameCount;
    this.showInput(images, index);
    const t0 = performance.now();
    const input = preprocessMnist(images, index);
    const features = await extractor.run(input);
    const t1 = performance.now();
    const he = await pool.evaluate(features);
    const t2 = performance.now();
    const entry = await this.outbox.enqueue(bundle.manifest, he.result);
    const t3 = performance.now();
    const record: FrameRecord = {
      frame,
      ms: { extract: t1 - t0, encrypt: he.encryptMs, evaluate: he.evaluateMs, serialize: he.serializeMs, store: t3 - t2, send: this.sendMs.get(entry.idempotencyKey) },
      totalMs: t3 - t0,
      resultBytes: entry.resultBytes,
      resultSha256: entry.resultSha256,
      worker: he.worker,
      attempts: he.attempts,
    };
    this.frames.push(record);
    this.pending.set(entry.idempotencyKey, record);
    this.render(record);
    return record;
  }

  private readonly pending = new Map<string, FrameRecord>();

  private onOutbox(counts: OutboxCounts, sent?: { idempotencyKey: string; status: number | 'network'; ms: number }): void {
    $('outbox-pending').textContent = String(counts.pending);
    $('outbox-refused').textContent = String(counts.refused);
    $('outbox-delivered').textContent = String(counts.delivered);
    $('outbox').dataset.pending = String(counts.pending);
    $('outbox').dataset.delivered = String(counts.delivered);
    $('outbox').dataset.refused = String(counts.refused);
    if (sent !== undefined) {
      $('last-send').textContent = `last POST: ${sent.status === 'network' ? 'network error' : `HTTP ${sent.status}`} in ${fmt(sent.ms)}`;
      const record = this.pending.get(sent.idempotencyKey);
      if (record !== undefined && (sent.status === 200 || sent.status === 201)) {
        record.ms.send = sent.ms;
        this.pending.delete(sent.idempotencyKey);
        this.renderStages();
      } else if (record === undefined) this.sendMs.set(sent.idempotencyKey, sent.ms);
    }
  }

  private showInput(images: MnistImages, index: number): void {
    const canvas = $<HTMLCanvasElement>('input-preview');
    const context = canvas.getContext('2d');
    if (context === null) return;
    const data = context.createImageData(28, 28);
    for (let i = 0; i < 784; i++) {
      const v = images.pixels[index * 784 + i]!;
      data.data.set([v, v, v, 255], 4 * i);
    }
    context.putImageData(data, 0, 0);
  }

  private render(record: FrameRecord): void {
    $('frame-count').textContent = String(this.frames.length);
    $('ct-size').textContent = `${(record.resultBytes / 1024).toFixed(1)} KiB`;
    $('ct-hash').textContent = record.resultSha256;
    $('frame-total').textContent = fmt(record.totalMs);
    this.renderStages();
  }

  private renderStages(): void {
    const last = this.frames.at(-1);
    for (const stage of STAGES) {
      $(`stage-${stage}-last`).textContent = fmt(last?.ms[stage]);
      $(`stage-${stage}-median`).textContent = fmt(median(this.frames.map((f) => f.ms[stage]).filter((v): v is number => v !== undefined)));
    }
  }

  /** Runs `count` demo digits, as many in flight as there are HE workers. */
  async runDemo(count: number): Promise<void> {
    const demo = this.demo;
    if (demo === undefined || this.pool === undefined) return;
    this.running = true;
    this.setState('running', 'classifying the demo stream…');
    let next = 0;
    const lane = async () => {
      while (this.running && next < count) {
        const index = next++ % demo.count;
        await this.classify(demo, index);
      }
    };
    try {
      await Promise.all(Array.from({ length: this.pool.size }, lane));
      this.setState('ready', 'ready');
    } catch (error) {
      this.setState('error', 'error');
      this.showError(`A frame failed: ${(error as Error).message}`);
    } finally {
      this.running = false;
    }
  }

  stop(): void {
    this.running = false;
    this.stopCamera();
  }

  async classifyFiles(files: Iterable<File>): Promise<void> {
    for (const file of files) {
      try {
        await this.classify(asMnistImages(await digitizeFile(file)), 0);
      } catch (error) {
        this.showError(`${file.name}: ${(error as Error).message}`);
      }
    }
  }

  async startCamera(): Promise<void> {
    try {
      await this.camera.start();
    } catch (error) {
      this.showError(`camera: ${(error as Error).message}`);
      return;
    }
    $('camera-view').replaceChildren(this.camera.video);
    this.setState('running', 'classifying camera frames…');
    this.cameraTimer = setInterval(() => {
      if (this.cameraBusy) return;
      const pixels = this.camera.grab();
      if (pixels === undefined) return;
      this.cameraBusy = true;
      this.classify(asMnistImages(pixels), 0)
        .catch((error: Error) => this.showError(`camera frame: ${error.message}`))
        .finally(() => (this.cameraBusy = false));
    }, 250);
  }

  stopCamera(): void {
    clearInterval(this.cameraTimer);
    this.cameraTimer = undefined;
    if (this.camera.running) {
      this.camera.stop();
      if (this.state === 'running') this.setState('ready', 'ready');
    }
  }

  private showDevice(): void {
    $('device-id').textContent = this.device === undefined ? 'not enrolled' : `device ${this.device.deviceId}`;
    $('device-id').dataset.enrolled = String(this.device !== undefined);
  }

  private bindUi(): void {
    const s = this.settings;
    $<HTMLInputElement>('backend-url').value = s.backendUrl;
    $<HTMLInputElement>('bundle-url').value = s.bundleUrl;
    $<HTMLInputElement>('worker-count').value = String(s.workers);
    $('settings-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.settings = {
        backendUrl: $<HTMLInputElement>('backend-url').value.trim(),
        bundleUrl: $<HTMLInputElement>('bundle-url').value.trim(),
        workers: Math.max(1, Math.min(16, Number($<HTMLInputElement>('worker-count').value) || 1)),
      };
      saveSettings(this.settings);
      void this.loadBundle();
    });
    $('enroll-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $<HTMLInputElement>('enroll-token');
      const status = $('enroll-status');
      status.textContent = 'enrolling…';
      enroll(this.db, this.settings.backendUrl, token.value)
        .then((device) => {
          this.device = device;
          token.value = '';
          status.textContent = 'enrolled: the private key was generated here and cannot be exported';
          this.showDevice();
          this.outbox.kick();
        })
        .catch((error: Error) => (status.textContent = error.message));
    });
    $('demo-start').addEventListener('click', () => void this.runDemo(Number($<HTMLInputElement>('demo-count').value) || 10));
    $('stop').addEventListener('click', () => this.stop());
    $('camera-start').addEventListener('click', () => void this.startCamera());
    const fileInput = $<HTMLInputElement>('file-input');
    fileInput.addEventListener('change', () => {
      if (fileInput.files !== null) void this.classifyFiles(Array.from(fileInput.files));
    });
    const drop = $('drop-zone');
    drop.addEventListener('dragover', (event) => event.preventDefault());
    drop.addEventListener('drop', (event) => {
      event.preventDefault();
      if (this.state === 'ready' && event.dataTransfer !== null) void this.classifyFiles(Array.from(event.dataTransfer.files));
    });
    if (new URLSearchParams(location.search).has('kiosk')) {
      document.body.classList.add('kiosk-mode');
      document.addEventListener('click', () => void document.documentElement.requestFullscreen?.().catch(() => undefined), { once: true });
    }
  }
}

