// DropCache: remove a model's artifacts (and resumable downloads) and keep its registration.
// Refused while a pull of the model is queued or running, and while a service
// holds a lease on it unless `force`, which ends the leases.
// The install goes as drop-install.ts removes it.
import { getModel } from "../registry/get-model.js";
import { dropInstall } from "./drop-install.js";
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
    return runtime.leases.removing(name, admission, () => dropInstall(runtime, name));
    // it frees space: on a disk with no block left it may spend the lock reserve
  }, { freesSpace: true });
}
