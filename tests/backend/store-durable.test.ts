/**
 * SQLite commits durably apart from the event loop: no store call resolves before an
 * fsync begun after its commit (and every commit it could see) has completed, commits
 * waiting for one fsync share the next, and a failed fsync fails the calls it held.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, openSqliteStore, openSqliteStoreWithMigrations } from '../../src/store/sqlite';
import type { Store } from '../../src/store/types';
import { expectStoreError, pendingResult, seedStore } from './store-engines';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

/** An fsync the test completes or fails by hand. */
class HeldSync {
  readonly calls: Array<{ done: () => void; fail: (e: Error) => void }> = [];
  hold = false;
  readonly sync = (): Promise<void> =>
    this.hold ? new Promise<void>((done, fail) => this.calls.push({ done, fail })) : Promise.resolve();
}

/** Whether `p` has settled once pending callbacks ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setTimeout(r, 20));
  return done;
}

describe('SQLite: durable before a call resolves, the fsync off the event loop', () => {
  let dir: string;
  let counter = 0;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sealed-edge-durable-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function open(held: HeldSync): Promise<Store> {
    const store = await seedStore(await openSqliteStoreWithMigrations(join(dir, `store-${++counter}.sqlite`), MIGRATIONS, held.sync));
    return store;
  }

  it('a write, and a read that sees it, resolve only when the fsync after the commit completes', async () => {
    const held = new HeldSync();
    const store = await open(held);
    held.hold = true;
    const write = store.addDevice({ id: 'dev-2', name: 'Door', tokenSha256: sha('door') });
    const read = store.getDevice('dev-2');
    expect(await settled(write)).toBe(false);
    expect(await settled(read)).toBe(false);
    expect(held.calls).toHaveLength(1);
    held.calls[0]!.done();
    expect((await write).id).toBe('dev-2');
    expect((await read)?.name).toBe('Door');
    held.hold = false;
    await store.close();
  });

  it('ingested results committed during one fsync share the next: three commits, two fsyncs', async () => {
    const held = new HeldSync();
    const store = await open(held);
    held.hold = true;
    const first = store.acceptResult(pendingResult('frame-1'));
    await new Promise((r) => setTimeout(r, 10));
    expect(held.calls).toHaveLength(1);
    // Committed while the first fsync runs: they wait for one more.
    const later = [store.acceptResult(pendingResult('frame-2')), store.acceptResult(pendingResult('frame-3'))];
    await new Promise((r) => setTimeout(r, 10));
    expect(await settled(Promise.any(later))).toBe(false);
    expect(held.calls).toHaveLength(1);
    held.calls[0]!.done();
    expect((await first).kind).toBe('created');
    await new Promise((r) => setTimeout(r, 10));
    expect(held.calls).toHaveLength(2);
    expect(await settled(Promise.any(later))).toBe(false);
    held.calls[1]!.done();
    expect((await Promise.all(later)).map((o) => o.kind)).toEqual(['created', 'created']);
    held.hold = false;
    expect((await store.listResults()).map((r) => r.idempotencyKey).sort()).toEqual(['frame-1', 'frame-2', 'frame-3']);
    await store.close();
  });

  it('a failed fsync fails the calls it held with a clear error; the commit stays and the next call works', async () => {
    const held = new HeldSync();
    const store = await open(held);
    held.hold = true;
    const write = store.addDevice({ id: 'dev-3', name: 'Gate', tokenSha256: sha('gate') });
    const result = store.acceptResult(pendingResult('frame-9'));
    await new Promise((r) => setTimeout(r, 10));
    held.calls[0]!.fail(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
    await expectStoreError(write, 'E_DB');
    await expect(write).rejects.toThrow(/committed, but the write-ahead log could not be made durable: EIO/);
    await new Promise((r) => setTimeout(r, 10));
    held.calls[1]?.done();
    held.hold = false;
    expect((await result).kind).toBe('created');
    expect((await store.getDevice('dev-3'))?.name).toBe('Gate');
    await store.close();
  });

  it('a store on a file fsyncs its write-ahead log and reads back what it wrote after reopening', async () => {
    const path = join(dir, 'real.sqlite');
    const store = await openSqliteStore(path);
    await store.addDevice({ id: 'dev-4', name: 'Lobby', tokenSha256: sha('lobby') });
    await store.close();
    const again = await openSqliteStore(path);
    expect((await again.getDevice('dev-4'))?.name).toBe('Lobby');
    await again.close();
  });
});
