/**
 * `start --demo FILE|DIR`: the kiosk's demo stream from an IDX file of images (uint8
 * [N, H, W] grey or [N, H, W, C]) or a folder of PNG/JPEG files (name order). Every image
 * is decoded here first (pngjs, jpeg-js), so a stream the kiosk could not show is refused
 * before anything is built; then the files are copied into the built kiosk's demo/ with
 * the index it reads (src/edge/demo-stream.ts).
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { DEMO_DIR, DEMO_FORMAT, DEMO_STREAM_FILE, type DemoStreamIndex, MAX_DEMO_IMAGES } from '../edge/demo-stream';
import { ModelError } from '../model/errors';
import { readImageSet } from '../model/preprocess';
import { decodeImageFile, IMAGE_FILE } from '../node/images';

export interface DemoSource {
  /** Files to copy into demo/ (source path → name there). */
  readonly files: readonly { from: string; name: string }[];
  readonly index: DemoStreamIndex;
  /** For people: "100 images of x.idx", "12 image files of photos/". */
  readonly description: string;
}

/** Reads and checks a demo stream: an IDX file of images or a folder of PNG/JPEG files. */
export function readDemoSource(path: string): DemoSource {
  if (statSync(path).isDirectory()) {
    // The folder's .png, .jpg and .jpeg files; anything else (a labels file, say) is left out.
    const names = readdirSync(path).filter((n) => IMAGE_FILE.test(n) && !n.startsWith('.')).sort();
    if (names.length === 0) throw new ModelError('E_FORMAT', `--demo ${path}: the folder holds no .png or .jpg images`);
    if (names.length > MAX_DEMO_IMAGES) throw new ModelError('E_FORMAT', `--demo ${path}: ${names.length} images, a demo stream has at most ${MAX_DEMO_IMAGES}`);
    const files = names.map((n, i) => {
      decodeImageFile(join(path, n)); // refuses what does not decode, naming the file
      return { from: join(path, n), name: `${String(i).padStart(5, '0')}${extname(n).toLowerCase()}` };
    });
    return { files, index: { format: DEMO_FORMAT, images: files.map((f) => f.name) }, description: `${files.length} image files of ${path}` };
  }
  const images = readImageSet(new Uint8Array(readFileSync(path)), path);
  if (images.count === 0) throw new ModelError('E_FORMAT', `--demo ${path}: the file holds no images`);
  const name = basename(path).replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[._]+/, '') || 'stream';
  const idx = name.endsWith('.idx') ? name : `${name}.idx`;
  return { files: [{ from: path, name: idx }], index: { format: DEMO_FORMAT, idx }, description: `${images.count} images of ${basename(path)}` };
}

/** Puts the stream into a built kiosk (`dist`), replacing the one it ships. */
export function writeDemoStream(dist: string, demo: DemoSource): void {
  const dir = join(dist, DEMO_DIR);
  mkdirSync(dir, { recursive: true });
  for (const f of demo.files) copyFileSync(f.from, join(dir, f.name));
  writeFileSync(join(dir, DEMO_STREAM_FILE), `${JSON.stringify(demo.index)}\n`);
}
