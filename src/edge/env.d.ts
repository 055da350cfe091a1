/// <reference types="vite/client" />
/** The owner's Ed25519 verification key (64 hex digits), pinned at build time by vite.config.ts; '' if none. */
declare const __SEALED_EDGE_OWNER_KEY__: string;
/** What `sealed-edge deploy` pinned: the backend URL and the bundle the kiosk opens by default ({} otherwise). */
declare const __SEALED_EDGE_SITE__: import('./site').SiteDefaults;
