// Startup housekeeping for the cache root: work in progress in .staging/ is
// abandoned, replaced installs in .purge/ are deleted, and an install that a
// crash left parked in .purge/ (between the two renames of a promotion, so
// that the model has no install) is moved back. Entries of a model whose
// lock another live process holds are that process's business and left alone.
import { mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { isValidName } from "../registry/names.js";
import { syncDirectory } from "./durable.js";
import type { CacheLayout } from "./layout.js";
import type { ModelLocks } from "./model-lock.js";
import { parkedModelName } from "./park-install.js";

export interface Recovery {
  stagingRemoved: number;
  purgeRemoved: number;
  restored: string[];
  /** models whose leftovers another process is working on */
  skipped: string[];
}

export async function recoverCacheRoot(layout: CacheLayout, locks: ModelLocks): Promise<Recovery> {
  await mkdir(layout.root, { recursive: true });
  const recovery: Recovery = { stagingRemoved: 0, purgeRemoved: 0, restored: [], skipped: [] };
  const staging = await readdir(layout.staging).catch(() => []);
  const parked = (await readdir(layout.purge).catch(() => [])).sort();
  const names = new Set([...staging, ...parked].map(parkedModelName));
  for (const name of names) {
    const release = isValidName(name) ? await locks.tryAcquire(name) : async () => undefined;
    if (!release) {
      recovery.skipped.push(name);
      continue;
    }
    try {
      for (const entry of staging.filter((e) => parkedModelName(e) === name)) {
        await rm(join(layout.staging, entry), { recursive: true, force: true });
        recovery.stagingRemoved += 1;
      }
      for (const entry of parked.filter((e) => parkedModelName(e) === name)) {
        const path = join(layout.purge, entry);
        if (isValidName(name) && !recovery.restored.includes(name)) {
          try {
            await rename(path, layout.modelDir(name));
            recovery.restored.push(name);
            continue;
          } catch {
            // the model has an install again: this parked copy is stale
          }
        }
        await rm(path, { recursive: true, force: true });
        recovery.purgeRemoved += 1;
      }
    } finally {
      await release();
    }
  }
  if (recovery.restored.length > 0) await syncDirectory(layout.root);
  return recovery;
}
