// Removes a model's install: parked in .purge/ with one rename (so readers
// never see half a directory), then deleted.
import { rm } from "node:fs/promises";
import { syncDirectory } from "./durable.js";
import { footprintBytes } from "./footprint.js";
import type { CacheLayout } from "./layout.js";
import { parkInstall } from "./park-install.js";

/** Whether there was an install, and how many bytes its files took. */
export async function removeInstall(layout: CacheLayout, name: string): Promise<{ removed: boolean; freedBytes: number }> {
  const parked = await parkInstall(layout, name);
  if (!parked) return { removed: false, freedBytes: 0 };
  await syncDirectory(layout.root);
  const freedBytes = footprintBytes(parked);
  await rm(parked, { recursive: true, force: true });
  return { removed: true, freedBytes };
}
