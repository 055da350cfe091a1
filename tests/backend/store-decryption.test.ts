/**
 * Ingest apart from decryption, in the store, on every engine: a result is accepted
 * pending with its ciphertext, claimed by decryption workers and completed once.
 */
import { describe, expect, it } from 'vitest';
import type { ClaimedResult, NewPendingResult, Store } from '../../src/store/types';
import { expectStoreError, pendingResult, seedStore, type TestEngine, testEngines } from './store-engines';

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));
const CLAIM = { limit: 10, claimTimeoutMs: 60_000, maxAttempts: 3 };

async function storeWithDevice(engine: TestEngine): Promise<{ store: Store; location: string }> {
  const location = await engine.location('decryption');
  const store = await seedStore(await engine.open(location));
  return { store, location };
}

/** The label a fake decryption gives a ciphertext: derived from its bytes, so a test can check it. */
const labelOf = (claim: ClaimedResult) => claim.ciphertext[0]! % 10;
const decryption = (claim: ClaimedResult) => ({ label: labelOf(claim), scores: Array.from(claim.ciphertext.subarray(0, 10)) });

describe.each(testEngines())('decryption queue on the $name store', (engine) => {
  it('accepts a result pending with its ciphertext, idempotently, and lists it without a label', async () => {
    const { store } = await storeWithDevice(engine);
    const first = await store.acceptResult(pendingResult('frame-1'));
    expect(first.kind).toBe('created');
    expect(first.result).toMatchObject({ id: 1, state: 'pending', label: null, scores: [], rangeFlag: null, decryptedAt: null, error: null });
    expect(first.result).not.toHaveProperty('ciphertext');
    expect(await store.acceptResult(pendingResult('frame-1'))).toEqual({ kind: 'replayed', result: first.result });
    expect((await store.acceptResult(pendingResult('frame-1', 'another body'))).kind).toBe('conflict');
    expect(await store.listResults({ state: 'pending' })).toEqual([first.result]);
    expect(await store.listResults({ state: 'decrypted' })).toEqual([]);
    await store.close();
  });

  it('claims the oldest pending results, never one under a live claim, and writes each decryption once', async () => {
    const { store } = await storeWithDevice(engine);
    for (let i = 0; i < 5; i++) await store.acceptResult(pendingResult(`frame-${i}`));
    const a = await store.claimResults({ ...CLAIM, worker: 'a', limit: 3 });
    expect(a.claimed.map((c) => [c.id, c.attempt])).toEqual([
      [1, 1],
      [2, 1],
      [3, 1],
    ]);
    expect(a.claimed[0]!.ciphertext).toEqual(pendingResult('frame-0').ciphertext);
    const b = await store.claimResults({ ...CLAIM, worker: 'b' });
    expect(b.claimed.map((c) => c.id)).toEqual([4, 5]);
    expect((await store.claimResults({ ...CLAIM, worker: 'c' })).claimed).toEqual([]);

    const done = await store.completeResult(1, 1, decryption(a.claimed[0]!));
    expect(done).toMatchObject({ id: 1, state: 'decrypted', label: labelOf(a.claimed[0]!), error: null });
    expect(Date.parse(done.decryptedAt!)).toBeGreaterThanOrEqual(Date.parse(done.receivedAt));
    // A second write is refused, whatever it says.
    await expectStoreError(store.completeResult(1, 1, decryption(a.claimed[0]!)), 'E_CONFLICT', /already decrypted; a result is written once/);
    await expectStoreError(store.completeResult(1, 1, { error: 'late' }), 'E_CONFLICT', /already decrypted/);
    const flagged = await store.completeResult(2, 1, { label: null, scores: [1e5], rangeFlag: 'out-of-range' });
    expect(flagged).toMatchObject({ state: 'decrypted', label: null, rangeFlag: 'out-of-range', scores: [1e5] });
    const failed = await store.completeResult(3, 1, { error: 'E_CIPHERTEXT: the result container is truncated' });
    expect(failed).toMatchObject({ state: 'failed', label: null, scores: [], error: 'E_CIPHERTEXT: the result container is truncated' });
    expect((await store.listResults()).map((r) => r.state)).toEqual(['decrypted', 'decrypted', 'failed', 'pending', 'pending']);
    await store.close();
  });

  it('takes a claim again once its worker is presumed dead; the dead claim can no longer complete it', async () => {
    const { store } = await storeWithDevice(engine);
    await store.acceptResult(pendingResult('orphan'));
    const dead = await store.claimResults({ ...CLAIM, worker: 'dead' });
    expect(dead.claimed.map((c) => c.attempt)).toEqual([1]);
    expect((await store.claimResults({ ...CLAIM, worker: 'b' })).claimed).toEqual([]);
    await sleep(5);
    const again = await store.claimResults({ ...CLAIM, worker: 'b', claimTimeoutMs: 1 });
    expect(again.claimed.map((c) => [c.id, c.attempt])).toEqual([[1, 2]]);
    await expectStoreError(store.completeResult(1, 1, decryption(dead.claimed[0]!)), 'E_CONFLICT', /claim 1 of result 1 expired; claim 2 holds it now/);
    const done = await store.completeResult(1, 2, decryption(again.claimed[0]!));
    expect(done).toMatchObject({ state: 'decrypted', label: labelOf(again.claimed[0]!) });
    expect((await store.claimResults({ ...CLAIM, worker: 'c', claimTimeoutMs: 0 })).claimed).toEqual([]);
    await store.close();
  });

  it('gives up on a result whose claims keep expiring: failed with the reason, not retried forever', async () => {
    const { store } = await storeWithDevice(engine);
    await store.acceptResult(pendingResult('poison'));
    await store.acceptResult(pendingResult('fine'));
    const options = { worker: 'w', limit: 1, claimTimeoutMs: 1, maxAttempts: 2 };
    expect((await store.claimResults(options)).claimed.map((c) => [c.id, c.attempt])).toEqual([[1, 1]]);
    await sleep(5);
    expect((await store.claimResults(options)).claimed.map((c) => [c.id, c.attempt])).toEqual([[1, 2]]);
    await sleep(5);
    const third = await store.claimResults(options);
    expect(third.abandoned).toMatchObject([{ id: 1, state: 'failed', error: expect.stringMatching(/^abandoned: claimed 2 times and never completed/) }]);
    expect(third.claimed.map((c) => [c.id, c.attempt])).toEqual([[2, 1]]);
    await expectStoreError(store.completeResult(1, 2, { label: 1, scores: [0, 1] }), 'E_CONFLICT', /already failed/);
    await store.close();
  });

  it('two claimers on separate connections never claim the same result, and every result is decrypted once', async () => {
    const { store, location } = await storeWithDevice(engine);
    const COUNT = 120;
    for (let i = 0; i < COUNT; i++) await store.acceptResult(pendingResult(`burst-${i}`));
    const claimers = await Promise.all([engine.open(location), engine.open(location)]);
    const claimedBy = new Map<number, string[]>();
    const work = async (claimer: Store, name: string) => {
      for (;;) {
        const { claimed } = await claimer.claimResults({ ...CLAIM, worker: name, limit: 4 });
        if (claimed.length === 0) return;
        for (const c of claimed) claimedBy.set(c.id, [...(claimedBy.get(c.id) ?? []), name]);
        await Promise.all(claimed.map((c) => claimer.completeResult(c.id, c.attempt, decryption(c))));
      }
    };
    await Promise.all([work(claimers[0]!, 'a'), work(claimers[1]!, 'b'), work(claimers[0]!, 'a2'), work(claimers[1]!, 'b2')]);
    expect(claimedBy.size).toBe(COUNT);
    expect([...claimedBy.values()].every((names) => names.length === 1)).toBe(true);
    const results = await store.listResults();
    expect(results.every((r) => r.state === 'decrypted')).toBe(true);
    expect(results.map((r) => r.label)).toEqual(results.map((_, i) => pendingResult(`burst-${i}`).ciphertext[0]! % 10));
    expect(new Set([...claimedBy.values()].map((names) => names[0])).size).toBeGreaterThan(1);
    await Promise.all([...claimers.map((c) => c.close()), store.close()]);
  });

  it('completes a batch of claims in one call: each result written once, a refused one leaves the others written', async () => {
    const { store, location } = await storeWithDevice(engine);
    for (let i = 0; i < 6; i++) await store.acceptResult(pendingResult(`batch-${i}`));
    const announced: number[][] = [];
    const watch = await store.watchResults({ onResults: (ids) => announced.push([...ids]) });
    const { claimed } = await store.claimResults({ ...CLAIM, worker: 'a', limit: 5 });
    expect(claimed.map((c) => c.id)).toEqual([1, 2, 3, 4, 5]);
    await store.completeResult(2, 1, { error: 'decided earlier' });
    const written = await store.completeResults([
      { id: 5, attempt: 1, outcome: decryption(claimed[4]!) },
      { id: 2, attempt: 1, outcome: decryption(claimed[1]!) },
      { id: 1, attempt: 1, outcome: decryption(claimed[0]!) },
      { id: 3, attempt: 2, outcome: decryption(claimed[2]!) },
      { id: 4, attempt: 1, outcome: { label: 10, scores: [] } },
      { id: 6, attempt: 1, outcome: { error: 'never claimed' } },
      { id: 99, attempt: 1, outcome: { error: 'x' } },
    ]);
    const codes = written.map((w) => ('code' in w ? (w as { code: string }).code : (w as { state: string }).state));
    expect(codes).toEqual(['decrypted', 'E_CONFLICT', 'decrypted', 'E_CONFLICT', 'E_INVALID', 'E_CONFLICT', 'E_NOT_FOUND']);
    expect(written[0]).toMatchObject({ id: 5, label: labelOf(claimed[4]!) });
    expect(written[3]).toMatchObject({ message: expect.stringMatching(/claim 2 of result 3 expired; claim 1 holds it now/) });
    const results = await store.listResults();
    expect(results.map((r) => r.state)).toEqual(['decrypted', 'failed', 'pending', 'pending', 'decrypted', 'pending']);
    await expect.poll(() => announced.flat().sort((a, b) => a - b)).toEqual([1, 2, 5]);
    // Two writers racing over the same claims: each result is written by one of them, once.
    const other = await engine.open(location);
    const rest = claimed.slice(2, 4).map((c) => ({ id: c.id, attempt: c.attempt, outcome: decryption(c) }));
    const [mine, theirs] = await Promise.all([store.completeResults(rest), other.completeResults([...rest].reverse())]);
    const winners = rest.map((_, i) => [mine[i], theirs[rest.length - 1 - i]].filter((w) => !('code' in (w as object))).length);
    expect(winners).toEqual([1, 1]);
    expect(await store.completeResults([])).toEqual([]);
    await expectStoreError(store.completeResults([{ id: 3, attempt: 1, outcome: { error: 'x' } }, { id: 3, attempt: 1, outcome: { error: 'x' } }]), 'E_INVALID', /named twice/);
    await expectStoreError(store.completeResults([{ id: 0, attempt: 1, outcome: { error: 'x' } }]), 'E_INVALID', /id/);
    await watch.close();
    await Promise.all([other.close(), store.close()]);
  });

  it('refuses bad input on every new method with E_INVALID or E_NOT_FOUND, and writes nothing', async () => {
    const { store } = await storeWithDevice(engine);
    await expectStoreError(store.acceptResult({ ...pendingResult('x'), ciphertext: new Uint8Array(0) }), 'E_INVALID', /ciphertext must not be empty/);
    await expectStoreError(store.acceptResult({ ...pendingResult('x'), ciphertext: 'AAAA' as unknown as Uint8Array }), 'E_INVALID', /ciphertext must be a Uint8Array/);
    await expectStoreError(store.acceptResult({ ...pendingResult('x'), keyId: 'k2' }), 'E_NOT_FOUND');
    await expectStoreError(store.acceptResult(null as unknown as NewPendingResult), 'E_INVALID');
    await expectStoreError(store.claimResults({ ...CLAIM, worker: '' }), 'E_INVALID', /worker/);
    await expectStoreError(store.claimResults({ ...CLAIM, worker: 'w', limit: 0 }), 'E_INVALID', /limit/);
    await expectStoreError(store.claimResults({ ...CLAIM, worker: 'w', claimTimeoutMs: -1 }), 'E_INVALID', /claimTimeoutMs/);
    await expectStoreError(store.claimResults({ ...CLAIM, worker: 'w', maxAttempts: 0 }), 'E_INVALID', /maxAttempts/);
    await expectStoreError(store.claimResults({ ...CLAIM, worker: 'w', extra: 1 } as unknown as Parameters<Store['claimResults']>[0]), 'E_INVALID', /unknown option 'extra'/);
    await expectStoreError(store.listResults({ state: 'done' as 'pending' }), 'E_INVALID', /state must be one of/);
    expect(await store.countResults()).toBe(0);

    await store.acceptResult(pendingResult('x'));
    const [claim] = (await store.claimResults({ ...CLAIM, worker: 'w' })).claimed;
    await expectStoreError(store.completeResult(0, 1, { error: 'x' }), 'E_INVALID', /id/);
    await expectStoreError(store.completeResult(claim!.id, 0, { error: 'x' }), 'E_INVALID', /attempt/);
    await expectStoreError(store.completeResult(99, 1, { error: 'x' }), 'E_NOT_FOUND', /no result 99/);
    await expectStoreError(store.completeResult(claim!.id, 1, {} as never), 'E_INVALID', /needs a label/);
    await expectStoreError(store.completeResult(claim!.id, 1, { error: ' ' }), 'E_INVALID', /non-empty/);
    await expectStoreError(store.completeResult(claim!.id, 1, { error: 'x', label: 1 } as never), 'E_INVALID', /nothing else/);
    await expectStoreError(store.completeResult(claim!.id, 1, { label: 10, scores: [] }), 'E_INVALID', /out of range for a model with 10 outputs/);
    await expectStoreError(store.completeResult(claim!.id, 1, { label: null, scores: [1] }), 'E_INVALID', /range flag/);
    await expectStoreError(store.completeResult(claim!.id, 1, { label: 1, scores: [Number.NaN] }), 'E_INVALID', /finite/);
    expect((await store.listResults())[0]).toMatchObject({ state: 'pending' });
    // A long error is kept cut to its limit, not refused: a failure is always recorded.
    expect((await store.completeResult(claim!.id, 1, { error: 'e'.repeat(5000) })).error).toHaveLength(2000);
    await store.close();
  });
});
