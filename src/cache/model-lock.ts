// One change (pull, drop, unregister) per model at a time, within this
// process (an async mutex) and across processes sharing the cache root (a
// lock directory under <cache-root>/.locks/, kept fresh while held and
// considered stale a few seconds after its holder died).
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import lockfile from "proper-lockfile";
import { KeyedLock } from "../concurrency/keyed-lock.js";
import { ModelCacheError, errorCode } from "../errors.js";
import type { CacheLayout } from "./layout.js";

const STALE_MS = 3000;
const RETRY_MS = 200;

export class ModelLocks {
  private readonly local = new KeyedLock();

  constructor(
    private readonly layout: CacheLayout,
    /** how long to wait for another process to let go before giving up */
    private readonly waitMs = 30_000,
  ) {}

  /** Holds the model's lock until the returned release is called. */
  async acquire(name: string, signal: AbortSignal | undefined, waitMs = this.waitMs): Promise<() => Promise<void>> {
    const releaseLocal = await this.local.acquire(name, signal);
    try {
      const releaseFile = await this.acquireFile(name, signal, waitMs);
      return async () => {
        await releaseFile().catch(() => undefined);
        releaseLocal();
      };
    } catch (err) {
      releaseLocal();
      throw err;
    }
  }

  /** Runs `work` under the model's lock. */
  async run<T>(name: string, signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    const release = await this.acquire(name, signal);
    try {
      return await work();
    } finally {
      await release();
    }
  }

  /** The lock if no other process holds it (waiting at most for a dead holder's lock to go stale), else undefined. */
  async tryAcquire(name: string): Promise<(() => Promise<void>) | undefined> {
    try {
      return await this.acquire(name, undefined, STALE_MS + 1000);
    } catch (err) {
      if (err instanceof ModelCacheError && err.kind === "unavailable") return undefined;
      throw err;
    }
  }

  /** How many callers of this process hold or await the model's lock. */
  users(name: string): number {
    return this.local.users(name);
  }

  idle(): Promise<void> {
    return this.local.idle();
  }

  private async acquireFile(name: string, signal: AbortSignal | undefined, waitMs: number): Promise<() => Promise<void>> {
    const dir = join(this.layout.root, ".locks");
    await mkdir(dir, { recursive: true });
    const lockPath = join(dir, `${name}.lock`);
    const giveUpAt = Date.now() + waitMs;
    for (;;) {
      signal?.throwIfAborted();
      try {
        // proper-lockfile keeps its held locks in a table keyed by this path:
        // one key per model, or two models' locks would overwrite each other
        return await lockfile.lock(join(dir, name), {
          lockfilePath: lockPath,
          realpath: false,
          stale: STALE_MS,
          update: STALE_MS / 3,
          // a lock found taken over means another process decided we died; the
          // change under way still ends in one rename, so carry on rather than crash
          onCompromised: () => undefined,
        });
      } catch (err) {
        if (errorCode(err) !== "ELOCKED") throw err;
        if (Date.now() >= giveUpAt) {
          throw new ModelCacheError(
            "unavailable",
            `model '${name}' is being changed by another modelcache process sharing the cache root (lock '${lockPath}'); try again when it is done`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }
}
