import { join } from 'node:path';
import { DecryptionAgent } from '../../src/backend/decrypt';
import { Backend } from '../../src/backend/server';
import type { Layer } from '../../src/he';
import { MNIST_SIDE } from '../../src/model/idx';
import { MNIST_SPEC } from '../../src/model/input-spec';
import { nodeSeal } from '../../src/node/seal';
import { protectSplitModel, type ProtectReport } from '../../src/protect/protect';
import { operatorToken, type Workspace } from '../../src/protect/workspace';
import type { ResultRecord, Store } from '../../src/store/types';
import { makeInputs } from '../he/helpers';

/**
 * Protects a bare head (no trained extractor: a placeholder byte stands in for it) into
 * `<root>/public/models/<modelId>/v<N>/`, for tests and benchmarks of the owner's side
 * that feed features straight to the encrypted head. The placeholder cannot compute
 * calibration inputs, so the head is calibrated on `calibration` (default: 300 feature
 * vectors like makeInputs' 'realistic' ones).
 */
export async function protectHead(
  ws: Workspace,
  head: Layer[],
  modelId: string,
  root: string,
  calibration?: readonly ArrayLike<number>[],
): Promise<ProtectReport> {
  const first = head[0]!;
  if (first.kind !== 'dense') throw new Error('a head starts with a dense layer');
  return protectSplitModel(
    ws,
    await nodeSeal(),
    {
      head,
      extractor: new Uint8Array([0]),
      extractorInput: { name: 'input', shape: [1, 1, MNIST_SIDE, MNIST_SIDE] },
      extractorOutput: { name: 'features', shape: [1, first.inputs] },
      preprocessing: MNIST_SPEC,
    },
    {
      modelId,
      security: 128,
      input: 'encrypted',
      outDir: join(root, 'public', 'models'),
      calibration: calibration ?? makeInputs(first.inputs, 300, 'realistic', 1),
    },
  );
}

/** A decryption backend on the workspace, listening on a free local port. */
export async function startBackend(ws: Workspace, options: Partial<ConstructorParameters<typeof Backend>[0]> = {}) {
  const decryption = new DecryptionAgent(await nodeSeal(), ws.store, ws.kek);
  const backend = new Backend({ store: ws.store, decryption, operatorToken: operatorToken(ws.dataDir, {}), ...options });
  const port = await backend.listen(0);
  return { backend, decryption, url: `http://127.0.0.1:${port}` };
}

/**
 * Waits until no result (of `deviceId`, if given) is pending decryption, and returns them
 * all; fails after `timeoutMs`. Results are acknowledged before they are decrypted.
 */
export async function decrypted(store: Store, options: { deviceId?: string; timeoutMs?: number } = {}): Promise<ResultRecord[]> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  const filter = options.deviceId === undefined ? {} : { deviceId: options.deviceId };
  while ((await store.listResults({ ...filter, state: 'pending', limit: 1 })).length > 0) {
    if (Date.now() > deadline) throw new Error(`results still pending after ${options.timeoutMs ?? 30_000} ms`);
    await new Promise((done) => setTimeout(done, 10));
  }
  return store.listResults({ ...filter, limit: 100_000 });
}

/** An operator's live stream, as the cockpit reads it: every event (name and data) in order. */
export async function operatorStream(url: string, token: string): Promise<{ events: { event: string; data: Record<string, unknown> }[]; close(): void }> {
  const abort = new AbortController();
  const response = await fetch(`${url}/api/v1/results/stream`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal });
  if (response.status !== 200) throw new Error(`the stream answered ${response.status}`);
  const events: { event: string; data: Record<string, unknown> }[] = [];
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  void (async () => {
    let text = '';
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      text += chunk.value;
      for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
        const lines = text.slice(0, end).split('\n');
        text = text.slice(end + 2);
        const data = lines.find((line) => line.startsWith('data: '));
        if (data === undefined) continue;
        const event = lines.find((line) => line.startsWith('event: '))?.slice(7) ?? 'message';
        events.push({ event, data: JSON.parse(data.slice(6)) as Record<string, unknown> });
      }
    }
  })().catch(() => undefined);
  return { events, close: () => abort.abort() };
}
