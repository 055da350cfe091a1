/**
 * The kiosk's demo stream: `<base>demo/stream.json` names what "Start demo" loops over,
 * an IDX file of images (uint8 [N, H, W] grey or [N, H, W, C]) or a list of PNG/JPEG
 * files, all beside it in `demo/`. The kiosk build ships the first 100 MNIST test digits
 * (scripts/kiosk-assets.ts); `sealed-edge start --demo FILE|DIR` replaces them.
 * Platform-free: the CLI writes it, the kiosk reads it.
 */
export const DEMO_DIR = 'demo';
export const DEMO_STREAM_FILE = 'stream.json';
export const DEMO_FORMAT = 'sealed-edge-demo/1';

export type DemoStreamIndex = { readonly format: typeof DEMO_FORMAT; readonly idx: string } | { readonly format: typeof DEMO_FORMAT; readonly images: readonly string[] };

/** A file name in demo/: letters, digits, '.', '_', '-', not starting with '.'. */
const NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
/** The most images a demo stream lists. */
export const MAX_DEMO_IMAGES = 10_000;

function bad(why: string): never {
  throw new Error(`${DEMO_DIR}/${DEMO_STREAM_FILE} is not a demo stream: ${why}`);
}

export function parseDemoStream(value: unknown): DemoStreamIndex {
  const v = value as Record<string, unknown> | null;
  if (v === null || typeof v !== 'object' || v.format !== DEMO_FORMAT) bad(`its format must be "${DEMO_FORMAT}"`);
  if (v.idx !== undefined) {
    if (typeof v.idx !== 'string' || !NAME.test(v.idx)) bad('idx must be a file name');
    return { format: DEMO_FORMAT, idx: v.idx as string };
  }
  const images = v.images;
  if (!Array.isArray(images) || images.length === 0 || images.length > MAX_DEMO_IMAGES || !images.every((n) => typeof n === 'string' && NAME.test(n))) {
    bad(`images must be a list of 1 to ${MAX_DEMO_IMAGES} file names`);
  }
  return { format: DEMO_FORMAT, images: images as string[] };
}
