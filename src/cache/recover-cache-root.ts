// Startup housekeeping for the cache root: work in progress in .staging/ is
// abandoned, replaced installs in .purge/ are deleted, and an install that a
// crash left parked in .purge/ (between the two renames of a promotion, so
// that the model has no install) is moved back. Entries of a model whose
// lock another live process holds are that process's business and left alone.
// Resumable hub downloads in .partial/ are kept for the newest commit of each
// registered model, so a pull interrupted by a restart resumes.
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
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
  /** resumable downloads dropped: of unregistered models, or of older commits */
  partialRemoved: number;
}

/**
 * Keeps, for each registered model, the resumable downloads of its newest
 * commit (the pull to resume); drops older commits and unregistered models.
 */
async function prunePartials(layout: CacheLayout, registered: ReadonlySet<string>): Promise<number> {
  let removed = 0;
  for (const name of await readdir(layout.partial).catch(() => [])) {
    const dir = join(layout.partial, name);
    const commits = isValidName(name) && registered.has(name) ? await readdir(dir).catch(() => []) : [];
    const newest = (await Promise.all(commits.map(async (c) => ({ c, at: (await stat(join(dir, c))).mtimeMs })))).sort((a, b) => b.at - a.at)[0]?.c;
    const drop = registered.has(name) && isValidName(name) ? commits.filter((c) => c !== newest).map((c) => join(dir, c)) : [dir];
    for (const path of drop) {
      await rm(path, { recursive: true, force: true });
      removed += 1;
    }
  }
  return removed;
}

export async function recoverCacheRoot(layout: CacheLayout, locks: ModelLocks, registered: ReadonlySet<string>): Promise<Recovery> {
  await mkdir(layout.root, { recursive: true });
  const recovery: Recovery = { stagingRemoved: 0, purgeRemoved: 0, restored: [], skipped: [], partialRemoved: 0 };
  recovery.partialRemoved = await prunePartials(layout, registered);
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
