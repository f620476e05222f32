// One change (pull, drop, unregister) per model at a time, within this
// process (an async mutex) and across processes sharing the cache root (a
// lock directory under <cache-root>/.locks/, kept fresh while held and
// considered stale a few seconds after its holder died). Beside each lock,
// a small owner record (host, pid, the lock dir's inode) lets a restart take
// over at once a lock whose holder is provably dead instead of waiting for
// it to go stale. A lock takes a directory and a record, a block each: on a
// disk with no block left, a change that frees space (DropCache, eviction,
// UnregisterModel) spends a small reserve file kept beside the locks for it,
// renewed once there is room again.
import { mkdir, readFile, readlink, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import lockfile from "proper-lockfile";
import { KeyedLock } from "../concurrency/keyed-lock.js";
import { ModelCacheError, errorCode } from "../errors.js";
import type { CacheLayout } from "./layout.js";

/**
 * A lock not refreshed for this long is taken over. Refreshes go through
 * libuv's thread pool, where fsyncs of large files can hold them up for
 * seconds: well past that, so that a busy holder never loses its lock.
 */
const STALE_MS = 10_000;
const REFRESH_MS = 1000;
const RETRY_MS = 200;
/** room for a space-freeing change's lock (a directory and a record) and the renames and records of its removal */
const RESERVE_BYTES = 1024 * 1024;

/** Where the locks say why they wait or take over (the server's logger). */
export interface LockLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

/** What a change does to the disk: one that frees space may spend the reserve to take its lock on a full disk. */
export interface LockPurpose {
  freesSpace?: boolean;
  /** gives up at once when a live process of this host holds the lock (it refreshes it: waiting for staleness is vain) */
  notForLive?: boolean;
}

interface LockOwner {
  host: string;
  /** the pid namespace (Linux): containers sharing a host name may each have their own pids */
  pids: string;
  pid: number;
  /** the inode of the lock dir it holds: a record left by an earlier holder does not describe a newer lock */
  ino: number;
}

export class ModelLocks {
  private readonly local = new KeyedLock();
  private readonly waitMs: number;
  private readonly log: LockLog | undefined;

  constructor(
    private readonly layout: CacheLayout,
    options: {
      /** how long to wait for another process to let go before giving up */
      waitMs?: number;
      log?: LockLog;
    } = {},
  ) {
    this.waitMs = options.waitMs ?? 30_000;
    this.log = options.log;
  }

  /** Holds the model's lock until the returned release is called. */
  async acquire(name: string, signal: AbortSignal | undefined, waitMs = this.waitMs, purpose: LockPurpose = {}): Promise<() => Promise<void>> {
    return this.holdFile(name, signal, waitMs, await this.local.acquire(name, signal), purpose);
  }

  /**
   * Writes the reserve a space-freeing change spends when the disk has no
   * block left for its lock, unless it is there. Without room for it, it is
   * written at a later release: the server works without it.
   */
  async renewReserve(): Promise<void> {
    const reserve = this.reservePath();
    try {
      if ((await stat(reserve)).size === RESERVE_BYTES) return;
    } catch (err) {
      if (errorCode(err) !== "ENOENT") throw err;
    }
    await mkdir(dirname(reserve), { recursive: true });
    const partial = `${reserve}.partial`;
    try {
      // zeros written, not a hole: the blocks are the disk's, freed when it is removed
      await writeFile(partial, Buffer.alloc(RESERVE_BYTES));
      await rename(partial, reserve);
    } catch (err) {
      const code = errorCode(err);
      if (code !== "ENOSPC" && code !== "EDQUOT") throw err;
      // no room for it now: what was written of it goes, it is tried again at the next release
      await rm(partial, { force: true });
    }
  }

  private reservePath(): string {
    return join(this.layout.root, ".locks", "reserve");
  }

  private async holdFile(name: string, signal: AbortSignal | undefined, waitMs: number, releaseLocal: () => void, purpose: LockPurpose): Promise<() => Promise<void>> {
    try {
      const releaseFile = await this.acquireFile(name, signal, waitMs, purpose);
      return async () => {
        try {
          await releaseFile();
        } catch (err) {
          // another process judged us dead and took the lock over: nothing of ours is left to remove
          if (errorCode(err) !== "ENOTACQUIRED") throw err;
        } finally {
          releaseLocal();
        }
        // a change that freed space left room for the reserve it may have spent
        if (purpose.freesSpace) await this.renewReserve();
      };
    } catch (err) {
      releaseLocal();
      throw err;
    }
  }

  /** Runs `work` under the model's lock. */
  async run<T>(name: string, signal: AbortSignal | undefined, work: () => Promise<T>, purpose: LockPurpose = {}): Promise<T> {
    const release = await this.acquire(name, signal, this.waitMs, purpose);
    try {
      return await work();
    } finally {
      await release();
    }
  }

  /**
   * The lock if nobody holds it: undefined at once when a caller of this
   * process holds or awaits it (a pull holding it may itself be waiting for
   * something the caller holds) or a live process of this host holds it,
   * else waiting at most `waitMs` for another process (by default, long
   * enough for a dead holder's lock to go stale).
   */
  async tryAcquire(name: string, waitMs = STALE_MS + 1000, purpose: LockPurpose = {}): Promise<(() => Promise<void>) | undefined> {
    const local = this.local.tryAcquire(name);
    if (!local) return undefined;
    try {
      return await this.holdFile(name, undefined, waitMs, await local, { ...purpose, notForLive: true });
    } catch (err) {
      if (err instanceof ModelCacheError && err.kind === "unavailable") return undefined;
      throw err;
    }
  }

  /**
   * The lock between processes at once if no live process holds it (a dead
   * holder's is taken over), else undefined: never waits. For locks held for
   * a process's life (an ingest area's), so not counted by users() or idle().
   */
  async tryHold(name: string): Promise<(() => Promise<void>) | undefined> {
    try {
      const release = await this.acquireFile(name, undefined, 0, {});
      return async () => {
        try {
          await release();
        } catch (err) {
          // another process judged us dead and took the lock over: nothing of ours is left to remove
          if (errorCode(err) !== "ENOTACQUIRED") throw err;
        }
      };
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

  private async acquireFile(name: string, signal: AbortSignal | undefined, waitMs: number, purpose: LockPurpose): Promise<() => Promise<void>> {
    const dir = join(this.layout.root, ".locks");
    await mkdir(dir, { recursive: true });
    let spent = false;
    const lockPath = join(dir, `${name}.lock`);
    const ownerPath = join(dir, `${name}.owner`);
    const giveUpAt = Date.now() + waitMs;
    let toldWhy = false;
    for (;;) {
      signal?.throwIfAborted();
      try {
        const release = await this.lockFile(dir, name, lockPath);
        let owner: LockOwner;
        try {
          owner = { host: hostname(), pids: await pidNamespace(), pid: process.pid, ino: (await stat(lockPath)).ino };
          // the record goes beside the lock dir, not in it: a write inside would
          // change the dir's mtime, which proper-lockfile reads as a lock taken over
          await writeFile(ownerPath, JSON.stringify(owner));
        } catch (err) {
          await release();
          throw err;
        }
        return async () => {
          // a process that judged us dead may hold the lock now, with its own record
          if (await this.ownedBy(ownerPath, owner)) await rm(ownerPath, { force: true });
          await release();
        };
      } catch (err) {
        const code = errorCode(err);
        if ((code === "ENOSPC" || code === "EDQUOT") && purpose.freesSpace && !spent) {
          spent = true;
          if (await this.spendReserve(name)) continue;
        }
        if (code !== "ELOCKED") throw err;
        const holder = await this.holderOf(lockPath, ownerPath);
        if (holder.dead) {
          // proper-lockfile removes a stale lock itself, with the same care
          // as when its holder stopped refreshing it: age it, then lock again
          this.log?.info({ model: name, lock: lockPath, ownerPid: holder.dead.pid }, "took over a model lock whose holder is gone");
          await utimes(lockPath, 0, 0).catch((e: unknown) => {
            // the holder's lock went away meanwhile: simply lock again
            if (errorCode(e) !== "ENOENT") throw e;
          });
          continue;
        }
        if (purpose.notForLive && holder.live) throw lockedBy(name, lockPath);
        // a caller that does not wait is not told about waiting
        if (!toldWhy && waitMs > 0) {
          toldWhy = true;
          this.log?.info({ model: name, lock: lockPath, waitMs }, `waiting for model lock: ${holder.why}`);
        }
        if (Date.now() >= giveUpAt) throw lockedBy(name, lockPath);
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  /** Removes the reserve so that a space-freeing change can take its lock; false when there was none. */
  private async spendReserve(name: string): Promise<boolean> {
    const reserve = this.reservePath();
    try {
      await rm(reserve);
    } catch (err) {
      // spent already (by another change or server) or never written: nothing to free
      if (errorCode(err) === "ENOENT") return false;
      throw err;
    }
    this.log?.warn({ model: name, reserve }, "the disk is full: spent the lock reserve to take the lock of a change that frees space");
    return true;
  }

  private lockFile(dir: string, name: string, lockPath: string): Promise<() => Promise<void>> {
    // proper-lockfile keeps its held locks in a table keyed by this path:
    // one key per model, or two models' locks would overwrite each other
    return lockfile.lock(join(dir, name), {
      lockfilePath: lockPath,
      realpath: false,
      stale: STALE_MS,
      update: REFRESH_MS,
      // a lock found taken over means another process decided we died; the
      // change under way still ends in one rename, so carry on rather than crash
      onCompromised: () => undefined,
    });
  }

  private async ownedBy(ownerPath: string, owner: LockOwner): Promise<boolean> {
    try {
      const found = JSON.parse(await readFile(ownerPath, "utf8")) as LockOwner;
      return found.pid === owner.pid && found.host === owner.host && found.pids === owner.pids && found.ino === owner.ino;
    } catch (err) {
      // gone already, or not a record we wrote whole: not ours to remove
      if (errorCode(err) === "ENOENT" || err instanceof SyntaxError) return false;
      throw err;
    }
  }

  /** Whether the lock's holder is provably dead (same host, pid gone), else why we must wait. */
  private async holderOf(lockPath: string, ownerPath: string): Promise<{ dead: LockOwner; why?: undefined; live?: undefined } | { dead?: undefined; why: string; live?: boolean }> {
    const staleWait = `it is taken over once it has not been refreshed for ${STALE_MS / 1000} s`;
    let owner: LockOwner;
    let ino: number;
    try {
      owner = JSON.parse(await readFile(ownerPath, "utf8")) as LockOwner;
      ino = (await stat(lockPath)).ino;
    } catch {
      // no record (its holder may be between taking the lock and writing it), or the lock just went
      return { why: `its holder left no owner record; ${staleWait}` };
    }
    if (owner.ino !== ino) return { why: `its owner record describes an earlier lock; ${staleWait}` };
    if (owner.host !== hostname() || owner.pids !== (await pidNamespace())) {
      return { why: `it is held by pid ${owner.pid} on host '${owner.host}' (pid namespace ${owner.pids}), whose liveness cannot be checked from here; ${staleWait}` };
    }
    if (owner.pid === process.pid || processAlive(owner.pid)) return { why: `it is held by live process ${owner.pid} on this host`, live: true };
    return { dead: owner };
  }
}

function lockedBy(name: string, lockPath: string): ModelCacheError {
  return new ModelCacheError("unavailable", `model '${name}' is being changed by another modelcache process sharing the cache root (lock '${lockPath}'); try again when it is done`);
}

/** This process's pid namespace on Linux ("pid:[4026531836]"), or "" where there is none to read. */
async function pidNamespace(): Promise<string> {
  try {
    return await readlink("/proc/self/ns/pid");
  } catch (err) {
    // not Linux: pids are the host's
    if (errorCode(err) === "ENOENT") return "";
    throw err;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user
    return errorCode(err) !== "ESRCH";
  }
}
