// Startup housekeeping for the cache root: work in progress in .staging/ is
// abandoned, and each entry in .purge/ is handled by the intent its name
// states: a parked delete is finished; a parked swap (a crash between the
// two renames of a promotion) is moved back, and removed only when the
// move fails because the model has an install again. Any other failure
// keeps the parked copy, which may be the only one, and is reported.
// Entries of a model whose lock another live process holds are that
// process's business and left alone.
// Resumable hub downloads in .blobs/partial/ (moved there from .partial/,
// where earlier versions kept them, with one rename) are kept for the newest commit of each
// registered model, so a pull interrupted by a restart resumes; older commits
// are pruned under the model's lock, and only for names this registry knows.
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { errorCode } from "../errors.js";
import { isValidName } from "../registry/names.js";
import { syncDirectory } from "../fs/durable.js";
import type { CacheLayout } from "./layout.js";
import type { ModelLocks } from "./model-lock.js";
import { parkedEntry } from "./park-install.js";

export interface Recovery {
  stagingRemoved: number;
  purgeRemoved: number;
  restored: string[];
  /** models whose leftovers were left alone: another process is working on them, or a parked install could not be moved back */
  skipped: string[];
  /** parked installs kept because moving them back failed, and why */
  kept: { entry: string; error: string }[];
  /** resumable downloads of older commits dropped */
  partialRemoved: number;
}

/** The names in `dir`; none when it does not exist (nothing was ever left there). */
async function entriesOf(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if (errorCode(err) === "ENOENT") return [];
    throw err;
  }
}

/**
 * Keeps the resumable downloads of a registered model's newest commit (the
 * pull to resume) and drops its older commits. Called under the model's lock,
 * so never while a download of it is in progress.
 */
async function prunePartials(layout: CacheLayout, name: string): Promise<number> {
  const dir = layout.partialDir(name);
  const commits = await entriesOf(dir);
  const newest = (await Promise.all(commits.map(async (c) => ({ c, at: (await stat(join(dir, c))).mtimeMs })))).sort((a, b) => b.at - a.at)[0]?.c;
  let removed = 0;
  for (const commit of commits.filter((c) => c !== newest)) {
    await rm(join(dir, commit), { recursive: true, force: true });
    removed += 1;
  }
  return removed;
}

/** Moves an earlier version's .partial/ into the store's area, unless the store has its own already. */
async function adoptLegacyPartials(layout: CacheLayout): Promise<void> {
  if ((await entriesOf(layout.legacyPartial)).length === 0) return;
  await mkdir(dirname(layout.partial), { recursive: true });
  try {
    await rename(layout.legacyPartial, layout.partial);
  } catch (err) {
    const code = errorCode(err);
    // the store's own partials are there already: the earlier ones are left for the operator, never mixed in
    if (code === "EEXIST" || code === "ENOTEMPTY") return;
    throw err;
  }
  await syncDirectory(layout.root);
  await syncDirectory(dirname(layout.partial));
}

export async function recoverCacheRoot(layout: CacheLayout, locks: ModelLocks, registered: ReadonlySet<string>): Promise<Recovery> {
  await mkdir(layout.root, { recursive: true });
  const recovery: Recovery = { stagingRemoved: 0, purgeRemoved: 0, restored: [], skipped: [], kept: [], partialRemoved: 0 };
  await adoptLegacyPartials(layout);
  const staging = await entriesOf(layout.staging);
  const parked = (await entriesOf(layout.purge)).sort();
  // resumable downloads of a name this registry does not know may be another
  // server's (servers with their own data dirs may share a cache root): never ours to prune
  const partials = (await entriesOf(layout.partial)).filter((name) => isValidName(name) && registered.has(name));
  const nameOf = (entry: string) => parkedEntry(entry).name;
  const names = new Set([...staging, ...parked].map(nameOf).concat(partials));
  for (const name of names) {
    const release = isValidName(name) ? await locks.tryAcquire(name) : async () => undefined;
    if (!release) {
      recovery.skipped.push(name);
      continue;
    }
    try {
      for (const entry of staging.filter((e) => nameOf(e) === name)) {
        await rm(join(layout.staging, entry), { recursive: true, force: true });
        recovery.stagingRemoved += 1;
      }
      for (const entry of parked.filter((e) => nameOf(e) === name)) {
        const path = join(layout.purge, entry);
        if (isValidName(name) && parkedEntry(entry).intent === "swap") {
          try {
            await rename(path, layout.modelDir(name));
            recovery.restored.push(name);
            continue;
          } catch (err) {
            const code = errorCode(err);
            // only an install already in place makes this parked copy stale;
            // after any other failure it may be the model's only copy
            if (code !== "EEXIST" && code !== "ENOTEMPTY") {
              recovery.kept.push({ entry, error: code ?? String(err) });
              if (!recovery.skipped.includes(name)) recovery.skipped.push(name);
              continue;
            }
          }
        }
        await rm(path, { recursive: true, force: true });
        recovery.purgeRemoved += 1;
      }
      if (partials.includes(name)) recovery.partialRemoved += await prunePartials(layout, name);
    } finally {
      await release();
    }
  }
  if (recovery.restored.length > 0) {
    await syncDirectory(layout.root);
    await syncDirectory(layout.purge);
  }
  return recovery;
}
