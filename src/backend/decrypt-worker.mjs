// The file piscina loads in each decryption worker thread: the worker is TypeScript, run
// through tsx as the CLI is (bin/sealed-edge.mjs), so no build step is needed.
import { register } from 'tsx/esm/api';

register();
const worker = await import('./decrypt-worker.ts');
export default worker.default;
