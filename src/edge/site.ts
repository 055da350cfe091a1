/**
 * What a static-site build of the kiosk (`sealed-edge deploy`) pins besides the owner's
 * key: where the backend is and which bundle the kiosk opens when neither the page's URL
 * nor the set-up panel says otherwise, and the base path it is built for. Platform-free:
 * vite.config.ts and the deploy command check the same rules.
 */

/** Build-time defaults (`__SEALED_EDGE_SITE__`); absent fields keep the kiosk's own defaults. */
export interface SiteDefaults {
  /** The backend's base URL (absolute); default: the root of the kiosk's own origin. */
  readonly backendUrl?: string;
  /** The bundle's pointer, relative to the page; default: models/mnist/latest.json. */
  readonly bundleUrl?: string;
}

/**
 * A base path the kiosk can be built for: './' (relative: the built kiosk works from any
 * sub-path) or an absolute path that starts and ends with '/', such as /kiosk/, made of
 * URL-safe segments other than '.' and '..'.
 */
export function isBasePath(value: string): boolean {
  if (value === './') return true;
  return /^\/([A-Za-z0-9._~-]+\/)*$/.test(value) && !value.split('/').some((part) => part === '.' || part === '..');
}
