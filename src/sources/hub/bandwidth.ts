// --max-bytes-per-second: one token bucket shared by every download of the
// server, refilled continuously, starting empty and holding at most a
// quarter second's worth, so the cap holds from the first byte.
import { setTimeout as sleep } from "node:timers/promises";

/** What a download waits on before it takes each chunk: the server's cap, or a wrapper of it. */
export interface RateCap {
  /** Resolves once `bytes` may be passed on. */
  take(bytes: number, signal: AbortSignal): Promise<void>;
}

export class Bandwidth implements RateCap {
  private tokens = 0;
  private last = performance.now();
  private queue: Promise<void> = Promise.resolve();
  private readonly burst: number;
  /** every byte the cap has let through, of any download (hub, S3, OCI): what shows they share it */
  passedBytes = 0;

  constructor(private readonly bytesPerSecond: number) {
    this.burst = bytesPerSecond / 4;
  }

  /** Resolves once `bytes` may be passed on; callers are served in turn. */
  take(bytes: number, signal: AbortSignal): Promise<void> {
    const turn = this.queue.then(async () => {
      const needed = Math.min(bytes, this.burst);
      for (;;) {
        const now = performance.now();
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
        this.last = now;
        if (this.tokens >= needed) {
          this.tokens -= bytes;
          this.passedBytes += bytes;
          return;
        }
        await sleep(Math.ceil(((needed - this.tokens) / this.bytesPerSecond) * 1000), undefined, { signal });
      }
    });
    this.queue = turn.catch(() => undefined);
    return turn;
  }
}
