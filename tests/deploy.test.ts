// `sealed-edge deploy`: the kiosk and a model's signed bundle as one static folder, and
// every refusal (nothing written). The folder served cross-origin in Chromium is
// tests/browser/static-site.test.ts.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './node-run';

const ENV = { ...process.env, SEALED_EDGE_KEK: '3c'.repeat(32) };
const MODEL = 'models/small-poly-square.onnx';

const cli = (...args: string[]) => runCli(args, { env: ENV, timeout: 5 * 60_000 });

/** The built kiosk's JavaScript, where the build pins the owner's key and the site's defaults. */
const builtJs = (site: string) =>
  readdirSync(join(site, 'assets'))
    .filter((f) => f.endsWith('.js'))
    .map((f) => readFileSync(join(site, 'assets', f), 'utf8'))
    .join('\n');

describe('sealed-edge deploy', () => {
  let root: string;
  let models: string;
  let data: string;
  let ownerKey: string;
  const deploy = (...args: string[]) => cli('deploy', ...args);

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'sealed-edge-deploy-'));
    models = join(root, 'models');
    data = join(root, 'data');
    const r = await cli('protect', MODEL, '--id', 'small', '--data', data, '--out', models, '--json');
    expect(r.code, r.err).toBe(0);
    ownerKey = readFileSync(join(data, 'owner-signing.pub'), 'utf8').trim();
  });

  it('refuses bad arguments with exit code 2, and bundles it cannot deploy with exit code 1, writing nothing', async () => {
    const www = join(root, 'refused');
    const out = join(www, 'site');
    // --models and --data as the case gives them, else the protected model's.
    const withDirs = (args: string[]) => [...args, ...(args.includes('--models') ? [] : ['--models', models]), ...(args.includes('--data') ? [] : ['--data', data])];
    const refusals: [string[], number, RegExp][] = [
      [['--out', out], 2, /deploy needs a MODEL_ID/],
      [['small', 'extra', '--out', out], 2, /unexpected arguments: extra/],
      [['Small!', '--out', out], 2, /'Small!' is not a model id/],
      [['small'], 2, /deploy needs --out DIR/],
      [['small', '--out', out, '--base', 'kiosk/'], 2, /--base must be \.\/ or an absolute path that starts and ends with '\/', such as \/kiosk\/; got 'kiosk\/'/],
      [['small', '--out', out, '--base', '/kiosk'], 2, /--base must be/],
      [['small', '--out', out, '--base', 'https://cdn.example/kiosk/'], 2, /--base must be/],
      [['small', '--out', out, '--base', '/a/../b/'], 2, /--base must be/],
      [['small', '--out', out, '--backend', 'backend.example'], 2, /--backend: the backend URL 'backend\.example' is not an absolute URL/],
      [['small', '--out', out, '--backend', 'ftp://backend.example/'], 2, /--backend: the backend URL must be an http or https URL, not ftp:/],
      [['small', '--out', out, '--backend', 'https://backend.example/?x=1'], 2, /--backend: the backend URL must not have a \?query/],
      [['small', '--out', out, '--backend', 'https://u:p@backend.example/'], 2, /--backend: the backend URL must not carry a user name or password/],
      [['colour', '--out', out], 2, /unknown model 'colour': .*models holds small \(sealed-edge protect publishes one/],
      [['small', '--out', out, '--models', join(root, 'nowhere')], 2, /unknown model 'small': .*nowhere holds no published model/],
      [['small', '--out', '.'], 2, /--out .* contains .*, which deploy reads \(and --force would delete\)/],
      [['small', '--out', out, '--data', join(root, 'no-data')], 1, /E_OWNER_KEY: no owner verification key in .*no-data\/owner-signing\.pub: give the --data directory that protected small/],
    ];
    for (const [args, code, message] of refusals) {
      const r = await deploy(...withDirs(args));
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.err, args.join(' ')).toMatch(new RegExp(`^sealed-edge deploy: ${message.source}`));
    }
    expect(existsSync(www)).toBe(false);
  });

  it('refuses a model with no bundle, an unreadable pointer, a bundle signed by another key or changed since', async () => {
    const bad = join(root, 'bad-models');
    mkdirSync(join(bad, 'unpublished'), { recursive: true });
    mkdirSync(join(bad, 'broken'), { recursive: true });
    writeFileSync(join(bad, 'broken', 'latest.json'), '{"version": 1, "path": "v1/"');
    cpSync(join(models, 'small'), join(bad, 'small'), { recursive: true });
    const otherData = join(root, 'other-data');
    mkdirSync(otherData);
    writeFileSync(join(otherData, 'owner-signing.pub'), `${'ab'.repeat(32)}\n`);
    const out = join(root, 'bad-out', 'site');
    const at = (id: string, dataDir = data) => deploy(id, '--out', out, '--models', bad, '--data', dataDir);
    expect(await at('unpublished')).toMatchObject({ code: 1, err: expect.stringMatching(/E_BUNDLE: model unpublished has no published bundle: .*unpublished\/latest\.json is missing/) });
    expect(await at('broken')).toMatchObject({ code: 1, err: expect.stringMatching(/E_BUNDLE: cannot read .*broken\/latest\.json: .*JSON/) });
    expect(await at('small', otherData)).toMatchObject({
      code: 1,
      err: expect.stringMatching(/E_BUNDLE: the bundle .*small\/v1\/ cannot be deployed: manifest\.sig is not a valid signature of manifest\.json by the pinned owner key \(was it protected with another --data\?\)/),
    });
    const weights = join(bad, 'small', 'v1', 'weights.bin');
    const bytes = readFileSync(weights);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 1;
    writeFileSync(weights, bytes);
    expect(await at('small')).toMatchObject({ code: 1, err: expect.stringMatching(/E_BUNDLE: the bundle .* cannot be deployed: weights\.bin does not match its SHA-256/) });
    expect(existsSync(join(root, 'bad-out'))).toBe(false);
  });

  it('a failure after the build (a bundle file it cannot copy) leaves nothing behind, not even the parent it made', async () => {
    const odd = join(root, 'odd-models');
    cpSync(join(models, 'small'), join(odd, 'small'), { recursive: true });
    expect(spawnSync('mkfifo', [join(odd, 'small', 'pipe')]).status).toBe(0);
    const r = await deploy('small', '--out', join(root, 'odd-www', 'public', 'site'), '--models', odd, '--data', data);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^sealed-edge deploy: E_BUILD: nothing was written to .*odd-www\/public\/site: .*FIFO/);
    expect(existsSync(join(root, 'odd-www'))).toBe(false);
  });

  it('writes the kiosk and the signed bundle into one folder, pinning the owner key, the backend and the bundle', async () => {
    const www = join(root, 'www', 'public');
    const out = join(www, 'kiosk');
    const r = await deploy('small', '--out', out, '--models', models, '--data', data, '--backend', 'https://backend.example:8443/sealed/');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/deployed the kiosk and small v1 \(signed by [0-9a-f]{16}…\) to .*kiosk\n {2}base: {4}\.\/ \(relative[^\n]*\n {2}backend: https:\/\/backend\.example:8443\/sealed\/\n[^\n]*--kiosk-origin/);
    expect(readdirSync(www)).toEqual(['kiosk']);
    expect(readdirSync(out).sort()).toEqual(['assets', 'demo', 'index.html', 'models', 'ort']);
    expect(readdirSync(join(out, 'ort')).sort()).toEqual(['ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm']);
    // The bundle exactly as protect published it.
    for (const file of ['latest.json', 'v1/manifest.json', 'v1/manifest.sig', 'v1/weights.bin', 'v1/keys.bin']) {
      expect(readFileSync(join(out, 'models', 'small', file)).equals(readFileSync(join(models, 'small', file))), file).toBe(true);
    }
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    expect(html).toMatch(/<script type="module" crossorigin src="\.\/assets\/index-[\w-]+\.js">/);
    const js = builtJs(out);
    expect(js).toContain(ownerKey);
    expect(js).toContain('https://backend.example:8443/sealed/');
    expect(js).toContain('models/small/latest.json');
  });

  it('replaces a folder only with --force, and builds for an absolute --base', async () => {
    const out = join(root, 'www', 'public', 'kiosk');
    writeFileSync(join(out, 'stale.txt'), 'from an older deployment');
    expect(await deploy('small', '--out', out, '--models', models, '--data', data)).toMatchObject({
      code: 2,
      err: expect.stringMatching(/--out .*kiosk exists and is not empty: give a new or empty directory, or --force to replace it/),
    });
    writeFileSync(join(root, 'a-file'), '');
    expect(await deploy('small', '--out', join(root, 'a-file'), '--models', models, '--data', data)).toMatchObject({ code: 2, err: expect.stringMatching(/--out .*a-file exists and is not a directory/) });
    const r = await deploy('small', '--out', out, '--models', models, '--data', data, '--base', '/edge/kiosk/', '--force');
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/base: {4}\/edge\/kiosk\/ \(serve the folder at exactly this path\)\n {2}backend: the kiosk’s own origin/);
    expect(existsSync(join(out, 'stale.txt'))).toBe(false);
    expect(readdirSync(join(root, 'www', 'public'))).toEqual(['kiosk']);
    expect(readFileSync(join(out, 'index.html'), 'utf8')).toMatch(/src="\/edge\/kiosk\/assets\/index-[\w-]+\.js"/);
    const js = builtJs(out);
    expect(js).not.toContain('backend.example');
    expect(js).toContain('models/small/latest.json');
  });
});
