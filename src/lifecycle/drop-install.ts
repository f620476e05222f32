// The removal DropCache and eviction share: the install parked for deletion
// (one synced rename), its resumable downloads removed, the registry told,
// then the parked install deleted and the content only it held released. A
// crash at any step leaves the model either installed as it was or without
// an install (startup recovery finishes the delete). Called holding the
// model's lock, inside the leases' `removing` step. The install's Hugging
// Face cache view goes before all that.
import { rm } from "node:fs/promises";
import type { CacheLayout } from "../cache/layout.js";
import { type ParkedRemoval, parkForRemoval } from "../cache/remove-install.js";
import type { HfCacheView } from "../hf-cache-view/hf-cache-view.js";
import type { Registry } from "../registry/open-registry.js";
import { recordNoInstall } from "../registry/record-install.js";
import type { ContentStore } from "../store/content-store.js";

export async function dropInstall(scope: { registry: Registry; layout: CacheLayout; store: ContentStore; view?: HfCacheView }, name: string): Promise<Pick<ParkedRemoval, "removed" | "freedBytes">> {
  // the cache view goes first: its links would keep the content alive, and a crash after this rebuilds it at start
  await scope.view?.removed(name);
  const removal = await parkForRemoval(scope.layout, name, scope.store);
  await rm(scope.layout.partialDir(name), { recursive: true, force: true });
  try {
    await recordNoInstall(scope.registry, name);
  } finally {
    // once parked the install is gone, as a restart after a crash here would finish it: its
    // space is freed even when the registry refused the write (a full disk needs it most)
    await removal.finish();
  }
  return { removed: removal.removed, freedBytes: removal.freedBytes };
}
