import type { ServerResponse } from 'node:http';
import type { ResultRecord, ResultWatch, Store } from '../store/types';

/** How often an idle stream gets a comment line, so that load balancers and proxies keep it open. */
export const HEARTBEAT_MS = 15_000;

/**
 * The operators' live streams of one instance (server-sent events). Every result written
 * by any instance sharing the store is announced: the store's feed (PostgreSQL
 * LISTEN/NOTIFY; SQLite, the writes of this process) gives the ids, read back here in
 * batches and sent in the order the feed gave them. When announcements may have been
 * missed (the feed was lost and came back, or reading a batch failed because the
 * database was away), every stream gets a `resync` event: the client reads
 * /api/v1/results again to fill the gap.
 */
export class OperatorStreams {
  private readonly streams = new Set<ServerResponse>();
  private watch: ResultWatch | null = null;
  private pending: number[] = [];
  private flushing: Promise<void> | null = null;
  private heartbeat: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Store,
    private readonly present: (result: ResultRecord) => Record<string, unknown>,
    private readonly log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
  ) {}

  /** Opens the store's feed (a StoreError when it cannot). */
  async start(): Promise<void> {
    if (this.watch !== null) return;
    this.watch = await this.store.watchResults({
      onResults: (ids) => {
        if (this.streams.size === 0) return;
        this.pending.push(...ids);
        this.flushing ??= this.flush().finally(() => (this.flushing = null));
      },
      onLost: (error) => this.log(`sealed-edge streams: ${error.message}; reconnecting (operators' streams will be told to resync)`),
      onResumed: () => {
        this.log('sealed-edge streams: the feed of results is back');
        this.resync('the feed of results was interrupted');
      },
    });
    this.heartbeat = setInterval(() => {
      for (const stream of this.streams) stream.write(': heartbeat\n\n');
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  add(res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(': sealed-edge results\n\n');
    this.streams.add(res);
    res.on('close', () => this.streams.delete(res));
  }

  get size(): number {
    return this.streams.size;
  }

  /** Ends every stream and the feed. */
  async close(): Promise<void> {
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.heartbeat = null;
    await this.watch?.close();
    this.watch = null;
    await this.flushing;
    for (const stream of this.streams) stream.end();
    this.streams.clear();
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, 500);
      let results: ResultRecord[];
      try {
        results = await this.store.getResults(batch);
      } catch (error) {
        this.log(`sealed-edge streams: ${batch.length} result(s) written but not read back for the streams: ${(error as Error).message}`);
        this.resync('results were written that this instance could not read back');
        continue;
      }
      const byId = new Map(results.map((r) => [r.id, r]));
      for (const id of batch) {
        const result = byId.get(id);
        if (result !== undefined) this.send(`id: ${result.id}\nevent: result\ndata: ${JSON.stringify(this.present(result))}\n\n`);
      }
    }
  }

  private resync(reason: string): void {
    this.send(`event: resync\ndata: ${JSON.stringify({ reason })}\n\n`);
  }

  private send(event: string): void {
    for (const stream of this.streams) stream.write(event);
  }
}
