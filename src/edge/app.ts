/**
 * The kiosk: loads and verifies the bundle, runs extractor → HE pool → outbox per frame,
 * and shows the pipeline's stages and timings, the ciphertext's size and hash, the
 * outbox count and the bundle's model/version. It never holds a decrypted label or score:
 * the backend answers with receipts only.
 *
 * Settings come from the URL (`?bundle=`, `?backend=`, `?workers=`), else from the set-up
 * panel (saved in localStorage), else defaults; `?kiosk=1` is the kiosk mode (full screen,
 * Start and Stop only; the set-up panel shows until the device is enrolled) and
 * `?source=camera|demo` is what its Start classifies. Bad input is refused visibly.
 */
import { describeLayers } from '../he/describe';
import type { BundleManifest } from '../model/bundle';
import { describeInputSpec } from '../model/input-spec';
import { deviceLayout, type FittedImage, fitImage, type Rgba, toRgba, toTensor } from '../model/preprocess';
import { Camera, decodeImageFile, type DemoStream, loadDemoStream } from './acquire';
import { KioskBundleError, loadBundle, type LoadedBundle } from './bundle-loader';
import { toArrayBuffer } from './bytes';
import { evictBundles, openKioskDb, type DeviceIdentity, type KioskDatabase } from './db';
import { currentDevice, enroll } from './device';
import { configureOrt, Extractor } from './extractor';
import { runFrameLoop } from './frame-loop';
import { Outbox, type OutboxCounts, type SendOutcome } from './outbox';
import { defaultPoolSize, HePool } from './pool';
import { describeChoice, type PoolMode } from './pool-modes';
import {
  checkBackendUrl,
  checkBundleUrl,
  checkEnrollmentToken,
  checkFrameCount,
  checkWorkers,
  parseSavedSettings,
  parseUrlOptions,
  SettingsError,
  type Settings,
  type UrlOptions,
} from './settings';
import { createHeWorker } from './workers';

export const STAGES = ['extract', 'encrypt', 'evaluate', 'serialize', 'store', 'send'] as const;
export type Stage = (typeof STAGES)[number];

export type FrameSource = 'demo' | 'camera' | 'file';

export interface FrameRecord {
  frame: number;
  source: FrameSource;
  /**
   * The image the model saw, as the manifest's input spec fitted it: height × width ×
   * channels bytes (plaintext; it never leaves the device).
   */
  pixels: Uint8Array;
  /** SHA-256 (hex) of the float32 input tensor's bytes, as the extractor (or the encryption) received it. */
  inputSha256: string;
  ms: Record<Stage, number | undefined>;
  /** From the start of extraction until the encrypted result is stored in the outbox. */
  totalMs: number;
  resultBytes: number;
  resultSha256: string;
  idempotencyKey: string;
  /** The HE worker that completed the frame, how many workers shared it, and the pool's mode. */
  worker: number;
  workers: number;
  mode: PoolMode;
  attempts: number;
}

/** Frames kept for the screen's medians and the diagnostics hook, so memory stays bounded. */
export const FRAME_HISTORY = 1000;

const SETTINGS_KEY = 'sealed-edge.settings';

function defaultSettings(): Settings {
  return {
    backendUrl: __SEALED_EDGE_SITE__.backendUrl ?? new URL('/', location.href).href,
    bundleUrl: __SEALED_EDGE_SITE__.bundleUrl ?? 'models/mnist/latest.json',
    workers: defaultPoolSize(navigator.hardwareConcurrency),
  };
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
const message = (error: unknown) => (error instanceof Error ? error.message : String(error));

interface Frame {
  picture: Rgba;
  source: FrameSource;
}

async function sha256Hex(tensor: Float32Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', tensor as Float32Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class Kiosk {
  db!: KioskDatabase;
  device?: DeviceIdentity;
  bundle?: LoadedBundle;
  pool?: HePool;
  /** null: the bundle is encrypted from its first layer and has no extractor. */
  extractor?: Extractor | null;
  outbox!: Outbox;
  demo?: DemoStream;
  /** The last FRAME_HISTORY frames classified, and how many were classified in all. */
  readonly frames: FrameRecord[] = [];
  frameCount = 0;
  state: 'starting' | 'loading' | 'ready' | 'running' | 'refused' | 'error' = 'starting';
  settings: Settings = defaultSettings();
  options: UrlOptions = { settings: {}, kiosk: false, source: 'camera', mode: 'auto' };
  private readonly pending = new Map<string, FrameRecord>();
  private running = false;
  /** `${modelId}@${version}` the backend reported retired. */
  private readonly retired = new Set<string>();
  /** The running stream, settled once its last frame is done. */
  private run?: Promise<void>;
  /** Extractions run one at a time (onnxruntime-web's session is not re-entrant) while HE frames overlap. */
  private extracting: Promise<unknown> = Promise.resolve();
  readonly camera = new Camera();

  async start(): Promise<void> {
    let urlError: string | undefined;
    try {
      this.options = parseUrlOptions(location.search, location.href);
    } catch (error) {
      if (!(error instanceof SettingsError)) throw error;
      urlError = error.message;
    }
    let saved: Partial<Settings> = {};
    try {
      saved = parseSavedSettings(localStorage.getItem(SETTINGS_KEY), location.href);
    } catch (error) {
      if (!(error instanceof SettingsError)) throw error;
      localStorage.removeItem(SETTINGS_KEY);
      this.showFormError('settings', `The saved settings were refused and reset to the defaults: ${error.message}`);
    }
    this.settings = { ...defaultSettings(), ...saved, ...this.options.settings };
    this.bindUi();
    this.db = await openKioskDb();
    this.device = await currentDevice(this.db);
    this.showDevice();
    this.outbox = new Outbox(this.db, () => this.device, (counts, sent) => this.onOutbox(counts, sent));
    this.onOutbox(await this.outbox.counts());
    this.outbox.kick();
    addEventListener('online', () => void this.outbox.retryNow());
    if (urlError !== undefined) {
      this.setState('error', 'bad URL');
      this.showError(`The page's URL is refused, nothing was loaded: ${urlError}`);
      return;
    }
    await this.loadBundle();
  }

  private setState(state: Kiosk['state'], text: string): void {
    this.state = state;
    const el = $('state');
    el.dataset.state = state;
    el.textContent = text;
    for (const id of ['demo-start', 'camera-start', 'kiosk-start', 'file-input']) $<HTMLButtonElement | HTMLInputElement>(id).disabled = state !== 'ready';
    $<HTMLButtonElement>('stop').disabled = state !== 'running';
  }

  showError(text: string | undefined): void {
    const el = $('error');
    el.hidden = text === undefined;
    el.textContent = text ?? '';
  }

  private showFormError(form: 'settings' | 'enroll', text: string | undefined): void {
    const el = $(`${form}-error`);
    el.hidden = text === undefined;
    el.textContent = text ?? '';
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
        retired: this.retired,
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
        `key ${manifest.keyId.slice(0, 8)}…, ${manifest.he.scheme.toUpperCase()} N=${manifest.he.params.polyModulusDegree}, ${manifest.he.params.security}-bit`;
      this.setState('loading', 'starting the extractor and the HE workers…');
      const { threads } = configureOrt(new URL(`${import.meta.env.BASE_URL}ort/`, location.href).href);
      let extractorNote = '';
      const pool = new HePool(createHeWorker, {
        size: this.settings.workers,
        mode: this.options.mode,
        // The worker line says which mode the pool runs and why (src/edge/pool-modes.ts).
        onChoice: (choice) => ($('workers').textContent = `${describeChoice(choice)}; ${extractorNote}`),
        onEvent: (e) => {
          if (e.kind === 'worker-replaced') $('workers').textContent = `${this.settings.workers} HE worker(s); worker ${e.index} replaced (${e.reason})`;
        },
      });
      const onnx = bundle.files['extractor.onnx'];
      const [extractor, loaded] = await Promise.all([
        onnx === undefined ? null : Extractor.create(onnx, manifest),
        pool.load(manifest.he.params, toArrayBuffer(bundle.files['keys.bin']), toArrayBuffer(bundle.files['weights.bin'])),
        (async () => (this.demo ??= await loadDemoStream(import.meta.env.BASE_URL)))(),
      ]);
      this.bundle = bundle;
      this.pool = pool;
      this.extractor = extractor;
      extractorNote =
        (extractor === null ? 'no extractor (every layer encrypted)' : `extractor on ${threads} thread(s)${crossOriginIsolated ? '' : ' (page not cross-origin isolated)'}`) +
        (loaded.some((info) => info.streamed) ? '; encrypted weights read for each product (larger than a worker’s heap allows)' : '');
      $('workers').textContent = `${describeChoice(pool.choice)}; ${extractorNote}`;
      this.showWhere(manifest, extractor !== null);
      this.showSpec(manifest);
      this.setState('ready', 'ready');
    } catch (error) {
      const refused = error instanceof KioskBundleError || (error as Error).name === 'BundleError';
      progress.value = 0;
      this.setState(refused ? 'refused' : 'error', refused ? 'bundle refused' : 'error');
      this.showError(refused ? `Bundle refused — it is not used: ${message(error)}` : `Could not start: ${message(error)}`);
      $('bundle-id').textContent = 'no bundle';
    }
  }

  /**
   * One picture (RGBA) through the whole pipeline: fitted and normalized exactly as the
   * manifest's input spec says, then extractor, encryption, encrypted evaluation; the
   * encrypted result lands in the outbox. A picture that cannot be preprocessed throws
   * before anything is encrypted or stored.
   */
  async classify(picture: Rgba, source: FrameSource = 'demo'): Promise<FrameRecord> {
    const { bundle, pool, extractor } = this;
    if (bundle === undefined || pool === undefined || extractor === undefined) throw new Error('no verified bundle loaded');
    const spec = bundle.manifest.extractor.preprocessing;
    const capturedAt = Date.now();
    const t0 = performance.now();
    const image = fitImage(spec, picture);
    const input = toTensor(spec, image, deviceLayout(spec, extractor !== null));
    this.showInput(image);
    const inputSha256 = await sha256Hex(input);
    const extracted = this.extracting.then(() => (extractor === null ? input : extractor.run(input)));
    this.extracting = extracted.catch(() => undefined);
    const features = await extracted;
    const t1 = performance.now();
    const he = await pool.evaluate(features);
    const t2 = performance.now();
    const entry = await this.outbox.enqueue(bundle.manifest, he.result, capturedAt);
    const t3 = performance.now();
    const record: FrameRecord = {
      frame: ++this.frameCount,
      source,
      pixels: image.pixels,
      inputSha256,
      ms: { extract: t1 - t0, encrypt: he.encryptMs, evaluate: he.evaluateMs, serialize: he.serializeMs, store: t3 - t2, send: undefined },
      totalMs: t3 - t0,
      resultBytes: entry.resultBytes,
      resultSha256: entry.resultSha256,
      idempotencyKey: entry.idempotencyKey,
      worker: he.worker,
      workers: he.workers,
      attempts: he.attempts,
      mode: he.mode,
    };
    this.frames.push(record);
    if (this.frames.length > FRAME_HISTORY) this.pending.delete(this.frames.shift()!.idempotencyKey);
    // The acknowledgement comes back over the network, so always after this line.
    this.pending.set(entry.idempotencyKey, record);
    this.render(record);
    return record;
  }

  /** The "what is encrypted where" table, as this bundle really splits the model. */
  private showWhere(manifest: BundleManifest, hasExtractor: boolean): void {
    const { he } = manifest;
    $('where-plain').textContent = hasExtractor ? 'plain ONNX (onnxruntime-web)' : 'none: every layer is encrypted';
    $('where-plain').className = hasExtractor ? 'open' : 'lock';
    $('stage-extract-where').textContent = hasExtractor ? 'onnxruntime-web, plaintext' : 'preprocessing only (no extractor)';
    $('where-layers').textContent = describeLayers(he.layers);
    $('where-weights').textContent =
      he.mode.weights === 'encrypted' ? `encrypted (${he.scheme.toUpperCase()}, owner's key)` : `plain (${he.scheme.toUpperCase()} plaintexts: only the input is protected)`;
    $('where-weights').className = he.mode.weights === 'encrypted' ? 'lock' : 'open';
    $('where-input-what').textContent = hasExtractor ? 'features entering the encrypted layers' : 'preprocessed image entering the encrypted layers';
    $('where-input').textContent = he.mode.input === 'encrypted' ? 'encrypted (public key)' : 'plain, multiplied into the encrypted weights';
    $('where-input').className = he.mode.input === 'encrypted' ? 'lock' : 'open';
  }

  private onOutbox(counts: OutboxCounts, sent?: SendOutcome): void {
    $('outbox-pending').textContent = String(counts.pending);
    $('outbox-refused').textContent = String(counts.refused);
    $('outbox-delivered').textContent = String(counts.delivered);
    $('outbox').dataset.pending = String(counts.pending);
    $('outbox').dataset.delivered = String(counts.delivered);
    $('outbox').dataset.refused = String(counts.refused);
    if (sent === undefined) return;
    $('last-send').textContent = `last POST: ${sent.status === 'network' ? 'network error' : `HTTP ${sent.status}`} in ${fmt(sent.ms)}`;
    if (sent.retired !== undefined) void this.onRetired(sent.retired.modelId, sent.retired.version);
    const record = this.pending.get(sent.idempotencyKey);
    if (record === undefined || sent.outcome === 'retry') return;
    this.pending.delete(sent.idempotencyKey);
    if (sent.outcome === 'refused') return;
    record.ms.send = sent.ms;
    this.renderStages();
  }

  /**
   * The backend refused a result because the owner retired its model version: the kiosk
   * evicts that version from its cache and loads the owner's current one (refusing the
   * retired one if the host still offers it).
   */
  private async onRetired(modelId: string, version: number): Promise<void> {
    const key = `${modelId}@${version}`;
    if (this.retired.has(key)) return;
    this.retired.add(key);
    await evictBundles(this.db, modelId, version);
    const manifest = this.bundle?.manifest;
    if (manifest?.modelId === modelId && manifest.version <= version) {
      await this.stop();
      await this.loadBundle();
    }
  }

  /** The preview: what the model sees, at its own size (grey, or in colour for a colour model). */
  private showInput(image: FittedImage): void {
    const canvas = $<HTMLCanvasElement>('input-preview');
    if (canvas.width !== image.width || canvas.height !== image.height) [canvas.width, canvas.height] = [image.width, image.height];
    const context = canvas.getContext('2d');
    if (context === null) return;
    const { data } = toRgba(image);
    const pixels = context.createImageData(image.width, image.height);
    pixels.data.set(data);
    context.putImageData(pixels, 0, 0);
  }

  /** What the bundle's input spec asks of every picture, for the screen. */
  private showSpec(manifest: BundleManifest): void {
    $('input-spec').textContent = describeInputSpec(manifest.extractor.preprocessing);
    if (this.demo !== undefined) $('demo-what').textContent = this.demo.description;
  }

  private render(record: FrameRecord): void {
    $('frame-count').textContent = String(this.frameCount);
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

  /**
   * Classifies frames from `next`, as many in flight as the HE pool asks (one per worker
   * while it runs one frame per worker, else one: a second frame would only wait), until
   * `next` has no more or stop() is called; frames in flight are finished, never dropped.
   */
  private async runStream(status: string, next: () => Promise<Frame | undefined>): Promise<void> {
    if (this.pool === undefined || this.state !== 'ready') return;
    this.running = true;
    this.setState('running', status);
    const pool = this.pool;
    const loop = () =>
      runFrameLoop({ next, process: (frame: Frame) => this.classify(frame.picture, frame.source), concurrency: () => pool.concurrency, running: () => this.running });
    this.run = loop().then(
      () => {
        this.running = false;
        if (this.state === 'running') this.setState('ready', 'ready');
      },
      (error: unknown) => {
        this.running = false;
        this.setState('error', 'error');
        this.showError(`A frame failed: ${message(error)}`);
      },
    );
    await this.run;
  }

  /** Runs `count` demo pictures (Infinity: until stopped), looping over the demo stream. */
  async runDemo(count: number): Promise<void> {
    const demo = this.demo;
    if (demo === undefined) return;
    let next = 0;
    await this.runStream('classifying the demo stream…', async () => (next < count ? { picture: await demo.frame(next++ % demo.count), source: 'demo' } : undefined));
  }

  /** Classifies camera frames until stopped. */
  async startCamera(): Promise<void> {
    if (this.state !== 'ready') return;
    try {
      await this.camera.start();
    } catch (error) {
      this.camera.stop();
      this.showError(`The camera could not start: ${message(error)}`);
      return;
    }
    $('camera-view').replaceChildren(this.camera.video);
    try {
      await this.runStream('classifying camera frames…', async () => {
        const picture = this.running ? await this.camera.next() : undefined;
        return picture === undefined ? undefined : { picture, source: 'camera' };
      });
    } finally {
      this.camera.stop();
    }
  }

  /** Stops the running stream; the frames in flight still complete (awaited). */
  async stop(): Promise<void> {
    this.running = false;
    this.camera.stop();
    await this.run;
  }

  async classifyFiles(files: Iterable<File>): Promise<void> {
    this.showError(undefined);
    for (const file of files) {
      try {
        await this.classify(await decodeImageFile(file), 'file');
      } catch (error) {
        this.showError(`${file.name} was not classified: ${message(error)}`);
      }
    }
  }

  private showDevice(): void {
    const enrolled = this.device !== undefined;
    $('device-id').textContent = enrolled ? `device ${this.device!.deviceId}` : 'not enrolled';
    $('device-id').dataset.enrolled = String(enrolled);
    document.body.classList.toggle('enrolled', enrolled);
  }

  private fillSettingsForm(): void {
    $<HTMLInputElement>('backend-url').value = this.settings.backendUrl;
    $<HTMLInputElement>('bundle-url').value = this.settings.bundleUrl;
    $<HTMLInputElement>('worker-count').value = String(this.settings.workers);
  }

  private async saveSettings(): Promise<void> {
    const problems: string[] = [];
    const check = <T>(read: () => T): T | undefined => {
      try {
        return read();
      } catch (error) {
        if (!(error instanceof SettingsError)) throw error;
        problems.push(error.message);
        return undefined;
      }
    };
    const backendUrl = check(() => checkBackendUrl($<HTMLInputElement>('backend-url').value));
    const bundleUrl = check(() => checkBundleUrl($<HTMLInputElement>('bundle-url').value, location.href));
    const workers = check(() => checkWorkers($<HTMLInputElement>('worker-count').value));
    if (backendUrl === undefined || bundleUrl === undefined || workers === undefined) {
      this.showFormError('settings', `Not saved: ${problems.join('; ')}`);
      return;
    }
    this.showFormError('settings', undefined);
    this.settings = { backendUrl, bundleUrl, workers };
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(this.settings));
    $('settings-status').textContent = 'saved';
    await this.stop();
    await this.loadBundle();
  }

  private async enrollDevice(): Promise<void> {
    const status = $('enroll-status');
    status.textContent = '';
    let token: string;
    try {
      token = checkEnrollmentToken($<HTMLInputElement>('enroll-token').value);
    } catch (error) {
      if (!(error instanceof SettingsError)) throw error;
      this.showFormError('enroll', `Not enrolled: ${error.message}`);
      return;
    }
    this.showFormError('enroll', undefined);
    status.textContent = 'enrolling…';
    try {
      this.device = await enroll(this.db, this.settings.backendUrl, token);
    } catch (error) {
      status.textContent = '';
      this.showFormError('enroll', `Not enrolled: ${message(error)}`);
      return;
    }
    $<HTMLInputElement>('enroll-token').value = '';
    status.textContent = 'enrolled: the private key was generated here and cannot be exported';
    this.showDevice();
    this.outbox.kick();
  }

  private bindUi(): void {
    this.fillSettingsForm();
    $('settings-form').addEventListener('submit', (event) => {
      event.preventDefault();
      void this.saveSettings();
    });
    $('enroll-form').addEventListener('submit', (event) => {
      event.preventDefault();
      void this.enrollDevice();
    });
    $('demo-start').addEventListener('click', () => {
      let count: number;
      try {
        count = checkFrameCount($<HTMLInputElement>('demo-count').value);
      } catch (error) {
        this.showError(message(error));
        return;
      }
      this.showError(undefined);
      void this.runDemo(count);
    });
    $('stop').addEventListener('click', () => void this.stop());
    $('camera-start').addEventListener('click', () => void this.startCamera());
    $('kiosk-start').addEventListener('click', () => {
      // Full screen needs the click's user activation: asked for before anything is awaited.
      void document.documentElement.requestFullscreen().catch(() => undefined);
      void (this.options.source === 'demo' ? this.runDemo(Infinity) : this.startCamera());
    });
    const fileInput = $<HTMLInputElement>('file-input');
    fileInput.addEventListener('change', () => {
      const files = Array.from(fileInput.files ?? []);
      fileInput.value = '';
      void this.classifyFiles(files);
    });
    const drop = $('drop-zone');
    drop.addEventListener('dragover', (event) => event.preventDefault());
    drop.addEventListener('drop', (event) => {
      event.preventDefault();
      const files = Array.from(event.dataTransfer?.files ?? []);
      if (this.state !== 'ready') this.showError('Files can be dropped once the bundle is ready and nothing else runs');
      else if (files.length === 0) this.showError('Only files can be classified: drop images');
      else void this.classifyFiles(files);
    });
    document.body.classList.toggle('kiosk-mode', this.options.kiosk);
    $('source').textContent = this.options.source === 'demo' ? 'the demo stream' : 'the camera';
  }
}
