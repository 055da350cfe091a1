import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../node-run';
import { approximate } from '../../src/model/approx';
import { ModelBuilder } from './onnx-builder';

const cli = (...args: string[]) => runCli(args);

const dir = mkdtempSync(join(tmpdir(), 'sealed-edge-inspect-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** input [N, 2, 6, 6] → Conv → MaxPool → Flatten → fc1 → activation → fc2 → Softmax, saved to a file. */
function saved(file: string, activation: 'square' | 'relu'): string {
  const b = new ModelBuilder(21);
  const x = b.input('image', ['batch', 2, 6, 6]);
  let t = b.node('Conv', [x, b.random([3, 2, 3, 3], 0.5)], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv' });
  t = b.node('MaxPool', [t], { kernel_shape: [2, 2], strides: [2, 2] }, { name: 'pool' });
  t = b.node('Flatten', [t], {}, { name: 'flatten' });
  t = b.node('Gemm', [t, b.random([7, 27], 0.5), b.random([7], 0.5)], { transB: 1 }, { name: 'fc1' });
  t = activation === 'square' ? b.node('Mul', [t, t], {}, { name: 'act' }) : b.node('Relu', [t], {}, { name: 'act' });
  t = b.node('Gemm', [t, b.random([4, 7], 0.5)], { transB: 1 }, { name: 'fc2' });
  t = b.node('Softmax', [t], { axis: 1 }, { name: 'softmax' });
  const path = join(dir, file);
  writeFileSync(path, b.build(t));
  return path;
}

const square = saved('square.onnx', 'square');

/** tf2onnx style: NHWC image → Transpose → Conv (SAME_UPPER, stride 2) → x² → Flatten (NCHW) → dense. */
const convModel = (() => {
  const b = new ModelBuilder(22);
  const x = b.input('image', ['batch', 5, 7, 3]);
  let t = b.node('Transpose', [x], { perm: [0, 3, 1, 2] }, { name: 'to_nchw' });
  t = b.node('Conv', [t, b.random([2, 3, 3, 3], 0.5), b.random([2], 0.1)], { kernel_shape: [3, 3], strides: [2, 2], auto_pad: { s: 'SAME_UPPER' } }, { name: 'conv' });
  t = b.node('Mul', [t, t], {}, { name: 'act' });
  t = b.node('Flatten', [t], {}, { name: 'flatten' });
  t = b.node('Gemm', [t, b.random([4, 24], 0.5)], { transB: 1 }, { name: 'fc' });
  const path = join(dir, 'conv.onnx');
  writeFileSync(path, b.build(t));
  return path;
})();
/** image [batch, 1, 9, 9] → conv (stride 2, pads 1) → x² → conv (2→3) → x² → Flatten → dense. */
const twoConvModel = (() => {
  const b = new ModelBuilder(23);
  let t = b.node('Conv', [b.input('image', ['batch', 1, 9, 9]), b.random([2, 1, 3, 3], 0.5)], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, { name: 'conv1' });
  t = b.node('Conv', [b.node('Mul', [t, t], {}, { name: 'act1' }), b.random([3, 2, 3, 3], 0.5)], { kernel_shape: [3, 3] }, { name: 'conv2' });
  t = b.node('Flatten', [b.node('Mul', [t, t], {}, { name: 'act2' })], {}, { name: 'flatten' });
  t = b.node('Gemm', [t, b.random([4, 27], 0.5)], { transB: 1 }, { name: 'fc' });
  const path = join(dir, 'two-conv.onnx');
  writeFileSync(path, b.build(t));
  return path;
})();
/** image [batch, 1, 9, 9] → conv (stride 2, pads 1) → x² → [conv 3×3 pad 1 → x² → conv 3×3 pad 1] + skip → x² → Flatten → dense. */
const residualModel = (() => {
  const b = new ModelBuilder(24);
  const same = { kernel_shape: [3, 3], pads: [1, 1, 1, 1] };
  let t = b.node('Conv', [b.input('image', ['batch', 1, 9, 9]), b.random([2, 1, 3, 3], 0.5)], { ...same, strides: [2, 2] }, { name: 'conv1' });
  const skip = b.node('Mul', [t, t], {}, { name: 'act1' });
  t = b.node('Conv', [skip, b.random([2, 2, 3, 3], 0.5)], same, { name: 'block.conv1' });
  t = b.node('Conv', [b.node('Mul', [t, t], {}, { name: 'block.act' }), b.random([2, 2, 3, 3], 0.5)], same, { name: 'block.conv2' });
  t = b.node('Add', [t, skip], {}, { name: 'block.add' });
  t = b.node('Flatten', [b.node('Mul', [t, t], {}, { name: 'act2' })], {}, { name: 'flatten' });
  t = b.node('Gemm', [t, b.random([4, 50], 0.5)], { transB: 1 }, { name: 'fc' });
  const path = join(dir, 'residual.onnx');
  writeFileSync(path, b.build(t));
  return path;
})();
const relu = saved('relu.onnx', 'relu');

describe('sealed-edge inspect', () => {
  it('prints the extractor shapes and the head with --json', async () => {
    const r = await cli('inspect', square, '--json');
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(r.out)).toEqual({
      extractor: { input: ['batch', 2, 6, 6], output: ['batch', 27] },
      headInput: { name: 'features', shape: ['batch', 27], layout: 'nchw' },
      head: [
        { op: 'dense', in: 27, out: 7 },
        { op: 'poly', coeffs: [0, 0, 1] },
        { op: 'dense', in: 7, out: 4 },
      ],
      splits: ['pool', 'flatten', 'act'],
    });
  });

  it('prints a readable summary without --json', async () => {
    const r = await cli('inspect', square);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toContain(`input 'image' [batch, 2, 6, 6] → 'features' [batch, 27]`);
    expect(r.out).toMatch(/head {7}dense 27 → 7\n {13}poly {2}coeffs \(x\^0 first\) \[0,0,1\]\n {13}dense 7 → 4/);
    expect(r.out).toContain(`left out   node 'softmax' (Softmax)`);
    expect(r.out).toContain('splits     pool, flatten, act\n');
  });

  it('splits at a named node', async () => {
    const r = await cli('inspect', square, '--split', 'act', '--json');
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(JSON.parse(r.out)).toMatchObject({ extractor: { input: ['batch', 2, 6, 6], output: ['batch', 7] }, head: [{ op: 'dense', in: 7, out: 4 }] });
  });

  it('--split input: no extractor, the head starts with the convolution; an NHWC input is reported as such', async () => {
    const r = await cli('inspect', convModel, '--split', 'input', '--json');
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(JSON.parse(r.out)).toEqual({
      extractor: null,
      headInput: { name: 'image', shape: ['batch', 5, 7, 3], layout: 'nhwc' },
      head: [
        { op: 'conv', in: [3, 5, 7], out: [2, 3, 4], kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] },
        { op: 'poly', coeffs: [0, 0, 1] },
        { op: 'dense', in: 24, out: 4 },
      ],
      splits: ['input', 'to_nchw', 'act', 'flatten'],
    });
    const text = await cli('inspect', convModel, '--split', 'input');
    expect(text).toMatchObject({ code: 0, err: '' });
    expect(text.out).toContain(`extractor  none: the head reads the model's input 'image' [batch, 5, 7, 3], NHWC: the device transposes it to channels first (C×H×W) before encrypting\n`);
    expect(text.out).toContain('head       conv  3×5×7 → 2×3×4, kernel 3×3, stride 2×2, pads [1, 1, 1, 1]\n');
    expect(text.out).toContain('splits     input, to_nchw, act, flatten\n');
  });

  it('--split input with a second convolution: both are head layers, and the split before the second is offered', async () => {
    const r = await cli('inspect', twoConvModel, '--split', 'input', '--json');
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(JSON.parse(r.out)).toMatchObject({
      extractor: null,
      head: [
        { op: 'conv', in: [1, 9, 9], out: [2, 5, 5], kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] },
        { op: 'poly', coeffs: [0, 0, 1] },
        { op: 'conv', in: [2, 5, 5], out: [3, 3, 3], kernel: [3, 3], stride: [1, 1], pads: [0, 0, 0, 0] },
        { op: 'poly', coeffs: [0, 0, 1] },
        { op: 'dense', in: 27, out: 4 },
      ],
      splits: ['input', 'act1', 'act2', 'flatten'],
    });
    const text = await cli('inspect', twoConvModel, '--split', 'act1');
    expect(text).toMatchObject({ code: 0, err: '' });
    expect(text.out).toContain('head       conv  2×5×5 → 3×3×3, kernel 3×3, stride 1×1, pads [0, 0, 0, 0]\n');
    expect(text.out).toContain('splits     input, act1, act2, flatten\n');
  });

  it('--split input with a residual block: an add layer after its second convolution, and no split offered inside the block', async () => {
    const r = await cli('inspect', residualModel, '--split', 'input', '--json');
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(JSON.parse(r.out)).toMatchObject({
      head: [
        { op: 'conv', in: [1, 9, 9], out: [2, 5, 5], kernel: [3, 3], stride: [2, 2], pads: [1, 1, 1, 1] },
        { op: 'poly', coeffs: [0, 0, 1] },
        { op: 'conv', in: [2, 5, 5], out: [2, 5, 5], kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] },
        { op: 'poly', coeffs: [0, 0, 1] },
        { op: 'conv', in: [2, 5, 5], out: [2, 5, 5], kernel: [3, 3], stride: [1, 1], pads: [1, 1, 1, 1] },
        { op: 'add', from: 1 },
        { op: 'poly', coeffs: [0, 0, 1] },
        { op: 'dense', in: 50, out: 4 },
      ],
      splits: ['input', 'act2', 'flatten'],
    });
    const text = await cli('inspect', residualModel, '--split', 'input');
    expect(text.out).toContain("conv  2×5×5 → 2×5×5, kernel 3×3, stride 1×1, pads [1, 1, 1, 1]\n             add   layer 1's output (residual)\n");
    const inside = await cli('inspect', residualModel, '--split', 'block.act');
    expect(inside).toMatchObject({ code: 2, out: '' });
    expect(inside.err).toMatch(/^sealed-edge inspect: --split: node 'block\.add' \(Add\) in the head adds 'mul_\d+' from node 'act1' \(Mul\), which is computed before the split .*split after the block \(--split act2\)/);
  });

  it('refuses a ReLU head naming the node, and takes --activation to approximate it', async () => {
    const r = await cli('inspect', relu);
    expect(r).toMatchObject({ code: 1, out: '' });
    expect(r.err).toMatch(/^sealed-edge inspect: E_ACTIVATION: node 'act' \(Relu\) is a Relu in the classifier head, .*--activation cryptodl-relu-3.*\n$/);
    const approximated = await cli('inspect', relu, '--activation', 'cryptodl-relu-3', '--json');
    expect(approximated).toMatchObject({ code: 0, err: '' });
    // CryptoDL's cubic for ReLU has a zero x³ term, which the head drops.
    const coeffs = approximate({ fn: 'relu', method: 'cryptodl', degree: 3, interval: [-6, 6] }).coeffs;
    expect(coeffs[3]).toBe(0);
    expect(JSON.parse(approximated.out).head[1]).toEqual({ op: 'poly', coeffs: coeffs.slice(0, 3) });
  });

  it('refuses bad input with one clear line and exit code 1 or 2', async () => {
    const corrupt = join(dir, 'corrupt.onnx');
    writeFileSync(corrupt, 'this is not a model');
    const truncated = join(dir, 'truncated.onnx');
    const bytes = readFileSync(square);
    writeFileSync(truncated, bytes.subarray(0, bytes.length >> 1));
    const cases: [string[], number, RegExp][] = [
      [[], 2, /^sealed-edge inspect: MODEL\.onnx is required\n$/],
      [[join(dir, 'missing.onnx')], 2, /^sealed-edge inspect: cannot read '.*missing\.onnx': no such file\n$/],
      [[corrupt], 1, /^sealed-edge inspect: E_FORMAT: .*corrupt\.onnx: not an ONNX model/],
      [[truncated], 1, /^sealed-edge inspect: E_TRUNCATED: .*truncated\.onnx: the data ends early .*truncated\n$/],
      [[square, '--split', 'fc9'], 2, /^sealed-edge inspect: --split: the model has no node or tensor named 'fc9'; nodes near the output: .*'fc1' \(Gemm\)/],
      [[square, '--activation', 'remez-relu-3'], 2, /--activation must be METHOD-FN-DEGREE/],
      [[square, '--activation', 'cryptodl-relu-12'], 2, /--activation cryptodl-relu-12: degree must be an integer from 2 to 8/],
      [[square, '--colour', 'red'], 2, /Unknown option '--colour'/],
    ];
    for (const [args, code, message] of cases) {
      const r = await cli('inspect', ...args);
      expect(r.out).toBe('');
      expect(r.err.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r).toMatchObject({ code, err: expect.stringMatching(message) });
    }
  });

  it('is listed in the usage text', async () => {
    expect((await cli('help')).out).toContain('inspect MODEL.onnx [--split NODE|input]');
  });
});
