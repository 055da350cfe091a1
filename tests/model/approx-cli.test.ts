import { describe, expect, it } from 'vitest';
import { type NodeRun, runCli } from '../node-run';
import { approximate } from '../../src/model/approx';

const cli = (...args: string[]) => runCli(args);

describe('sealed-edge approx', () => {
  it('prints with --json exactly what approximate() returns', async () => {
    const r = await cli('approx', '--fn', 'relu', '--method', 'cryptodl', '--degree', '3', '--interval', '-6,6', '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out.trim().split('\n')).toHaveLength(1);
    const printed = JSON.parse(r.out);
    expect(Object.keys(printed)).toEqual(['fn', 'method', 'degree', 'interval', 'coeffs', 'maxError', 'l2Error']);
    expect(printed).toEqual(approximate({ fn: 'relu', method: 'cryptodl', degree: 3, interval: [-6, 6] }));
  });

  it('prints a readable summary without --json, and takes --interval=lo,hi too', async () => {
    const r = await cli('approx', '--fn', 'sigmoid', '--method', 'least-squares', '--degree', '3', '--interval=-6,6');
    expect(r).toMatchObject({ code: 0, err: '' });
    const expected = approximate({ fn: 'sigmoid', method: 'least-squares', degree: 3, interval: [-6, 6] });
    expect(r.out).toContain('sigmoid on [-6, 6], degree 3, method least-squares');
    expect(r.out).toMatch(/p\(x\) = 0\.5 \+ 0\.180597·x − 0\.00309144·x\^3/);
    expect(r.out).toContain(`max |p(x) − f(x)| = ${expected.maxError.toExponential(4)}`);
    expect(r.out).toContain(JSON.stringify(expected.coeffs));
  });

  it('refuses bad flags with exit code 2 and a message naming the flag', async () => {
    const base = ['approx', '--fn', 'relu', '--method', 'cryptodl', '--degree', '3', '--interval', '-6,6'];
    const withFlag = (flag: string, value: string) => {
      const args = [...base];
      args[args.indexOf(flag) + 1] = value;
      return cli(...args);
    };
    const refused = (r: NodeRun, message: RegExp) => {
      expect(r.out).toBe('');
      expect(r).toMatchObject({ code: 2, err: expect.stringMatching(message) });
    };
    refused(await withFlag('--fn', 'swish'), /^sealed-edge approx: --fn: unknown activation 'swish': expected one of relu, sigmoid, tanh\n$/);
    refused(await withFlag('--method', 'remez'), /--method: unknown method 'remez'/);
    refused(await withFlag('--degree', '9'), /--degree: degree must be an integer from 2 to 8, got 9/);
    refused(await withFlag('--degree', 'three'), /--degree must be an integer from 2 to 8, got 'three'/);
    refused(await withFlag('--interval', '-2,6'), /--interval: the interval must be symmetric/);
    refused(await withFlag('--interval', '6'), /--interval must be two numbers 'lo,hi' such as -6,6, got '6'/);
    refused(await cli('approx', '--fn', 'relu', '--method', 'cryptodl', '--degree', '3'), /--interval is required/);
    refused(await cli(...base, '--colour', 'red'), /Unknown option '--colour'/);
    refused(await cli(...base, 'extra'), /Unexpected argument 'extra'/);
  });

  it('is listed in the usage text', async () => {
    expect(await cli('help')).toMatchObject({ code: 0, out: expect.stringMatching(/approx --fn relu\|sigmoid\|tanh/) });
  });
});
