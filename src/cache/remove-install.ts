// Removes a model's install in two steps, so that a caller can change the
// registry in between: first the install is parked in .purge/ for deletion
// with one synced rename (readers never see half a directory, and a crash
// from then on ends with the install gone, never half there), then deleted.
import { rm } from "node:fs/promises";
import { footprintBytes } from "./footprint.js";
import type { CacheLayout } from "./layout.js";
import { parkInstall } from "./park-install.js";

export interface ParkedRemoval {
  /** whether there was an install */
  removed: boolean;
  /** how many bytes its files took */
  freedBytes: number;
  /** deletes the parked install; if it never runs, startup recovery does it */
  finish(): Promise<void>;
}

export async function parkForRemoval(layout: CacheLayout, name: string): Promise<ParkedRemoval> {
  const parked = await parkInstall(layout, name, "delete");
  if (!parked) return { removed: false, freedBytes: 0, finish: async () => undefined };
  return { removed: true, freedBytes: footprintBytes(parked), finish: () => rm(parked, { recursive: true, force: true }) };
}
