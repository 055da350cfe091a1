// Runs in Node (no browser needed): the rules the kiosk applies to its URL parameters, its
// set-up panel and the enrollment token (src/edge/settings.ts); setup.test.ts checks that
// the page shows each refusal.
import { describe, expect, it } from 'vitest';
import {
  checkBackendUrl,
  checkBundleUrl,
  checkEnrollmentToken,
  checkFrameCount,
  checkPoolMode,
  checkWorkers,
  parseSavedSettings,
  parseUrlOptions,
  SettingsError,
} from '../../src/edge/settings';

const PAGE = 'https://shop.example/floor-2/kiosk/';

describe('kiosk settings (Node)', () => {
  it('URL parameters: defaults, every known parameter, and the kiosk flag', () => {
    expect(parseUrlOptions('', PAGE)).toEqual({ settings: {}, kiosk: false, source: 'camera', mode: 'auto' });
    expect(parseUrlOptions('?kiosk', PAGE).kiosk).toBe(true);
    expect(parseUrlOptions('?kiosk=0', PAGE).kiosk).toBe(false);
    expect(parseUrlOptions('?bundle=models/cifar/v3/&backend=https://owner.example:8443/&workers=3&kiosk=1&source=demo&mode=per-worker', PAGE)).toEqual({
      settings: { bundleUrl: 'models/cifar/v3/', backendUrl: 'https://owner.example:8443/', workers: 3 },
      kiosk: true,
      source: 'demo',
      mode: 'per-worker',
    });
    for (const mode of ['auto', 'shared', 'per-worker', 'single'] as const) expect(parseUrlOptions(`?workers=2&mode=${mode}`, PAGE).mode).toBe(mode);
  });

  it('URL parameters: every problem is reported at once', () => {
    const refused = (search: string) => {
      try {
        parseUrlOptions(search, PAGE);
      } catch (error) {
        expect(error).toBeInstanceOf(SettingsError);
        return (error as Error).message;
      }
      throw new Error(`${search} was accepted`);
    };
    expect(refused('?workers=0&source=mic&colour=red')).toBe(
      "the number of HE workers must be a whole number from 1 to 16, got '0'; ?source= takes camera or demo, got 'mic'; " +
        "unknown URL parameter 'colour' (the kiosk reads bundle, backend, workers, kiosk, source, mode)",
    );
    const badMode =
      "?mode= takes auto, shared, per-worker or single (how the HE workers run frames: measured and chosen, each frame shared, one frame per worker, one worker), got '";
    expect(refused('?mode=fast')).toBe(`${badMode}fast'`);
    expect(refused('?mode=')).toBe(`${badMode}'`);
    expect(refused('?mode=Shared')).toBe(`${badMode}Shared'`);
    expect(refused('?mode=single&mode=shared')).toBe('?mode= is given more than once');
    expect(refused('?workers=0&mode=per_worker')).toBe(`the number of HE workers must be a whole number from 1 to 16, got '0'; ${badMode}per_worker'`);
    expect(checkPoolMode('per-worker')).toBe('per-worker');
    expect(() => checkPoolMode(' auto')).toThrow(SettingsError);
    expect(refused('?bundle=a.json&bundle=b.json')).toBe('?bundle= is given more than once');
    expect(refused('?kiosk=true')).toBe("?kiosk= takes 1 (kiosk mode) or 0, got 'true'");
  });

  it('the backend URL: absolute http(s), no credentials, query or fragment', () => {
    expect(checkBackendUrl(' http://127.0.0.1:8080/ ')).toBe('http://127.0.0.1:8080/');
    expect(checkBackendUrl('https://owner.example/sealed-edge/')).toBe('https://owner.example/sealed-edge/');
    expect(() => checkBackendUrl('')).toThrow('the backend URL is empty');
    expect(() => checkBackendUrl('/api/')).toThrow("the backend URL '/api/' is not an absolute URL (http://host:port/)");
    expect(() => checkBackendUrl('ws://owner.example/')).toThrow('the backend URL must be an http or https URL, not ws:');
    expect(() => checkBackendUrl('https://user:pw@owner.example/')).toThrow('must not carry a user name or password');
    expect(() => checkBackendUrl('https://owner.example/?token=1')).toThrow('must not have a ?query');
    expect(() => checkBackendUrl('https://owner.example/#x')).toThrow('must not have a #fragment');
  });

  it('the bundle URL: a latest.json pointer or a version directory, relative to the page or absolute', () => {
    expect(checkBundleUrl('models/mnist/latest.json', PAGE)).toBe('models/mnist/latest.json');
    expect(checkBundleUrl('../models/mnist/v2/', PAGE)).toBe('../models/mnist/v2/');
    expect(checkBundleUrl('https://cdn.example/models/mnist/latest.json?v=2', PAGE)).toBe('https://cdn.example/models/mnist/latest.json?v=2');
    expect(() => checkBundleUrl('models/mnist/v2', PAGE)).toThrow("must name the model's latest.json or a version directory ending in '/', got 'models/mnist/v2'");
    expect(() => checkBundleUrl('data:application/json,{}', PAGE)).toThrow('must be an http or https URL, not data:');
    expect(() => checkBundleUrl('http://[::1', PAGE)).toThrow("the bundle URL 'http://[::1' is not a URL");
  });

  it('workers, demo frames and the enrollment token', () => {
    expect(checkWorkers(' 16 ')).toBe(16);
    for (const bad of ['0', '17', '1.5', '-1', '2e1', '', 'two']) expect(() => checkWorkers(bad)).toThrow(/whole number from 1 to 16/);
    expect(checkFrameCount('1000')).toBe(1000);
    for (const bad of ['0', '1001', '3.0', 'ten']) expect(() => checkFrameCount(bad)).toThrow(/whole number from 1 to 1000/);
    expect(checkEnrollmentToken('  Zm9vYmFyLWJhei1xdXV4LXRva2VuLTEy\n')).toBe('Zm9vYmFyLWJhei1xdXV4LXRva2VuLTEy');
    expect(() => checkEnrollmentToken(' ')).toThrow('paste the enrollment token');
    for (const bad of ['short', 'x'.repeat(257), 'has spaces inside the token text', 'plus+slash/are-not-base64url==']) {
      expect(() => checkEnrollmentToken(bad)).toThrow(/16 to 256 letters, digits, "-" or "_"/);
    }
  });

  it('saved settings are checked again', () => {
    expect(parseSavedSettings(null, PAGE)).toEqual({});
    expect(parseSavedSettings('{"workers":2,"bundleUrl":"models/mnist/v1/"}', PAGE)).toEqual({ workers: 2, bundleUrl: 'models/mnist/v1/' });
    expect(() => parseSavedSettings('{', PAGE)).toThrow('the saved settings are not JSON');
    expect(() => parseSavedSettings('[1]', PAGE)).toThrow('the saved settings are not an object');
    expect(() => parseSavedSettings('{"backendUrl":"ftp://x/"}', PAGE)).toThrow('not ftp:');
  });
});
