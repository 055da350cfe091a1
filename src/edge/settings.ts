/**
 * The kiosk's settings and the checks every entry point applies to them: URL parameters
 * (`?bundle=`, `?backend=`, `?workers=`, `?kiosk=`, `?source=`, `?mode=`), the set-up panel's form
 * and the enrollment token. Platform-free (no DOM): Node tests pin the rules; the page
 * shows each refusal's message.
 */
import { MODE_SETTINGS, type ModeSetting } from './pool-modes';

export interface Settings {
  /** The backend's base URL (absolute). */
  backendUrl: string;
  /** `…/<modelId>/latest.json` (the owner's pointer) or a version directory ending in `/`. */
  bundleUrl: string;
  /** HE workers. */
  workers: number;
}

export const SOURCES = ['camera', 'demo'] as const;
export type Source = (typeof SOURCES)[number];

/** What the page's URL asks for: settings that override the saved ones, and the mode. */
export interface UrlOptions {
  settings: Partial<Settings>;
  /** `?kiosk=1`: full screen, start and stop only. */
  kiosk: boolean;
  /** What the kiosk mode's Start button classifies. */
  source: Source;
  /**
   * How the HE pool uses its workers (`?mode=`, for tests and benchmarks; URL only, not
   * saved): auto (default) measures and picks the fastest, or a fixed mode (src/edge/pool-modes.ts).
   */
  mode: ModeSetting;
}

export const MAX_WORKERS = 16;
export const URL_PARAMETERS = ['bundle', 'backend', 'workers', 'kiosk', 'source', 'mode'] as const;

export class SettingsError extends Error {
  override readonly name = 'SettingsError';
}

/** `value` as an http(s) URL; resolved against `page` if given, else it must be absolute. */
function resolveHttp(value: string, page: string | undefined, what: string): URL {
  const text = value.trim();
  if (text === '') throw new SettingsError(`the ${what} is empty`);
  let url: URL;
  try {
    url = new URL(text, page);
  } catch {
    throw new SettingsError(`the ${what} '${text}' is not ${page === undefined ? 'an absolute URL (http://host:port/)' : 'a URL'}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new SettingsError(`the ${what} must be an http or https URL, not ${url.protocol}`);
  if (url.username !== '' || url.password !== '') throw new SettingsError(`the ${what} must not carry a user name or password`);
  if (url.hash !== '') throw new SettingsError(`the ${what} must not have a #fragment`);
  return url;
}

/** The backend's base URL as entered (trimmed), once it is an absolute http(s) URL without query. */
export function checkBackendUrl(value: string): string {
  const url = resolveHttp(value, undefined, 'backend URL');
  if (url.search !== '') throw new SettingsError('the backend URL must not have a ?query: give the backend’s base URL');
  return value.trim();
}

/** The bundle URL as entered (trimmed), once it resolves to a pointer (.json) or a version directory (/). */
export function checkBundleUrl(value: string, page: string): string {
  const url = resolveHttp(value, page, 'bundle URL');
  if (!url.pathname.endsWith('.json') && !url.pathname.endsWith('/')) {
    throw new SettingsError(`the bundle URL must name the model's latest.json or a version directory ending in '/', got '${value.trim()}'`);
  }
  return value.trim();
}

export function checkWorkers(value: string): number {
  const text = value.trim();
  const n = /^\d{1,3}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_WORKERS)) throw new SettingsError(`the number of HE workers must be a whole number from 1 to ${MAX_WORKERS}, got '${text}'`);
  return n;
}

/** `?mode=`: auto, shared, per-worker or single. */
export function checkPoolMode(value: string): ModeSetting {
  const mode = MODE_SETTINGS.find((m) => m === value);
  if (mode === undefined) {
    throw new SettingsError(
      `?mode= takes ${MODE_SETTINGS.slice(0, -1).join(', ')} or ${MODE_SETTINGS.at(-1)} ` +
        `(how the HE workers run frames: measured and chosen, each frame shared, one frame per worker, one worker), got '${value}'`,
    );
  }
  return mode;
}

export const MAX_DEMO_FRAMES = 1000;

export function checkFrameCount(value: string): number {
  const text = value.trim();
  const n = /^\d{1,4}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_DEMO_FRAMES)) throw new SettingsError(`the number of demo frames must be a whole number from 1 to ${MAX_DEMO_FRAMES}, got '${text}'`);
  return n;
}

/** The one-time token `sealed-edge device add` prints (base64url; the backend takes 16–256 characters). */
export function checkEnrollmentToken(value: string): string {
  const token = value.trim();
  if (token === '') throw new SettingsError('paste the enrollment token that `sealed-edge device add` printed');
  if (!/^[A-Za-z0-9_-]{16,256}$/.test(token)) {
    throw new SettingsError('an enrollment token is the code `sealed-edge device add` printed: 16 to 256 letters, digits, "-" or "_"');
  }
  return token;
}

/** Reads the page's query string; throws one SettingsError that lists every bad parameter. */
export function parseUrlOptions(search: string, page: string): UrlOptions {
  const params = new URLSearchParams(search);
  const problems: string[] = [];
  const options: UrlOptions = { settings: {}, kiosk: false, source: 'camera', mode: 'auto' };
  const seen = new Set<string>();
  for (const [name, value] of params) {
    if (seen.has(name)) {
      problems.push(`?${name}= is given more than once`);
      continue;
    }
    seen.add(name);
    try {
      switch (name) {
        case 'bundle':
          options.settings.bundleUrl = checkBundleUrl(value, page);
          break;
        case 'backend':
          options.settings.backendUrl = checkBackendUrl(value);
          break;
        case 'workers':
          options.settings.workers = checkWorkers(value);
          break;
        case 'kiosk':
          if (value !== '' && value !== '1' && value !== '0') throw new SettingsError(`?kiosk= takes 1 (kiosk mode) or 0, got '${value}'`);
          options.kiosk = value !== '0';
          break;
        case 'source':
          if (!(SOURCES as readonly string[]).includes(value)) throw new SettingsError(`?source= takes ${SOURCES.join(' or ')}, got '${value}'`);
          options.source = value as Source;
          break;
        case 'mode':
          options.mode = checkPoolMode(value);
          break;
        default:
          throw new SettingsError(`unknown URL parameter '${name}' (the kiosk reads ${URL_PARAMETERS.join(', ')})`);
      }
    } catch (error) {
      if (!(error instanceof SettingsError)) throw error;
      problems.push(error.message);
    }
  }
  if (problems.length > 0) throw new SettingsError(problems.join('; '));
  return options;
}

/** Settings the set-up panel saved, checked again (an older build or a hand edit may have changed them). */
export function parseSavedSettings(json: string | null, page: string): Partial<Settings> {
  if (json === null) return {};
  let saved: unknown;
  try {
    saved = JSON.parse(json);
  } catch {
    throw new SettingsError('the saved settings are not JSON');
  }
  if (typeof saved !== 'object' || saved === null || Array.isArray(saved)) throw new SettingsError('the saved settings are not an object');
  const { backendUrl, bundleUrl, workers } = saved as Record<string, unknown>;
  const out: Partial<Settings> = {};
  if (backendUrl !== undefined) out.backendUrl = checkBackendUrl(String(backendUrl));
  if (bundleUrl !== undefined) out.bundleUrl = checkBundleUrl(String(bundleUrl), page);
  if (workers !== undefined) out.workers = checkWorkers(String(workers));
  return out;
}
