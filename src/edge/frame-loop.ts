/**
 * The kiosk's stream loop (camera, demo stream): takes frames from `next` and processes
 * them, keeping up to `concurrency()` frames in flight — read again before every new
 * frame, since the HE pool asks for one frame per worker while it runs one frame per
 * worker and for one otherwise (HePool.concurrency) — until `next` has no more or
 * `running()` turns false. Frames are taken one at a time, in order. Frames in flight
 * always complete, never dropped; the first error stops taking new frames and is thrown
 * once the frames in flight have settled. No DOM: Node tests run the same loop.
 */
export interface FrameLoop<T> {
  next: () => Promise<T | undefined>;
  process: (frame: T) => Promise<unknown>;
  concurrency: () => number;
  running: () => boolean;
}

export async function runFrameLoop<T>(loop: FrameLoop<T>): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  while (failure === undefined && loop.running()) {
    if (inFlight.size >= Math.max(1, loop.concurrency())) {
      await Promise.race(inFlight);
      continue;
    }
    const frame = await loop.next();
    if (frame === undefined || failure !== undefined) break;
    const work: Promise<void> = loop.process(frame).then(
      () => void inFlight.delete(work),
      (error: unknown) => {
        inFlight.delete(work);
        failure ??= { error };
      },
    );
    inFlight.add(work);
  }
  await Promise.all(inFlight);
  if (failure !== undefined) throw failure.error;
}
