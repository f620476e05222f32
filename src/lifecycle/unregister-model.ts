// UnregisterModel: forget a model. An installed model keeps its artifacts
// unless the caller asks for them to go too, so nothing is orphaned on disk.
// Refused while a pull of the model is queued or running, so no pull can
// install a model that is no longer registered.
// The commit point is one synced registry write that marks the record as
// being unregistered: before it, a crash leaves the model as it was; after
// it, the next start finishes the rest (park the install for deletion, drop
// the resumable downloads, delete the record, delete the parked install), so
// a crash never leaves a registered model whose install went missing.
import { lstat, rm } from "node:fs/promises";
import type { CacheLayout } from "../cache/layout.js";
import type { ModelLocks } from "../cache/model-lock.js";
import type { ContentStore } from "../store/content-store.js";
import { parkForRemoval } from "../cache/remove-install.js";
import { ModelCacheError, errorCode } from "../errors.js";
import { getModel, notRegistered } from "../registry/get-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { HfCacheView } from "../hf-cache-view/hf-cache-view.js";
import type { Registry } from "../registry/open-registry.js";
import type { Runtime } from "../runtime.js";

// fsync'd LevelDB writes: the commit point must survive a power cut, not only
// a crash (a sublevel passes the option on to classic-level, which honours it;
// the sublevel's types leave it out)
const SYNCED: {} = { sync: true };

/** `check` runs on the record under the model's lock, and throws to refuse. */
export async function unregisterModel(runtime: Runtime, name: string, dropCache: boolean, signal: AbortSignal, check?: (record: ModelRecord) => void): Promise<boolean> {
  // a refusal that stands (the models file declares the model) before one that passes (a pull)
  check?.(await getModel(runtime.registry, name));
  runtime.pulls.refuseWhilePulling(name, "UnregisterModel");
  return runtime.locks.run(name, signal, async () => {
    // a pull may have been asked for while this call waited for the lock; one
    // asked for after this check finds the record gone when it takes the lock
    runtime.pulls.refuseWhilePulling(name, "UnregisterModel");
    const record = await runtime.registry.models.get(name);
    if (record === undefined || record.unregistering) throw notRegistered(name);
    check?.(record);
    const cacheDir = runtime.layout.modelDir(name);
    const onDisk = await lstat(cacheDir).then(
      () => true,
      (err: unknown) => {
        // no install; any other failure to look is not a reason to forget the model
        if (errorCode(err) === "ENOENT") return false;
        throw err;
      },
    );
    if ((onDisk || record.status !== "registered") && !dropCache) {
      throw new ModelCacheError(
        "failed_precondition",
        `local AI model '${name}' is installed at '${cacheDir}': set drop_cache to true to remove its artifacts with it, or call DropCache first`,
      );
    }
    // a removal as DropCache's: decided against the leases as it begins, and
    // a lease asked for while it runs loses
    const admission = dropCache ? { refuse: { operation: "UnregisterModel with drop_cache", howToForce: "end them with a forced DropCache first" } } : { leasesEndLater: true as const };
    return runtime.leases.removing(name, admission, async () => {
      await runtime.registry.records.run(name, undefined, () => runtime.registry.models.put(name, { ...record, unregistering: true }, SYNCED));
      // the leases end with the model (expired ones too): a model registered
      // again under the name starts without them; after a crash from here on,
      // the next start deletes them (Leases.load)
      await runtime.leases.endAll(name);
      await forget(runtime, name);
      return true;
    });
  }, { freesSpace: dropCache });
}

/** The steps after the commit point; the caller holds the model's lock. */
async function forget(runtime: { registry: Registry; layout: CacheLayout; store?: ContentStore; view?: HfCacheView }, name: string): Promise<void> {
  // the cache view before the content it links is released
  await runtime.view?.removed(name);
  const removal = await parkForRemoval(runtime.layout, name, runtime.store);
  await rm(runtime.layout.partialDir(name), { recursive: true, force: true });
  await runtime.registry.records.run(name, undefined, () => runtime.registry.models.del(name, SYNCED));
  await removal.finish();
}

/**
 * At start, before recovery: finishes each unregistration a crash
 * interrupted after its commit point. A model whose lock another live
 * process holds is left for a later start. Returns the names finished.
 */
export async function finishUnregistrations(runtime: { registry: Registry; layout: CacheLayout; locks: ModelLocks }): Promise<string[]> {
  const finished: string[] = [];
  for await (const [name, record] of runtime.registry.models.iterator()) {
    if (!record.unregistering) continue;
    const release = await runtime.locks.tryAcquire(name);
    if (!release) continue;
    try {
      await forget(runtime, name);
      finished.push(name);
    } finally {
      await release();
    }
  }
  return finished;
}
