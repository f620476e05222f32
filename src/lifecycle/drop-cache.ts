// DropCache: remove a model's artifacts (and resumable downloads) and keep its registration.
// Refused while a pull of the model is queued or running, and while a service
// holds a lease on it unless `force`, which ends the leases.
// The install is parked for deletion before the registry changes and deleted
// after, so a crash at any step leaves the model either installed as it was
// or without an install (startup recovery finishes the delete).
import { rm } from "node:fs/promises";
import { parkForRemoval } from "../cache/remove-install.js";
import { getModel } from "../registry/get-model.js";
import { recordNoInstall } from "../registry/record-install.js";
import type { Runtime } from "../runtime.js";

export async function dropCache(runtime: Runtime, name: string, signal: AbortSignal, force = false): Promise<{ removed: boolean; freedBytes: number }> {
  await getModel(runtime.registry, name);
  runtime.pulls.refuseWhilePulling(name, "DropCache");
  if (!force) runtime.leases.refuseWhileLeased(name, "DropCache", "set force to end the leases and drop it anyway");
  return runtime.locks.run(name, signal, async () => {
    // a pull or a lease may have come while this call waited for the lock;
    // the leases decide in the same step as the removal begins, so a lease
    // granted from then on loses (ResolveModel says so) instead of naming a
    // dropped install
    runtime.pulls.refuseWhilePulling(name, "DropCache");
    const admission = force ? { endLeases: true as const } : { refuse: { operation: "DropCache", howToForce: "set force to end the leases and drop it anyway" } };
    return runtime.leases.removing(name, admission, async () => {
      const removal = await parkForRemoval(runtime.layout, name, runtime.store);
      await rm(runtime.layout.partialDir(name), { recursive: true, force: true });
      try {
        await recordNoInstall(runtime.registry, name);
      } finally {
        // once parked the install is gone, as a restart after a crash here would finish it: its
        // space is freed even when the registry refused the write (a full disk needs it most)
        await removal.finish();
      }
      return { removed: removal.removed, freedBytes: removal.freedBytes };
    });
  });
}
