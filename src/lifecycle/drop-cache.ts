// DropCache: remove a model's artifacts (and resumable downloads) and keep its registration.
// Refused while a pull of the model is queued or running.
// The install is parked for deletion before the registry changes and deleted
// after, so a crash at any step leaves the model either installed as it was
// or without an install (startup recovery finishes the delete).
import { rm } from "node:fs/promises";
import { parkForRemoval } from "../cache/remove-install.js";
import { getModel } from "../registry/get-model.js";
import { recordNoInstall } from "../registry/record-install.js";
import type { Runtime } from "../runtime.js";

export async function dropCache(runtime: Runtime, name: string, signal: AbortSignal): Promise<{ removed: boolean; freedBytes: number }> {
  await getModel(runtime.registry, name);
  runtime.pulls.refuseWhilePulling(name, "DropCache");
  return runtime.locks.run(name, signal, async () => {
    // a pull may have been asked for while this call waited for the lock
    runtime.pulls.refuseWhilePulling(name, "DropCache");
    const removal = await parkForRemoval(runtime.layout, name, runtime.store);
    await rm(runtime.layout.partialDir(name), { recursive: true, force: true });
    await recordNoInstall(runtime.registry, name);
    await removal.finish();
    return { removed: removal.removed, freedBytes: removal.freedBytes };
  });
}
