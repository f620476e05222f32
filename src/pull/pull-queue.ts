// The limit on pulls running at once (--max-concurrent-pulls). Pulls beyond
// it wait in arrival order and are told their place whenever it changes.

interface Waiter {
  admit: () => void;
  tell: (position: number, running: number) => void;
}

export class PullQueue {
  private running = 0;
  private readonly waiting: Waiter[] = [];

  constructor(private readonly limit: number) {}

  /** Resolves with a release once the pull may run; `tell` hears its place while it waits. */
  async admit(signal: AbortSignal, tell: Waiter["tell"]): Promise<() => void> {
    signal.throwIfAborted();
    if (this.running < this.limit && this.waiting.length === 0) return this.take();
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        admit: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        tell,
      };
      const onAbort = () => {
        this.waiting.splice(this.waiting.indexOf(waiter), 1);
        this.tellPositions();
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(waiter);
      tell(this.waiting.length, this.running);
    });
    return this.take();
  }

  private take(): () => void {
    this.running += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running -= 1;
      const next = this.waiting.shift();
      if (next) {
        next.admit();
        this.tellPositions();
      }
    };
  }

  private tellPositions(): void {
    this.waiting.forEach((waiter, i) => waiter.tell(i + 1, this.running));
  }
}
