import { preprocess } from '../model/preprocess';
import { decodeImageFile } from './acquire';
import { Kiosk } from './app';

const kiosk = new Kiosk();
// A handle for diagnostics and the browser tests (timings, pool, each frame's input digit,
// which the device has anyway); it holds no decrypted label or score.
(globalThis as unknown as { sealedEdgeKiosk: Kiosk }).sealedEdgeKiosk = kiosk;
// The kiosk's own preprocessing and image decoding, for the browser test that compares
// them byte for byte with the Node reference (tests/browser/preprocess.test.ts).
(globalThis as unknown as { sealedEdgePreprocessing: unknown }).sealedEdgePreprocessing = { preprocess, decodeImageFile };
kiosk.start().catch((error: Error) => {
  const el = document.getElementById('error');
  if (el !== null) {
    el.hidden = false;
    el.textContent = `The kiosk could not start: ${error.message}`;
  }
});
