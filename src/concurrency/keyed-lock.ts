// One async-mutex per key, created on demand and forgotten when idle, so a
// lock table never grows with the number of names ever seen.
import { Mutex } from "async-mutex";

export class KeyedLock {
  private readonly mutexes = new Map<string, { mutex: Mutex; users: number }>();
  private idleWaiters: (() => void)[] = [];

  /**
   * Takes the lock for `key` and returns its release. Waiting ends early with
   * the signal's reason when the signal aborts; the lock is then never taken.
   */
  async acquire(key: string, signal: AbortSignal | undefined): Promise<() => void> {
    let entry = this.mutexes.get(key);
    if (!entry) {
      entry = { mutex: new Mutex(), users: 0 };
      this.mutexes.set(key, entry);
    }
    entry.users += 1;
    const held = entry;
    const forget = () => {
      held.users -= 1;
      if (held.users === 0) this.mutexes.delete(key);
      if (this.mutexes.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    };
    const acquiring = held.mutex.acquire();
    try {
      const release = await untilAborted(acquiring, signal);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        release();
        forget();
      };
    } catch (err) {
      void acquiring.then((release) => {
        release();
        forget();
      });
      throw err;
    }
  }

  /** Takes the lock for `key` only when nobody holds or awaits it; undefined otherwise, without waiting. */
  tryAcquire(key: string): Promise<() => void> | undefined {
    // acquire counts its caller before its first await: nobody can come between this check and that count
    if (this.users(key) > 0) return undefined;
    return this.acquire(key, undefined);
  }

  /** How many callers hold or await the lock for `key`. */
  users(key: string): number {
    return this.mutexes.get(key)?.users ?? 0;
  }

  /** Resolves once no key is held or awaited. */
  idle(): Promise<void> {
    if (this.mutexes.size === 0) return Promise.resolve();
    return new Promise((wake) => this.idleWaiters.push(wake));
  }

  /** Runs `work` while holding the lock for `key`. */
  async run<T>(key: string, signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    const release = await this.acquire(key, signal);
    try {
      return await work();
    } finally {
      release();
    }
  }
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
