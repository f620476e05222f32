// UnregisterModel: forget a model. An installed model keeps its artifacts
// unless the caller asks for them to go too, so nothing is orphaned on disk.
import { lstat, rm } from "node:fs/promises";
import { removeInstall } from "../cache/remove-install.js";
import { ModelCacheError } from "../errors.js";
import { getModel, notRegistered } from "../registry/get-model.js";
import type { Runtime } from "../runtime.js";

export async function unregisterModel(runtime: Runtime, name: string, dropCache: boolean, signal: AbortSignal): Promise<boolean> {
  await getModel(runtime.registry, name);
  return runtime.locks.run(name, signal, async () => {
    const record = await runtime.registry.models.get(name);
    if (record === undefined) throw notRegistered(name);
    const cacheDir = runtime.layout.modelDir(name);
    const onDisk = (await lstat(cacheDir).catch(() => undefined)) !== undefined;
    if ((onDisk || record.status !== "registered") && !dropCache) {
      throw new ModelCacheError(
        "failed_precondition",
        `local AI model '${name}' is installed at '${cacheDir}': set drop_cache to true to remove its artifacts with it, or call DropCache first`,
      );
    }
    if (onDisk) await removeInstall(runtime.layout, name);
    await rm(runtime.layout.partialDir(name), { recursive: true, force: true });
    await runtime.registry.records.run(name, undefined, () => runtime.registry.models.del(name));
    return true;
  });
}
