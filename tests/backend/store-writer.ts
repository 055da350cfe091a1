/**
 * A second process for tests/backend/store.test.ts: run as
 *   node --import tsx tests/backend/store-writer.ts DB DEVICE MODEL KEY MODE COUNT
 * MODE 'forever': records results with fresh idempotency keys until killed, printing
 *   "ack <id> <key>" after each commit (the parent SIGKILLs it mid-way).
 * MODE 'race': records the idempotency keys race-0 … race-<COUNT-1> and prints one JSON
 *   line of outcome counts.
 * Every result is self-checking: body hash, scores, noise budget and receipt are all derived from the
 * idempotency key, so the parent can tell a complete row from a torn one.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore } from '../../src/store/open';
import type { NewResult } from '../../src/store/types';

export function resultFor(deviceId: string, modelId: string, keyId: string, idempotencyKey: string): NewResult {
  const digest = createHash('sha256').update(idempotencyKey).digest();
  const scores = Array.from({ length: 10 }, (_, i) => digest[i]! / 7);
  const label = scores.indexOf(Math.max(...scores));
  return {
    deviceId,
    modelId,
    version: 1,
    keyId,
    idempotencyKey,
    bodySha256: digest.toString('hex'),
    label,
    scores,
    noiseBudgetBits: digest[10]! % 40,
    receivedAt: new Date().toISOString(),
    // Padding makes each row span several pages, so a kill lands mid-write more often.
    receipt: { idempotencyKey, sum: scores.reduce((a, b) => a + b, 0), padding: 'x'.repeat(20_000) },
  };
}

async function main(): Promise<void> {
  const [db, deviceId, modelId, keyId, mode, count] = process.argv.slice(2);
  if (!db || !deviceId || !modelId || !keyId || !mode) throw new Error('usage: store-writer DB DEVICE MODEL KEY MODE [COUNT]');
  const store = await openStore(db);
  if (mode === 'forever') {
    for (let i = 0; ; i++) {
      const key = `crash-${process.pid}-${i}`;
      const outcome = await store.recordResult(resultFor(deviceId, modelId, keyId, key));
      process.stdout.write(`ack ${outcome.result.id} ${key}\n`);
    }
  }
  if (mode === 'race') {
    const kinds: Record<string, number> = {};
    for (let i = 0; i < Number(count); i++) {
      const outcome = await store.recordResult(resultFor(deviceId, modelId, keyId, `race-${i}`));
      kinds[outcome.kind] = (kinds[outcome.kind] ?? 0) + 1;
    }
    await store.close();
    process.stdout.write(`${JSON.stringify(kinds)}\n`);
    return;
  }
  throw new Error(`unknown mode ${mode}`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
