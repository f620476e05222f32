// The watch on a transfer from a peer: it fails the transfer once the peer
// has sent nothing for the stall limit while this node was ready to take
// bytes. Time the node spends waiting for its own --max-bytes-per-second does
// not count: a transfer the node's own cap holds back sends nothing because
// the node does not read it, not because the peer stalled.
import type { RateCap } from "../sources/hub/bandwidth.js";

export class StallWatch {
  private readonly stop = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  /** takes of the node's own cap under way: no watch meanwhile */
  private held = 0;
  private closed = false;

  constructor(
    private readonly ms: number,
    private readonly stalled: () => Error,
  ) {
    this.arm();
  }

  /** Aborted, with the stalled() error, once the peer has stalled. */
  get signal(): AbortSignal {
    return this.stop.signal;
  }

  /** Bytes arrived: the stall limit counts from now. */
  heard(): void {
    this.timer?.refresh();
  }

  /** `cap` as the transfer waits on it: the watch rests while a take waits, and counts again from the moment none does. */
  resting(cap: RateCap): RateCap {
    return {
      take: async (bytes, signal) => {
        if (this.held++ === 0) this.disarm();
        try {
          await cap.take(bytes, signal);
        } finally {
          if (--this.held === 0 && !this.closed) this.arm();
        }
      },
    };
  }

  close(): void {
    this.closed = true;
    this.disarm();
  }

  private arm(): void {
    this.timer = setTimeout(() => this.stop.abort(this.stalled()), this.ms);
    this.timer.unref();
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
