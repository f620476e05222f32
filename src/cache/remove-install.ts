// Removes a model's install in two steps, so that a caller can change the
// registry in between: first the install is parked in .purge/ for deletion
// with one synced rename (readers never see half a directory, and a crash
// from then on ends with the install gone, never half there), then deleted,
// and the stored content it alone referenced leaves the store with it.
import { rm } from "node:fs/promises";
import type { ContentStore } from "../store/content-store.js";
import { releaseContent } from "../store/collect-garbage.js";
import { exclusiveBytes } from "./footprint.js";
import { manifestIn } from "./install-artifacts.js";
import type { CacheLayout } from "./layout.js";
import { parkInstall } from "./park-install.js";

export interface ParkedRemoval {
  /** whether there was an install */
  removed: boolean;
  /** the bytes its removal frees: its files no other install shares */
  freedBytes: number;
  /** deletes the parked install; if it never runs, startup recovery does it */
  finish(): Promise<void>;
}

/** Without a store (at startup, before it opens) the content is left for PruneCache. */
export async function parkForRemoval(layout: CacheLayout, name: string, store?: ContentStore): Promise<ParkedRemoval> {
  const parked = await parkInstall(layout, name, "delete");
  if (!parked) return { removed: false, freedBytes: 0, finish: async () => undefined };
  return {
    removed: true,
    freedBytes: exclusiveBytes(parked),
    finish: async () => {
      const manifest = manifestIn(parked);
      if (store) await releaseContent(store, parked, manifest?.files ?? []);
      else await rm(parked, { recursive: true, force: true });
    },
  };
}
