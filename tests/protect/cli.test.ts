import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = mkdtempSync(join(tmpdir(), 'sealed-edge-cli-'));
const data = join(root, 'data');
const out = join(root, 'public', 'models');
const env = { ...process.env, SEALED_EDGE_KEK: '5a'.repeat(32) };

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/sealed-edge.mjs', ...args], { encoding: 'utf8', env, timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('owner commands', () => {
  it('protect publishes a new version each time and refuses what it cannot protect', () => {
    const relu = 'models/paper-cnn-relu.onnx';
    expect(cli('protect', relu, '--data', data, '--out', out)).toMatchObject({ code: 1, err: expect.stringMatching(/E_ACTIVATION: .*Relu.*--activation/) });
    const first = cli('protect', relu, '--id', 'mnist-relu', '--activation', 'cryptodl-relu-3', '--data', data, '--out', out, '--json');
    expect(first.err).toBe('');
    expect(first.code).toBe(0);
    expect(JSON.parse(first.out)).toMatchObject({ modelId: 'mnist-relu', version: 1, weightsBytes: expect.any(Number), peakRssMB: expect.any(Number) });
    const second = cli('protect', relu, '--id', 'mnist-relu', '--activation', 'cryptodl-relu-2', '--data', data, '--out', out);
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/protected mnist-relu v2 .*\n.*\n.*\n {2}time to encrypt [\d.]+ s[\s\S]*bundle [\d.]+ MB[\s\S]*peak memory \d+ MB/);
    expect(existsSync(join(out, 'mnist-relu', 'v1', 'manifest.sig'))).toBe(true);
    expect(existsSync(join(out, 'mnist-relu', 'v2', 'weights.bin'))).toBe(true);
    expect(cli('model', 'list', '--data', data).out).toMatch(/mnist-relu {2}v1 {2}active[\s\S]*mnist-relu {2}v2 {2}active/);
    expect(cli('model', 'retire', 'mnist-relu', '1', '--data', data)).toMatchObject({ code: 0, out: expect.stringMatching(/v1 retired/) });
    expect(cli('model', 'list', '--data', data).out).toMatch(/v1 {2}retired/);
    expect(cli('model', 'retire', 'mnist-relu', '9', '--data', data)).toMatchObject({ code: 1, err: expect.stringMatching(/E_NOT_FOUND/) });
  });

  it('protect refuses bad arguments and files clearly', () => {
    writeFileSync(join(root, 'noise.onnx'), Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37) % 256)));
    expect(cli('protect')).toMatchObject({ code: 2, err: expect.stringMatching(/exactly one MODEL.onnx/) });
    expect(cli('protect', join(root, 'missing.onnx'), '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/cannot read/) });
    expect(cli('protect', join(root, 'noise.onnx'), '--data', data, '--out', out)).toMatchObject({ code: 1, err: expect.stringMatching(/E_(FORMAT|TRUNCATED)/) });
    expect(cli('protect', 'models/paper-cnn-x2+2x.onnx', '--security', '100')).toMatchObject({ code: 2, err: expect.stringMatching(/--security/) });
    expect(cli('protect', 'models/paper-cnn-x2+2x.onnx', '--input', 'maybe')).toMatchObject({ code: 2, err: expect.stringMatching(/--input/) });
    expect(cli('protect', 'models/paper-cnn-x2+2x.onnx', '--id', 'Bad Id!')).toMatchObject({ code: 2, err: expect.stringMatching(/--id/) });
    expect(cli('protect', 'models/paper-cnn-relu.onnx', '--activation', 'magic-relu-3')).toMatchObject({ code: 2, err: expect.stringMatching(/METHOD-FN-DEGREE/) });
  });

  it('device and serve refuse bad arguments', () => {
    expect(cli('device', 'add', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/needs a NAME/) });
    expect(cli('device', 'fly', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/add NAME, list or revoke ID/) });
    const added = cli('device', 'add', 'kiosk-7', '--data', data, '--json');
    expect(JSON.parse(added.out)).toMatchObject({ name: 'kiosk-7', token: expect.stringMatching(/^[\w-]{32}$/) });
    expect(cli('device', 'revoke', 'no-such-device', '--data', data)).toMatchObject({ code: 1, err: expect.stringMatching(/E_NOT_FOUND/) });
    expect(cli('serve', '--static', join(root, 'nowhere'), '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/--static must be a directory/) });
    expect(cli('serve', '--port', '99999', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/--port/) });
    expect(cli('serve', '--rate', 'fast', '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/--rate/) });
  });
});
