import { describe, expect, it } from 'vitest';
import { runCli, runNode } from './node-run';

const cli = (...args: string[]) => runCli(args);
const bench = (...args: string[]) => runNode(['--import', 'tsx', 'bench/run.ts', ...args]);

describe('sealed-edge CLI', () => {
  it('runs the engine demo: the decrypted scores equal the float model’s to the printed precision', async () => {
    const r = await cli('demo', '--head', 'small', '--inputs', '2');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const rows = (label: string) =>
      [...r.out.matchAll(new RegExp(`${label} +(.*)→ class (\\d)`, 'g'))].map((m) => ({ scores: m[1]!.trim().split(/\s+/).map(Number), label: m[2] }));
    const decrypted = rows('decrypted');
    const float = rows('float');
    expect(decrypted).toHaveLength(2);
    expect(decrypted.map((d) => d.label)).toEqual(float.map((f) => f.label));
    decrypted.forEach((d, i) => {
      expect(d.scores).toHaveLength(10);
      // Four decimals are printed: a CKKS error far below 1e-4 can still flip the last digit.
      d.scores.forEach((v, j) => expect(Math.abs(v - float[i]!.scores[j]!)).toBeLessThanOrEqual(1.5e-4));
    });
  });

  it('refuses bad commands and flags with exit code 2 and a clear message', async () => {
    expect(await cli()).toMatchObject({ code: 2, err: expect.stringMatching(/no command given[\s\S]*usage: sealed-edge/) });
    expect(await cli('encrypt-everything')).toMatchObject({ code: 2, err: expect.stringMatching(/unknown command 'encrypt-everything'/) });
    expect(await cli('demo', '--security', '100')).toMatchObject({ code: 2, err: expect.stringMatching(/--security must be 128, 192 or 256, got '100'/) });
    expect(await cli('demo', '--inputs', 'many')).toMatchObject({ code: 2, err: expect.stringMatching(/--inputs must be an integer/) });
    expect(await cli('demo', '--head', 'resnet')).toMatchObject({ code: 2, err: expect.stringMatching(/--head must be one of mnist, small, last/) });
    expect(await cli('demo', '--colour', 'red')).toMatchObject({ code: 2, err: expect.stringMatching(/Unknown option '--colour'/) });
    expect(await cli('help')).toMatchObject({ code: 0, out: expect.stringMatching(/usage: sealed-edge[\s\S]*protect MODEL.onnx[\s\S]*\[--scheme ckks\|bgv\] \[--calibration IMAGES.idx\|DIR\][\s\S]*\[--channels 1\|3\] \[--input-size HxW\]/) });
  });

  it('the benchmark runner refuses unknown suites and flags', async () => {
    expect(await bench()).toMatchObject({ code: 2, err: expect.stringMatching(/no suite given/) });
    expect(await bench('gpu')).toMatchObject({ code: 2, err: expect.stringMatching(/unknown suite 'gpu'[\s\S]*suites: he/) });
    expect(await bench('he', '--fast')).toMatchObject({ code: 2, err: expect.stringMatching(/Unknown option '--fast'/) });
    expect(await bench('he', '--model', 'deep-poly')).toMatchObject({ code: 2, err: expect.stringMatching(/--model is an option of the conv and browser suites only, not of 'he'/) });
    expect(await bench('conv', '--model', 'resnet')).toMatchObject({ code: 2, err: expect.stringMatching(/no conv benchmark rows for model 'resnet': choose one of cryptonets-lola, deep-poly, paper-cnn/) });
    expect(await bench('he', '--input', 'plain')).toMatchObject({ code: 2, err: expect.stringMatching(/--input is an option of the conv suite only, not of 'he'/) });
    expect(await bench('conv', '--input', 'cipher')).toMatchObject({ code: 2, err: expect.stringMatching(/--input must be 'encrypted' or 'plain', got 'cipher'/) });
  });
});
