// --max-bytes-per-second: one token bucket shared by every download of the
// server, refilled continuously, holding at most one second's worth.
import { setTimeout as sleep } from "node:timers/promises";

export class Bandwidth {
  private tokens: number;
  private last = performance.now();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly bytesPerSecond: number) {
    this.tokens = bytesPerSecond;
  }

  /** Resolves once `bytes` may be passed on; callers are served in turn. */
  take(bytes: number, signal: AbortSignal): Promise<void> {
    const turn = this.queue.then(async () => {
      for (;;) {
        const now = performance.now();
        this.tokens = Math.min(this.bytesPerSecond, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
        this.last = now;
        if (this.tokens >= Math.min(bytes, this.bytesPerSecond)) {
          this.tokens -= bytes;
          return;
        }
        await sleep(Math.ceil(((Math.min(bytes, this.bytesPerSecond) - this.tokens) / this.bytesPerSecond) * 1000), undefined, { signal });
      }
    });
    this.queue = turn.catch(() => undefined);
    return turn;
  }
}
