/**
 * The input spec: the device's contract (DESIGN.md 3). It says exactly how a picture (a
 * camera frame, an image file, a demo image) becomes the model's first tensor: how it is
 * fitted to height × width (or digitized MNIST-style), how many channels, the value
 * scale, the per-channel mean and std, and the tensor's layout. `protect` resolves it from
 * flags against the ONNX input shape and records it in the signed manifest
 * (`extractor.preprocessing`); the kiosk, protect's calibration and the Node reference all
 * apply it through src/model/preprocess.ts. Platform-free.
 */

export type Layout = 'nchw' | 'nhwc';
export const LAYOUTS: readonly Layout[] = ['nchw', 'nhwc'];
export type Fit = 'center-crop' | 'resize' | 'letterbox';
export const FITS: readonly Fit[] = ['center-crop', 'resize', 'letterbox'];

/** The largest model input side the spec accepts. */
export const MAX_INPUT_SIDE = 2048;

export interface InputSpec {
  /** 1: grey (ITU-R BT.601 luma), 3: RGB. */
  readonly channels: 1 | 3;
  readonly height: number;
  readonly width: number;
  /** The tensor's layout: [1, C, H, W] or [1, H, W, C]. */
  readonly layout: Layout;
  /** The divisor applied to 0–255 pixel values before mean and std: 255 (pixel/255) or 1 (raw 0–255). */
  readonly scale: 255 | 1;
  /** One per channel: value = (pixel / scale − mean[c]) / std[c]. */
  readonly mean: readonly number[];
  readonly std: readonly number[];
  /**
   * How a picture of another size becomes height × width: 'center-crop' (the largest
   * centred region of the model's aspect ratio, then resized), 'resize' (the whole
   * picture, aspect ratio not kept), 'letterbox' (the whole picture, aspect ratio kept,
   * black bars). With `digitize`, always 'letterbox': the ink's box is fitted.
   */
  readonly fit: Fit;
  /**
   * MNIST-style digitizing (one channel only): light backgrounds inverted, the ink's
   * bounding box scaled to 20/28 of the side and centred by its centre of mass.
   */
  readonly digitize: boolean;
}

/** MNIST's contract: what today's models were trained on, and what old manifests meant. */
export const MNIST_SPEC: InputSpec = {
  channels: 1,
  height: 28,
  width: 28,
  layout: 'nchw',
  scale: 255,
  mean: [0.1307],
  std: [0.3081],
  fit: 'letterbox',
  digitize: true,
};

export class InputSpecError extends Error {
  readonly code = 'E_INPUT_SPEC';
  constructor(message: string) {
    super(message);
    this.name = 'InputSpecError';
  }
}

function bad(message: string): never {
  throw new InputSpecError(message);
}

const isSide = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= MAX_INPUT_SIDE;

/** One value per channel from one value or one per channel. */
function perChannel(name: string, value: unknown, channels: number, positive: boolean): number[] {
  const list = typeof value === 'number' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    bad(`${name} must be a number or a list of numbers, got ${JSON.stringify(value)}`);
  }
  if (list.length !== 1 && list.length !== channels) bad(`${name} has ${list.length} values, the input has ${channels} channel${channels === 1 ? '' : 's'} (give one value or one per channel)`);
  if (positive && !list.every((v) => v > 0)) bad(`${name} must be positive, got ${list.join(', ')}`);
  return list.length === channels ? [...list] : Array.from({ length: channels }, () => list[0] as number);
}

/**
 * Checks a spec (as the manifest records it, or as built from flags) and returns it with
 * mean and std expanded to one value per channel. Refuses what no device could apply.
 */
export function checkInputSpec(value: unknown): InputSpec {
  const s = value as Record<string, unknown> | null | undefined;
  if (s === null || typeof s !== 'object') bad('the input spec must be an object');
  if (s.channels !== 1 && s.channels !== 3) bad(`channels must be 1 or 3, got ${JSON.stringify(s.channels)}`);
  if (!isSide(s.height) || !isSide(s.width)) bad(`height and width must be integers from 1 to ${MAX_INPUT_SIDE}, got ${JSON.stringify(s.height)}×${JSON.stringify(s.width)}`);
  if (!LAYOUTS.includes(s.layout as Layout)) bad(`layout must be ${LAYOUTS.join(' or ')}, got ${JSON.stringify(s.layout)}`);
  if (s.scale !== 255 && s.scale !== 1) bad(`scale must be 255 or 1, got ${JSON.stringify(s.scale)}`);
  if (!FITS.includes(s.fit as Fit)) bad(`fit must be ${FITS.join(', ')}, got ${JSON.stringify(s.fit)}`);
  if (typeof s.digitize !== 'boolean') bad(`digitize must be true or false, got ${JSON.stringify(s.digitize)}`);
  const channels = s.channels;
  if (s.digitize && channels !== 1) bad('digitize makes a one-channel (grey) image: it needs channels 1');
  if (s.digitize && s.fit !== 'letterbox') bad(`digitize fits the ink's bounding box keeping its aspect ratio (letterbox), not ${JSON.stringify(s.fit)}`);
  return {
    channels,
    height: s.height,
    width: s.width,
    layout: s.layout as Layout,
    scale: s.scale,
    mean: perChannel('mean', s.mean, channels, false),
    std: perChannel('std', s.std, channels, true),
    fit: s.fit as Fit,
    digitize: s.digitize,
  };
}

/**
 * A manifest's `extractor.preprocessing`: the spec, or the form manifests had before the
 * spec existed ({ width, height, mean, std }, numbers), which meant MNIST's contract with
 * that mean and std (one grey channel, NCHW, pixel/255, digitized).
 */
export function parsePreprocessing(value: unknown): InputSpec {
  const p = value as Record<string, unknown> | null | undefined;
  if (p !== null && typeof p === 'object' && p.channels === undefined && typeof p.mean === 'number' && typeof p.std === 'number') {
    return checkInputSpec({ ...MNIST_SPEC, width: p.width, height: p.height, mean: p.mean, std: p.std });
  }
  return checkInputSpec(value);
}

/** The tensor shape a spec makes: [1, C, H, W] or [1, H, W, C]. */
export function specShape(spec: InputSpec, layout: Layout = spec.layout): number[] {
  const { channels: c, height: h, width: w } = spec;
  return layout === 'nchw' ? [1, c, h, w] : [1, h, w, c];
}

/** One line for people: "3×32×32 NHWC, (pixel/255 − [0.49, 0.48, 0.45]) / [0.25, 0.24, 0.26], center-crop". */
export function describeInputSpec(spec: InputSpec): string {
  const list = (v: readonly number[]) => (v.every((x) => x === v[0]) ? String(v[0]) : `[${v.join(', ')}]`);
  const value = spec.scale === 255 ? 'pixel/255' : 'pixel';
  return (
    `${spec.channels}×${spec.height}×${spec.width} ${spec.layout.toUpperCase()} ${spec.channels === 1 ? 'grey' : 'RGB'}, ` +
    `(${value} − ${list(spec.mean)}) / ${list(spec.std)}, ${spec.digitize ? 'digitized MNIST-style' : spec.fit}`
  );
}

/** The spec's flags as `protect` and `start` take them, all optional (strings as typed). */
export interface InputSpecFlags {
  readonly channels?: string;
  readonly inputSize?: string;
  readonly layout?: string;
  readonly scale?: string;
  readonly mean?: string;
  readonly std?: string;
  readonly fit?: string;
  readonly digitize?: boolean;
  readonly noDigitize?: boolean;
}

/** The flags' names, for the error messages and for passing them on (start → protect). */
export const INPUT_SPEC_FLAGS = {
  channels: '--channels',
  inputSize: '--input-size',
  layout: '--layout',
  scale: '--scale',
  mean: '--mean',
  std: '--std',
  fit: '--fit',
  digitize: '--digitize',
  noDigitize: '--no-digitize',
} as const;

function parseNumbers(flag: string, text: string): number[] {
  const parts = text.split(',').map((p) => p.trim());
  const values = parts.map(Number);
  if (parts.some((p) => p === '') || !values.every(Number.isFinite) || (values.length !== 1 && values.length !== 3)) {
    bad(`${flag} must be one number or three (r,g,b), got '${text}'`);
  }
  return values;
}

const fmtShape = (shape: readonly number[]) => `[${shape.join(', ')}]`;

/**
 * The spec for a model whose input has `shape` (4 dimensions, batch first, numbers), from
 * the flags: what they leave open comes from the shape, and MNIST-shaped inputs
 * (1×28×28) default to MNIST's contract. A flag that contradicts the shape or another
 * flag is refused naming both; so is a model whose normalization cannot be guessed (any
 * input but MNIST's needs --mean and --std).
 */
export function inputSpecFromFlags(shape: readonly number[], flags: InputSpecFlags): InputSpec {
  if (shape.length !== 4) bad(`the model's input ${fmtShape(shape)} is not an image: an image input has 4 dimensions, [N, C, H, W] or [N, H, W, C]`);
  if (shape[0] !== 1) bad(`the model's input ${fmtShape(shape)} has a batch of ${shape[0]}: the device sends one image at a time (batch 1 or symbolic)`);
  let channels: 1 | 3 | undefined;
  if (flags.channels !== undefined) {
    if (flags.channels !== '1' && flags.channels !== '3') bad(`--channels must be 1 or 3, got '${flags.channels}'`);
    channels = Number(flags.channels) as 1 | 3;
  }
  let size: [number, number] | undefined;
  if (flags.inputSize !== undefined) {
    const m = /^(\d+)[x×](\d+)$/i.exec(flags.inputSize.trim());
    if (m === null || !isSide(Number(m[1])) || !isSide(Number(m[2]))) bad(`--input-size must be HxW with sides from 1 to ${MAX_INPUT_SIDE} (e.g. 32x32), got '${flags.inputSize}'`);
    size = [Number(m[1]), Number(m[2])];
  }
  let layout: Layout | undefined;
  if (flags.layout !== undefined) {
    if (!LAYOUTS.includes(flags.layout as Layout)) bad(`--layout must be nchw or nhwc, got '${flags.layout}'`);
    layout = flags.layout as Layout;
  }
  let scale: 255 | 1 | undefined;
  if (flags.scale !== undefined) {
    if (flags.scale !== '255' && flags.scale !== '1') bad(`--scale must be 255 (pixel/255) or 1 (raw 0–255 pixels), got '${flags.scale}'`);
    scale = Number(flags.scale) as 255 | 1;
  }
  const mean = flags.mean === undefined ? undefined : parseNumbers('--mean', flags.mean);
  const std = flags.std === undefined ? undefined : parseNumbers('--std', flags.std);
  if (std?.some((v) => !(v > 0))) bad(`--std must be positive, got '${flags.std}'`);
  let fit: Fit | undefined;
  if (flags.fit !== undefined) {
    if (!FITS.includes(flags.fit as Fit)) bad(`--fit must be ${FITS.join(', ')}, got '${flags.fit}'`);
    fit = flags.fit as Fit;
  }
  if (flags.digitize && flags.noDigitize) bad('--digitize and --no-digitize contradict each other');

  // The layout: given, or the one reading of the shape that has 1 or 3 channels (and agrees with the flags).
  const read = (l: Layout) => ({ channels: l === 'nchw' ? shape[1]! : shape[3]!, height: l === 'nchw' ? shape[2]! : shape[1]!, width: l === 'nchw' ? shape[3]! : shape[2]! });
  const agrees = (l: Layout) => {
    const r = read(l);
    return (r.channels === 1 || r.channels === 3) && (channels === undefined || r.channels === channels) && (size === undefined || (r.height === size[0] && r.width === size[1]));
  };
  if (layout === undefined) {
    const candidates = LAYOUTS.filter(agrees);
    if (candidates.length === 2) bad(`the model's input ${fmtShape(shape)} reads as NCHW and as NHWC: say which with --layout nchw|nhwc`);
    layout = candidates[0] ?? 'nchw';
  }
  const r = read(layout);
  const as = `the model's input ${fmtShape(shape)} (${layout.toUpperCase()}: ${r.channels} channel${r.channels === 1 ? '' : 's'}, ${r.height}×${r.width})`;
  if (channels !== undefined && r.channels !== channels) bad(`--channels ${channels} contradicts ${as}`);
  if (size !== undefined && (r.height !== size[0] || r.width !== size[1])) bad(`--input-size ${size[0]}x${size[1]} contradicts ${as}`);
  if (r.channels !== 1 && r.channels !== 3) {
    bad(flags.layout !== undefined ? `--layout ${layout} contradicts ${as}: a model takes 1 or 3 channels` : `${as} is not a 1- or 3-channel image: give --layout if it is one`);
  }
  if (!isSide(r.height) || !isSide(r.width)) bad(`${as}: sides must be from 1 to ${MAX_INPUT_SIDE}`);
  const c = r.channels as 1 | 3;
  if (mean !== undefined && mean.length !== 1 && mean.length !== c) bad(`--mean has ${mean.length} values, ${as} has ${c}`);
  if (std !== undefined && std.length !== 1 && std.length !== c) bad(`--std has ${std.length} values, ${as} has ${c}`);

  const mnistShaped = c === 1 && r.height === 28 && r.width === 28;
  const digitize = flags.digitize ? true : flags.noDigitize ? false : mnistShaped && (fit === undefined || fit === 'letterbox');
  if (digitize && c !== 1) bad(`--digitize makes a one-channel (grey) image: it contradicts ${as}`);
  if (digitize && fit !== undefined && fit !== 'letterbox') bad(`--digitize fits the ink's bounding box keeping its aspect ratio (letterbox): it contradicts --fit ${fit}`);
  // MNIST's normalization is the default only where it means something: a 1×28×28 input read as pixel/255.
  const mnistNormalization = mnistShaped && (scale === undefined || scale === 255);
  const missing = [mean === undefined ? '--mean' : undefined, std === undefined ? '--std' : undefined].filter((f) => f !== undefined);
  if (!mnistNormalization && missing.length > 0) {
    const why = mnistShaped ? `--scale ${scale} (MNIST's 0.1307 and 0.3081 are for pixel/255)` : `${as} is not MNIST's 1×28×28`;
    bad(`${why}: give its normalization with ${missing.join(' and ')} (--mean 0 --std 1 for none)`);
  }
  return checkInputSpec({
    channels: c,
    height: r.height,
    width: r.width,
    layout,
    scale: scale ?? 255,
    mean: mean ?? MNIST_SPEC.mean,
    std: std ?? MNIST_SPEC.std,
    fit: digitize ? 'letterbox' : (fit ?? 'center-crop'),
    digitize,
  });
}

/** The flags that give `spec` (for `start` to pass on, and for messages). */
export function inputSpecArgs(spec: InputSpec): string[] {
  const list = (v: readonly number[]) => (v.every((x) => x === v[0]) ? String(v[0]) : v.join(','));
  return [
    '--channels', String(spec.channels),
    '--input-size', `${spec.height}x${spec.width}`,
    '--layout', spec.layout,
    '--scale', String(spec.scale),
    '--mean', list(spec.mean),
    '--std', list(spec.std),
    ...(spec.digitize ? ['--digitize'] : ['--fit', spec.fit, '--no-digitize']),
  ];
}

/** Whether a spec is consistent with a tensor shape (the manifest's extractor.input). */
export function specMatchesShape(spec: InputSpec, shape: readonly number[]): boolean {
  const want = specShape(spec);
  return shape.length === 4 && want.every((d, i) => d === shape[i]);
}
