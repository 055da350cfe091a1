// protect's and start's input spec flags: each refusal (exit 2, nothing written), a colour
// model protected with per-channel normalization (the spec in the signed manifest), and
// start's --demo checks. In-process through the CLI's main(), as `sealed-edge` runs it.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main';
import { readDemoSource, writeDemoStream } from '../../src/cli/demo-stream';
import { parseDemoStream } from '../../src/edge/demo-stream';
import { parseManifest } from '../../src/model/bundle';
import { readCalibrationImages } from '../../src/protect/calibration';
import { greyPng } from '../browser/media';
import { writeColourIdx, writeColourModel } from '../model/colour-model';

const root = mkdtempSync(join(tmpdir(), 'sealed-edge-spec-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const data = join(root, 'data');
const out = join(root, 'models');
const MNIST = 'models/paper-cnn-x2+2x.onnx';
const colour = writeColourModel(root, 'nhwc');
const calibration = join(root, 'colour.idx');
writeColourIdx(calibration, 40, 12, 10);

/** Runs the CLI in this process; returns its exit code and what it wrote. */
async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let [stdout, stderr] = ['', ''];
  const write = [process.stdout.write, process.stderr.write];
  process.stdout.write = ((chunk: string) => ((stdout += chunk), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  const previous = process.env.SEALED_EDGE_KEK;
  process.env.SEALED_EDGE_KEK = '6b'.repeat(32);
  try {
    return { code: await main(args), out: stdout, err: stderr };
  } finally {
    [process.stdout.write, process.stderr.write] = write as [typeof process.stdout.write, typeof process.stderr.write];
    if (previous === undefined) delete process.env.SEALED_EDGE_KEK;
    else process.env.SEALED_EDGE_KEK = previous;
  }
}

describe('protect: the input spec flags', () => {
  it('refuses each bad flag and each contradiction with the ONNX input, naming both, before anything is written', async () => {
    const at = ['--data', data, '--out', out];
    const refusals: [string[], RegExp][] = [
      [['--channels', '2'], /--channels must be 1 or 3, got '2'/],
      [['--channels', '3'], /--channels 3 contradicts the model's input \[1, 1, 28, 28\] \(NCHW: 1 channel, 28×28\)/],
      [['--input-size', '28'], /--input-size must be HxW/],
      [['--input-size', '32x32'], /--input-size 32x32 contradicts the model's input \[1, 1, 28, 28\]/],
      [['--layout', 'chw'], /--layout must be nchw or nhwc, got 'chw'/],
      [['--layout', 'nhwc'], /--layout nhwc contradicts the model's input \[1, 1, 28, 28\] \(NHWC: 28 channels, 1×28\)/],
      [['--scale', '128'], /--scale must be 255 \(pixel\/255\) or 1/],
      [['--scale', '1'], /--scale 1 \(MNIST's 0\.1307 and 0\.3081 are for pixel\/255\): give its normalization with --mean and --std/],
      [['--mean', 'grey'], /--mean must be one number or three \(r,g,b\), got 'grey'/],
      [['--mean', '0.1,0.2,0.3'], /--mean has 3 values, the model's input \[1, 1, 28, 28\] .* has 1/],
      [['--std=-1'], /--std must be positive, got '-1'/],
      [['--fit', 'stretch'], /--fit must be center-crop, resize, letterbox, got 'stretch'/],
      [['--digitize', '--fit', 'center-crop'], /--digitize fits the ink's bounding box .*: it contradicts --fit center-crop/],
      [['--digitize', '--no-digitize'], /--digitize and --no-digitize contradict each other/],
      [['--calibration', join(root, 'missing.idx')], /cannot read the calibration images .*missing\.idx: no such file or folder/],
    ];
    for (const [flags, message] of refusals) {
      const r = await cli('protect', MNIST, ...flags, ...at);
      expect({ flags, code: r.code, err: r.err }).toEqual({ flags, code: 2, err: expect.stringMatching(message) });
    }
    expect(await cli('protect', colour, ...at)).toMatchObject({ code: 2, err: expect.stringMatching(/the model's input \[1, 8, 8, 3\] \(NHWC: 3 channels, 8×8\) is not MNIST's 1×28×28: give its normalization with --mean and --std/) });
    expect(await cli('protect', colour, '--mean', '0.5', '--std', '0.25', ...at)).toMatchObject({
      code: 2,
      err: expect.stringMatching(/the default calibration images \(MNIST's training set\) are 1×28×28 grey digits; the model takes 3×8×8 NHWC RGB.*: give --calibration/),
    });
    expect(await cli('protect', colour, '--layout', 'nchw', '--mean', '0', '--std', '1', ...at)).toMatchObject({ code: 2, err: expect.stringMatching(/--layout nchw contradicts the model's input \[1, 8, 8, 3\] \(NCHW: 8 channels, 8×3\)/) });
    expect(existsSync(data)).toBe(false);
    expect(existsSync(out)).toBe(false);
  });

  it('protects a colour NHWC model with per-channel normalization: the spec is in the signed manifest and the report', async () => {
    const r = await cli('protect', colour, '--id', 'colour', '--mean', '0.49,0.48,0.45', '--std', '0.25,0.24,0.26', '--fit', 'letterbox', '--calibration', calibration, '--data', data, '--out', out, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const spec = { channels: 3, height: 8, width: 8, layout: 'nhwc', scale: 255, mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26], fit: 'letterbox', digitize: false };
    expect(JSON.parse(r.out)).toMatchObject({ modelId: 'colour', version: 1, preprocessing: spec, ckks: { calibrationVectors: 40 } });
    const manifest = parseManifest(readFileSync(join(out, 'colour', 'v1', 'manifest.json')));
    expect(manifest.extractor.preprocessing).toEqual(spec);
    expect(manifest.extractor.input.shape).toEqual([1, 8, 8, 3]);
    const text = await cli('protect', colour, '--id', 'colour', '--scale', '1', '--mean', '128', '--std', '64', '--calibration', calibration, '--data', data, '--out', out);
    expect(text.code).toBe(0);
    expect(text.out).toContain('  input spec: 3×8×8 NHWC RGB, (pixel − 128) / 64, center-crop\n');
    expect(text.out).toMatch(/calibration: the first 40 images of .*colour\.idx, through the extractor/);
  });

  it('reads calibration images from a folder of PNG files (other files left out), and refuses one that does not decode', () => {
    const dir = join(root, 'pictures');
    mkdirSync(dir);
    writeFileSync(join(dir, 'b.png'), greyPng(3, 2, Uint8Array.from([1, 2, 3, 4, 5, 6])));
    writeFileSync(join(dir, 'a.png'), greyPng(2, 2, Uint8Array.from([9, 9, 9, 9])));
    const { images } = readCalibrationImages(dir);
    expect(images.count).toBe(2);
    expect(Array.from(images.at(0).data.subarray(0, 4))).toEqual([9, 9, 9, 255]);
    expect(images.at(1).width).toBe(3);
    writeFileSync(join(dir, 'labels.json'), '[]');
    expect(readCalibrationImages(dir).images.count).toBe(2);
    writeFileSync(join(dir, 'c.jpg'), 'not a jpeg');
    expect(() => readCalibrationImages(dir)).toThrow(/c\.jpg: not a PNG or JPEG image/);
    expect(() => readCalibrationImages(join(root, 'data-none'))).toThrow();
  });
});

describe('start: the spec flags passed to protect, and --demo', () => {
  it('refuses contradicting flags, a demo stream that cannot be shown, and another spec than the published one, before building', async () => {
    const at = ['--port', '0', '--data', data, '--out', out, '--dist', join(root, 'dist')];
    expect(await cli('start', ...at, '--id', 'fresh', '--channels', '3')).toMatchObject({ code: 2, err: expect.stringMatching(/--channels 3 contradicts the model's input \[1, 1, 28, 28\]/) });
    expect(await cli('start', ...at, '--demo', join(root, 'nothing'))).toMatchObject({ code: 2, err: expect.stringMatching(/--demo .*nothing: no such file or folder/) });
    const demo = join(root, 'demo');
    mkdirSync(demo);
    writeFileSync(join(demo, 'one.png'), greyPng(4, 4, new Uint8Array(16).fill(200)));
    writeFileSync(join(demo, 'two.png'), greyPng(4, 4, new Uint8Array(16)).subarray(0, 50));
    expect(await cli('start', ...at, '--demo', demo)).toMatchObject({ code: 1, err: expect.stringMatching(/E_IMAGE: .*two\.png: the PNG image does not decode/) });
    expect(await cli('start', ...at, '--demo', colour)).toMatchObject({ code: 1, err: expect.stringMatching(/E_FORMAT: .*bad magic number/) });
    expect(await cli('start', ...at, '--id', 'colour', '--scale', '1', '--mean', '128', '--std', '60')).toMatchObject({
      code: 2,
      err: expect.stringMatching(/model colour is already published with the input spec 3×8×8 NHWC RGB, \(pixel − 128\) \/ 64, center-crop, not 3×8×8 NHWC RGB, \(pixel − 128\) \/ 60, center-crop/),
    });
    expect(existsSync(join(root, 'dist'))).toBe(false);
  });

  it('--demo: an IDX file or a folder of images becomes the kiosk’s demo/stream.json', () => {
    const dist = join(root, 'site');
    const idx = readDemoSource(calibration);
    expect(idx.description).toBe('40 images of colour.idx');
    writeDemoStream(dist, idx);
    expect(parseDemoStream(JSON.parse(readFileSync(join(dist, 'demo', 'stream.json'), 'utf8')))).toEqual({ format: 'sealed-edge-demo/1', idx: 'colour.idx' });
    expect(readFileSync(join(dist, 'demo', 'colour.idx'))).toEqual(readFileSync(calibration));
    const dir = join(root, 'good-demo');
    mkdirSync(dir);
    writeFileSync(join(dir, 'z photo.png'), greyPng(4, 4, new Uint8Array(16).fill(10)));
    writeFileSync(join(dir, 'a.png'), greyPng(4, 4, new Uint8Array(16).fill(20)));
    writeFileSync(join(dir, 'labels.json'), '{}');
    writeDemoStream(dist, readDemoSource(dir));
    expect(JSON.parse(readFileSync(join(dist, 'demo', 'stream.json'), 'utf8'))).toEqual({ format: 'sealed-edge-demo/1', images: ['00000.png', '00001.png'] });
    expect(readFileSync(join(dist, 'demo', '00001.png'))).toEqual(readFileSync(join(dir, 'z photo.png')));
    expect(() => parseDemoStream({ format: 'sealed-edge-demo/1', images: ['../x.png'] })).toThrow(/images must be a list of 1 to 10000 file names/);
  });
});
