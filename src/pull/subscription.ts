// One client's view of a pull job. Lifecycle events queue up and are never
// dropped (there are at most two per file); progress is coalesced: a newer
// file_progress for a file replaces one the client has not read yet, so a
// slow reader gets the latest figures, not an ever-growing backlog.
import type { PullEvent } from "./pull-event.js";

export class Subscription {
  private readonly queue: PullEvent[] = [];
  private wake: (() => void) | undefined;
  private ended: { error?: unknown } | undefined;

  push(event: PullEvent): void {
    if (this.ended) return;
    if (event.type === "file_progress" || event.type === "queued") {
      const waiting = this.queue.findIndex((e) => e.type === event.type && (e.type !== "file_progress" || (event.type === "file_progress" && e.path === event.path)));
      if (waiting >= 0) {
        this.queue[waiting] = event;
        return;
      }
    }
    this.queue.push(event);
    this.notify();
  }

  /** Ends the stream after the queued events: cleanly, or with `error`. */
  end(error?: unknown): void {
    if (this.ended) return;
    this.ended = { error };
    this.notify();
  }

  /** How many events wait to be read: bounded by the number of files, whatever the reader's speed. */
  get backlog(): number {
    return this.queue.length;
  }

  async *events(signal: AbortSignal): AsyncGenerator<PullEvent> {
    for (;;) {
      const event = this.queue.shift();
      if (event) {
        yield event;
        continue;
      }
      if (this.ended) {
        if (this.ended.error !== undefined) throw this.ended.error;
        return;
      }
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const onAbort = () => resolve();
        signal.addEventListener("abort", onAbort, { once: true });
        this.wake = () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private notify(): void {
    this.wake?.();
  }
}
