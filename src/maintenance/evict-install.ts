// Eviction: one install dropped to make room, as DropCache drops it, keeping
// the model's registration. It never waits for a lock a pull of this process
// holds (that pull may be waiting for the very admission that evicts), and a
// lease asked for while it runs loses, as against a DropCache.
import type { HfCacheView } from "../hf-cache-view/hf-cache-view.js";
import type { Logger } from "pino";
import { freeableBytes } from "../cache/footprint.js";
import type { CacheLayout } from "../cache/layout.js";
import type { ModelLocks } from "../cache/model-lock.js";
import type { Leases } from "../consumers/leases.js";
import { dropInstall } from "../lifecycle/drop-install.js";
import type { PullJobs } from "../pull/pull-jobs.js";
import type { Registry } from "../registry/open-registry.js";
import type { ContentStore } from "../store/content-store.js";

export type EvictionReason = "quota" | "min_free";

/** What an eviction looks at and acts on. */
export interface EvictionScope {
  registry: Registry;
  layout: CacheLayout;
  locks: ModelLocks;
  pulls: PullJobs;
  leases: Leases;
  store: ContentStore;
  view?: HfCacheView;
}

/** How long eviction waits for another process to let go of a victim's lock before passing it over: a held lock means it is in use. */
const VICTIM_LOCK_WAIT_MS = 1000;

/**
 * Drops `name`'s install, keeping the registration: the bytes freed (content
 * in `kept`, which the pull making room will link, frees nothing), or
 * undefined when the install turned out to be in use (pinned, leased, pulled
 * or locked meanwhile) and was left alone.
 */
export async function evictInstall(scope: EvictionScope, name: string, reason: EvictionReason, kept: Set<number>, logger: Logger, signal: AbortSignal): Promise<number | undefined> {
  signal.throwIfAborted();
  // never waits for a caller of this process: a pull holding the lock may be waiting for this admission
  const release = await scope.locks.tryAcquire(name, VICTIM_LOCK_WAIT_MS, { freesSpace: true });
  if (!release) return undefined;
  try {
    const record = await scope.registry.models.get(name);
    // looked at again under the lock: a pin, a lease or a pull may have come meanwhile
    if (!record?.install || record.pinned || scope.leases.count(name) > 0 || scope.pulls.find(name)) return undefined;
    const freedBytes = freeableBytes([scope.layout.modelDir(name)], kept);
    // a removal as DropCache's: a lease asked for while it runs loses
    await scope.leases.removing(name, { refuse: { operation: "eviction", howToForce: "release it" } }, () => dropInstall(scope, name));
    logger.warn({ model: name, reason, freedBytes }, `evicted model '${name}' to make room (${reason === "quota" ? "--cache-max-bytes" : "--min-free-bytes"}); it stays registered`);
    // the server itself changed the cache: an audit line as for a call that does
    logger.info({ audit: true, caller: "modelcache (eviction)", method: "evict", model: name, reason, result: "OK" }, "audit");
    return freedBytes;
  } finally {
    await release();
  }
}
