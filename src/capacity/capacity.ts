// Capacity: keeps the cache within --cache-max-bytes and the filesystem above
// --min-free-bytes without an operator. A pull asks before it fetches
// anything, telling the bytes it will add (content the store lacks); when
// they do not fit, installs are evicted least recently used first (never one
// pinned, leased, being pulled, or the model being pulled) until they do. If
// even every evictable install would not make room, the pull is refused with
// RESOURCE_EXHAUSTED and nothing is evicted. Admissions are taken one at a
// time and each admitted pull's bytes stay reserved until it ends, so pulls
// running together cannot over-commit the room one of them was given.
import { statfs } from "node:fs/promises";
import { rm } from "node:fs/promises";
import { Mutex } from "async-mutex";
import type { Logger } from "pino";
import { parkForRemoval } from "../cache/remove-install.js";
import { ModelCacheError, filesystemError } from "../errors.js";
import { type CachedModel, cacheBytes } from "../lifecycle/describe-cache.js";
import { recordNoInstall } from "../registry/record-install.js";
import type { Runtime } from "../runtime.js";

export type EvictionReason = "quota" | "min_free";

/** Told of each eviction (the server's metrics). */
export interface EvictionRecorder {
  evicted(model: string, reason: EvictionReason, freedBytes: number): void;
}

export interface CapacitySettings {
  /** --cache-max-bytes; 0: no quota */
  maxBytes: number;
  /** --min-free-bytes: the free space a pull must leave on the cache root's filesystem */
  minFreeBytes: number;
}

export const DEFAULT_MIN_FREE_BYTES = 2 ** 30;

/** Bytes a pull holds while it runs; release when it ends, however it ends. */
export type Reservation = () => void;

/** How long eviction waits for a victim's lock before passing it over: a held lock means it is in use. */
const VICTIM_LOCK_WAIT_MS = 1000;

export class Capacity {
  private readonly admissions = new Mutex();
  private readonly reserved = new Map<symbol, number>();

  constructor(
    readonly settings: CapacitySettings,
    private readonly runtime: () => Runtime,
    private readonly logger: Logger,
    private readonly recorders: EvictionRecorder[] = [],
  ) {}

  /** Makes room for `name`'s pull to add `addBytes`, evicting when needed; refuses when no eviction could. */
  admit(name: string, addBytes: number, signal: AbortSignal): Promise<Reservation> {
    return this.admissions.runExclusive(async () => {
      await this.makeRoom(name, addBytes, signal);
      const key = Symbol(name);
      this.reserved.set(key, addBytes);
      return () => void this.reserved.delete(key);
    });
  }

  /** At start: a quota lowered since the last run is enforced by evicting. */
  enforce(signal: AbortSignal): Promise<void> {
    if (this.settings.maxBytes === 0) return Promise.resolve();
    return this.admissions.runExclusive(async () => {
      try {
        await this.makeRoom(undefined, 0, signal, ["quota"]);
      } catch (err) {
        // what the cache already holds is not lost for being over the quota: the next pull is refused instead
        if (!(err instanceof ModelCacheError && err.kind === "resource_exhausted")) throw err;
        this.logger.warn({ maxBytes: this.settings.maxBytes, reason: err.message }, "the cache holds more than --cache-max-bytes and evicting every evictable install would not bring it under");
      }
    });
  }

  private reservedBytes(): number {
    let sum = 0;
    for (const bytes of this.reserved.values()) sum += bytes;
    return sum;
  }

  private async makeRoom(name: string | undefined, addBytes: number, signal: AbortSignal, checks: EvictionReason[] = ["quota", "min_free"]): Promise<void> {
    const runtime = this.runtime();
    const { maxBytes, minFreeBytes } = this.settings;
    const reserved = this.reservedBytes();
    const { models, storedBytes } = await cacheBytes(runtime);
    const fs = await statfs(runtime.layout.root).catch((err: unknown) => {
      throw filesystemError("read the free space of", runtime.layout.root, err);
    });
    const freeBytes = fs.bavail * fs.bsize;
    const over = {
      quota: checks.includes("quota") && maxBytes > 0 ? storedBytes + reserved + addBytes - maxBytes : 0,
      min_free: checks.includes("min_free") ? minFreeBytes - (freeBytes - reserved - addBytes) : 0,
    };
    const needed = Math.max(over.quota, over.min_free);
    if (needed <= 0) return;
    const reason: EvictionReason = over.quota >= over.min_free ? "quota" : "min_free";

    const victims = models.filter((m) => this.evictable(m, name));
    const freeable = victims.reduce((sum, m) => sum + m.exclusiveBytes, 0);
    if (freeable < needed) throw this.exhausted(name, reason, needed, freeable, { storedBytes, freeBytes, reserved, addBytes });

    let freed = 0;
    for (const victim of victims) {
      if (freed >= needed) break;
      freed += await this.evict(victim.name, reason, signal);
    }
    if (freed < needed) throw this.exhausted(name, reason, needed - freed, 0, { storedBytes, freeBytes, reserved, addBytes });
  }

  private evictable(model: CachedModel, pulling: string | undefined): boolean {
    const runtime = this.runtime();
    return model.name !== pulling && !model.pinned && runtime.leases.count(model.name) === 0 && runtime.pulls.find(model.name) === undefined;
  }

  /** Drops one install as DropCache does, keeping the registration; 0 when it turned out to be in use. */
  private async evict(name: string, reason: EvictionReason, signal: AbortSignal): Promise<number> {
    const runtime = this.runtime();
    let release: () => Promise<void>;
    try {
      release = await runtime.locks.acquire(name, signal, VICTIM_LOCK_WAIT_MS);
    } catch (err) {
      // another operation holds the install: it is in use, so it is not evicted
      if (err instanceof ModelCacheError && err.kind === "unavailable") return 0;
      throw err;
    }
    try {
      const record = await runtime.registry.models.get(name);
      // looked at again under the lock: a pin, a lease or a pull may have come meanwhile
      if (!record?.install || record.pinned || runtime.leases.count(name) > 0 || runtime.pulls.find(name)) return 0;
      const removal = await parkForRemoval(runtime.layout, name, runtime.store);
      await rm(runtime.layout.partialDir(name), { recursive: true, force: true });
      await recordNoInstall(runtime.registry, name);
      await removal.finish();
      this.logger.warn({ model: name, reason, freedBytes: removal.freedBytes }, `evicted model '${name}' to make room (${reason === "quota" ? "--cache-max-bytes" : "--min-free-bytes"}); it stays registered`);
      // the server itself changed the cache: an audit line as for a call that does
      this.logger.info({ audit: true, caller: "modelcache (eviction)", method: "evict", model: name, reason, result: "OK" }, "audit");
      for (const recorder of this.recorders) recorder.evicted(name, reason, removal.freedBytes);
      return removal.freedBytes;
    } finally {
      await release();
    }
  }

  private exhausted(
    name: string | undefined,
    reason: EvictionReason,
    needed: number,
    freeable: number,
    seen: { storedBytes: number; freeBytes: number; reserved: number; addBytes: number },
  ): ModelCacheError {
    const flag = reason === "quota" ? `--cache-max-bytes (${this.settings.maxBytes} bytes; the cache holds ${seen.storedBytes})` : `--min-free-bytes (${this.settings.minFreeBytes} bytes; the filesystem has ${seen.freeBytes} free)`;
    const what = name === undefined ? "the cache" : `pulling model '${name}' (${seen.addBytes} bytes to add${seen.reserved > 0 ? `, ${seen.reserved} reserved by pulls under way` : ""})`;
    return new ModelCacheError(
      "resource_exhausted",
      `${what} needs ${needed} bytes more room under ${flag}; evicting every install that may go (neither pinned, leased nor being pulled) would free only ${freeable} bytes, so nothing was evicted or fetched: ${reason === "quota" ? "raise --cache-max-bytes" : "free space on that filesystem, or lower --min-free-bytes"}, or unpin, release or drop installs`,
    );
  }
}
