import { join } from 'node:path';
import type { Layer } from '../../src/he';
import { MNIST_MEAN, MNIST_SIDE, MNIST_STD } from '../../src/model/idx';
import { nodeSeal } from '../../src/node/seal';
import { protectSplitModel, type ProtectReport } from '../../src/protect/protect';
import type { Workspace } from '../../src/protect/workspace';

/**
 * Protects a bare head (no trained extractor: a placeholder byte stands in for it) into
 * `<root>/public/models/<modelId>/v<N>/`, for tests and benchmarks of the owner's side
 * that feed features straight to the encrypted head.
 */
export async function protectHead(ws: Workspace, head: Layer[], modelId: string, root: string): Promise<ProtectReport> {
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
      preprocessing: { width: MNIST_SIDE, height: MNIST_SIDE, mean: MNIST_MEAN, std: MNIST_STD },
    },
    { modelId, security: 128, input: 'encrypted', outDir: join(root, 'public', 'models') },
  );
}
