// UnregisterModel: forget a model. An installed model keeps its artifacts
// unless the caller asks for them to go too, so nothing is orphaned on disk.
// Refused while a pull of the model is queued or running, so no pull can
// install a model that is no longer registered.
// The steps are ordered for crashes: the install is parked for deletion
// (one synced rename), the resumable downloads go, then the registry record,
// then the parked install; a crash at any step leaves either a registered
// model without an install or an unregistered one whose leftovers startup
// recovery deletes, never a half-deleted install of a registered model.
import { lstat, rm } from "node:fs/promises";
import { parkForRemoval } from "../cache/remove-install.js";
import { ModelCacheError, errorCode } from "../errors.js";
import { getModel, notRegistered } from "../registry/get-model.js";
import type { Runtime } from "../runtime.js";

export async function unregisterModel(runtime: Runtime, name: string, dropCache: boolean, signal: AbortSignal): Promise<boolean> {
  await getModel(runtime.registry, name);
  runtime.pulls.refuseWhilePulling(name, "UnregisterModel");
  return runtime.locks.run(name, signal, async () => {
    // a pull may have been asked for while this call waited for the lock; one
    // asked for after this check finds the record gone when it takes the lock
    runtime.pulls.refuseWhilePulling(name, "UnregisterModel");
    const record = await runtime.registry.models.get(name);
    if (record === undefined) throw notRegistered(name);
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
    const removal = await parkForRemoval(runtime.layout, name);
    await rm(runtime.layout.partialDir(name), { recursive: true, force: true });
    await runtime.registry.records.run(name, undefined, () => runtime.registry.models.del(name));
    await removal.finish();
    return true;
  });
}
