// Capacity: keeps the cache within --cache-max-bytes and the filesystem above
// --min-free-bytes without an operator. A pull asks before it fetches
// anything, telling its files; the content the store already holds (and the
// pull will link) is held for it, and only the rest counts as what it adds.
// When that does not fit, content nothing references is collected first,
// then installs are evicted least recently used first (never one pinned,
// leased, being pulled, busy in this process, or the model being pulled)
// until it does. If even every evictable install would not make room, the
// pull is refused with RESOURCE_EXHAUSTED and nothing is evicted. Admissions
// are taken one at a time and each admitted pull's bytes stay reserved until
// it stores them or ends, so pulls running together cannot over-commit the
// room one of them was given. Admission never waits for a model lock another
// caller of this process holds: a pull holding its lock may be waiting for
// admission.
import { statfs } from "node:fs/promises";
import { Mutex } from "async-mutex";
import type { Logger } from "pino";
import { freeableBytes } from "../cache/footprint.js";
import type { Manifest } from "../cache/manifest.js";
import { ModelCacheError, filesystemError } from "../errors.js";
import { type CachedModel, cacheBytes } from "../cache/cache-bytes.js";
import type { SourceFile } from "../sources/artifact-source.js";
import { collectGarbage } from "../store/collect-garbage.js";
import { holdStoredContent } from "./hold-stored-content.js";

import { type EvictionReason, type EvictionScope, evictInstall } from "../maintenance/evict-install.js";

export type { EvictionReason };

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

/** The room a pull was given; release it when the pull ends, however it ends. */
export interface Admission {
  /** the models evicted to make room for this pull */
  evicted: string[];
  /** the pull stored `bytes` of new content: they count as stored now, no longer as reserved */
  committed(bytes: number): void;
  /**
   * Reserves `bytes` more, found only while the pull runs (what an OCI archive
   * layer unpacks to), evicting as admission does; RESOURCE_EXHAUSTED naming
   * the flag when no eviction could make room. `slack` more is reserved too
   * when it fits without evicting, so a run of small entries asks once.
   * Returns the bytes reserved.
   */
  extend(bytes: number, slack: number, signal: AbortSignal): Promise<number>;
  release(): void;
}

/** What a pull asks room for. */
export interface PullRoom {
  files: readonly SourceFile[];
  /** the manifest of the install the pull replaces: a directory's file of the same path and size is taken as its content */
  replaced?: Manifest;
}


/** What capacity looks at and acts on: the installs, what holds them (pins, leases, pulls, locks), and the store. */
export type CapacityScope = EvictionScope;

export class Capacity {
  private readonly admissions = new Mutex();
  /** what each admitted pull may still add */
  private readonly reserved = new Map<symbol, number>();

  constructor(
    readonly settings: CapacitySettings,
    /** read when needed: the pull jobs are made after capacity */
    private readonly runtime: () => CapacityScope,
    private readonly logger: Logger,
    private readonly recorders: EvictionRecorder[] = [],
  ) {}

  /** Makes room for `name`'s pull to add what the store lacks of its files, evicting when needed; refuses when no eviction could. */
  admit(name: string, room: PullRoom, signal: AbortSignal): Promise<Admission> {
    return this.admissions.runExclusive(async () => {
      const held = await holdStoredContent(this.runtime().store, room.files, room.replaced, signal);
      try {
        const evicted = await this.makeRoom(name, held.addBytes, held.inodes, signal);
        const key = Symbol(name);
        this.reserved.set(key, held.addBytes);
        return {
          evicted,
          committed: (bytes) => {
            const left = this.reserved.get(key);
            if (left !== undefined) this.reserved.set(key, Math.max(0, left - bytes));
          },
          extend: (bytes, slack, signal) =>
            this.admissions.runExclusive(async () => {
              if (!this.reserved.has(key)) return 0;
              const fits = slack > 0 && (await this.shortfall(bytes + slack, ["quota", "min_free"])).needed <= 0;
              if (!fits) await this.makeRoom(name, bytes, held.inodes, signal, undefined, true);
              const got = fits ? bytes + slack : bytes;
              this.reserved.set(key, (this.reserved.get(key) ?? 0) + got);
              return got;
            }),
          release: () => {
            this.reserved.delete(key);
            held.release();
          },
        };
      } catch (err) {
        held.release();
        throw err;
      }
    });
  }

  /** At start: a quota lowered since the last run is enforced by evicting. */
  enforce(signal: AbortSignal): Promise<void> {
    if (this.settings.maxBytes === 0) return Promise.resolve();
    return this.admissions.runExclusive(async () => {
      try {
        await this.makeRoom(undefined, 0, new Set(), signal, ["quota"]);
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

  /** How far the cache is from fitting `addBytes` more, by the check that is furthest. */
  private async shortfall(addBytes: number, checks: EvictionReason[]) {
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
    const reason: EvictionReason = over.quota >= over.min_free ? "quota" : "min_free";
    return { needed: Math.max(over.quota, over.min_free), reason, models, seen: { storedBytes, freeBytes, reserved, addBytes } };
  }

  /** Evicts until `addBytes` fit; returns the names evicted. `kept`: inodes of content the pull will link, which eviction must not count on freeing. */
  private async makeRoom(name: string | undefined, addBytes: number, kept: Set<number>, signal: AbortSignal, checks: EvictionReason[] = ["quota", "min_free"], underWay = false): Promise<string[]> {
    let short = await this.shortfall(addBytes, checks);
    if (short.needed <= 0) return [];
    // content no install references goes first: collecting it evicts nobody
    const garbage = await collectGarbage(this.runtime().store, false);
    if (garbage.removed > 0) {
      this.logger.info({ blobsRemoved: garbage.removed, freedBytes: garbage.freedBytes }, "removed stored content no install references to make room");
      short = await this.shortfall(addBytes, checks);
      if (short.needed <= 0) return [];
    }
    const { needed, reason, seen } = short;
    const victims = short.models.filter((m) => this.evictable(m, name));
    const runtime = this.runtime();
    // together: content only victims share is freed once the last of them goes
    const freeable = freeableBytes(victims.map((m) => runtime.layout.modelDir(m.name)), kept);
    if (freeable < needed) throw this.exhausted(name, reason, needed, freeable, seen, underWay);

    const evicted: string[] = [];
    let freed = 0;
    for (const victim of victims) {
      if (freed >= needed) break;
      const bytes = await this.evict(victim.name, reason, kept, signal);
      if (bytes === undefined) continue;
      freed += bytes;
      evicted.push(victim.name);
    }
    if (freed < needed) throw this.exhausted(name, reason, needed - freed, 0, seen, underWay);
    return evicted;
  }

  private evictable(model: CachedModel, pulling: string | undefined): boolean {
    const runtime = this.runtime();
    return model.name !== pulling && !model.pinned && runtime.leases.count(model.name) === 0 && runtime.pulls.find(model.name) === undefined && runtime.locks.users(model.name) === 0;
  }

  /** Evicts one install; the bytes freed, or undefined when it turned out to be in use. */
  private async evict(name: string, reason: EvictionReason, kept: Set<number>, signal: AbortSignal): Promise<number | undefined> {
    const freedBytes = await evictInstall(this.runtime(), name, reason, kept, this.logger, signal);
    if (freedBytes !== undefined) for (const recorder of this.recorders) recorder.evicted(name, reason, freedBytes);
    return freedBytes;
  }

  private exhausted(
    name: string | undefined,
    reason: EvictionReason,
    needed: number,
    freeable: number,
    seen: { storedBytes: number; freeBytes: number; reserved: number; addBytes: number },
    /** the pull asked for more while it ran: what it fetched so far stays as a partial download */
    underWay = false,
  ): ModelCacheError {
    const flag = reason === "quota" ? `--cache-max-bytes (${this.settings.maxBytes} bytes; the cache holds ${seen.storedBytes})` : `--min-free-bytes (${this.settings.minFreeBytes} bytes; the filesystem has ${seen.freeBytes} free)`;
    const what = name === undefined ? "the cache" : `pulling model '${name}' (${seen.addBytes} bytes to add${seen.reserved > 0 ? `, ${seen.reserved} reserved by pulls under way` : ""})`;
    return new ModelCacheError(
      "resource_exhausted",
      `${what} needs ${needed} bytes more room under ${flag}; evicting every install that may go (neither pinned, leased nor being pulled) would free only ${freeable} bytes, so nothing was evicted${underWay ? " and the pull stopped" : " or fetched"}: ${reason === "quota" ? "raise --cache-max-bytes" : "free space on that filesystem, or lower --min-free-bytes"}, or unpin, release or drop installs`,
    );
  }
}
