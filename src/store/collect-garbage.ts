// Removes content nothing references: a blob whose only link is its own
// name in the store. Installs, staging dirs of running pulls and parked
// installs all hold links, so what a pull is installing is never collected;
// nor is what an admitted pull counts on linking (the store's holds).
// Each blob is checked and removed holding its lock, so a pull of this
// process cannot link it in between; against a server sharing the cache
// root, whose pulls take no lock of ours, the blob's name is first moved
// aside (nothing can link it any more) and its link count read again: a
// blob linked in between gets its name back, and a link that comes too late
// finds no blob and fetches the content again.
import { link, readdir, rename, rm, unlink } from "node:fs/promises";
import { join } from "node:path";
import { errorCode, filesystemError } from "../errors.js";
import { SHA256, type ContentStore, statBlob } from "./content-store.js";
import { renewSignature } from "./verify-content.js";

/** The prefix of a blob's name moved aside while it is collected, in the collecting process's ingest area. */
export const COLLECTING = "collect-";

export interface Collected {
  freedBytes: number;
  removed: number;
}

/**
 * Removes an install that has left its place (a parked directory): each of
 * its files that links stored content is unlinked holding the blob's lock,
 * the step's new signature recorded only when the blob was as the store
 * last recorded it (a write through the install's file is never taken for
 * the store's own); a blob left without a reference goes, and so does a
 * quarantined copy whose last install this was. Then the directory goes.
 */
export async function releaseContent(store: ContentStore, dir: string, files: readonly { path: string; sha256: string }[]): Promise<Collected> {
  const collected: Collected = { freedBytes: 0, removed: 0 };
  // one blob that fails (its record cannot be written on a full disk) does not keep the others' space
  const failures: unknown[] = [];
  for (const file of files) {
    if (!SHA256.test(file.sha256)) continue;
    const path = join(dir, file.path);
    await store.withBlob(file.sha256, undefined, async () => {
      const held = await statBlob(path);
      if (!held?.isFile()) return;
      const stored = await statBlob(store.blobPath(file.sha256));
      if (stored?.ino === held.ino) {
        // a signature that could not be recorded leaves the old one, which the unlink no longer
        // matches: the next use hashes the blob again; the failure is reported once the space is freed
        await renewSignature(store, file.sha256, () => unlinkOwn(path)).catch((err: unknown) => failures.push(err));
        // content an admitted pull counts on linking stays, as if referenced
        if ((await statBlob(store.blobPath(file.sha256)))?.nlink === 1n && !store.isHeld(file.sha256) && (await collectBlob(store, file.sha256, Number(stored.size)))) {
          collected.freedBytes += Number(stored.size);
          collected.removed += 1;
        }
        return;
      }
      await unlinkOwn(path);
      const quarantined = join(store.quarantineDir, `${file.sha256}.${held.ino}`);
      const left = await statBlob(quarantined);
      if (left?.ino === held.ino && left.nlink === 1n) {
        // the quarantined copy's last install: it goes with it
        await unlinkOwn(quarantined);
        store.markCondemned(file.sha256, held.ino, false);
      }
    }).catch((err: unknown) => failures.push(err));
  }
  await rm(dir, { recursive: true, force: true });
  if (failures.length > 0) throw failures[0];
  return collected;
}

async function unlinkOwn(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    // already gone: nothing to remove
    if (errorCode(err) !== "ENOENT") throw filesystemError("remove", path, err);
  }
}

export interface Garbage extends Collected {
  /** names under the store's directory that are not 64 hex digits: never touched, reported */
  strays: string[];
}

/** Every unreferenced blob (removed unless `dryRun`), and the names in the store that are not content. */
export async function collectGarbage(store: ContentStore, dryRun: boolean): Promise<Garbage> {
  const garbage: Garbage = { freedBytes: 0, removed: 0, strays: [] };
  let names: string[];
  try {
    names = await readdir(store.blobsDir);
  } catch (err) {
    if (errorCode(err) === "ENOENT") return garbage;
    throw filesystemError("list", store.blobsDir, err);
  }
  await sweepQuarantine(store, dryRun, garbage);
  for (const name of names.sort()) {
    if (!SHA256.test(name)) {
      garbage.strays.push(name);
      continue;
    }
    await store.withBlob(name, undefined, async () => {
      const stats = await statBlob(store.blobPath(name));
      if (!stats?.isFile() || stats.nlink !== 1n || store.isHeld(name)) return;
      if (!dryRun && !(await collectBlob(store, name, Number(stats.size)))) return;
      garbage.freedBytes += Number(stats.size);
      garbage.removed += 1;
    });
  }
  return garbage;
}

/**
 * Removes a blob found with no reference, unless another process links it
 * meanwhile. Its name moves aside first, so that no link can be made to it
 * any more; then its link count decides. Called holding the blob's lock.
 * Returns whether it was removed.
 */
async function collectBlob(store: ContentStore, sha256: string, sizeBytes: number): Promise<boolean> {
  const path = store.blobPath(sha256);
  const aside = store.ingestPath(`${COLLECTING}${sha256}.`);
  // a PruneCache of this process leaves it alone; after a crash, restoreAside gives it back its name
  store.ingesting.add(aside);
  try {
    try {
      await rename(path, aside);
    } catch (err) {
      // another process collected it first; but ENOENT also says the ingest area is gone,
      // which must not pass for that (nothing would ever be collected again)
      if (errorCode(err) === "ENOENT" && (await statBlob(path)) === undefined) return false;
      throw filesystemError("move aside for removal", path, err);
    }
    const stats = await statBlob(aside);
    if (stats?.nlink === 1n) {
      await unlink(aside).catch((err: unknown) => {
        throw filesystemError("remove", aside, err);
      });
      store.countSize(sizeBytes, -1);
      await store.forget(sha256);
      return true;
    }
    await restoreAside(store, sha256, aside);
    return false;
  } finally {
    store.ingesting.delete(aside);
  }
}

/**
 * Gives content moved aside for collection its store name back (another
 * process linked it in between, or a crash came before the end), then
 * removes the aside name. When the store holds that content under a newer
 * file already, the aside one only loses its extra name. Returns whether
 * the name was given back.
 */
export async function restoreAside(store: ContentStore, sha256: string, aside: string): Promise<boolean> {
  const path = store.blobPath(sha256);
  let restored = true;
  try {
    await link(aside, path);
  } catch (err) {
    // EEXIST: committed again meanwhile, under a newer file; ENOENT: another process restored it first
    const code = errorCode(err);
    if (code !== "EEXIST" && code !== "ENOENT") throw filesystemError("give back its name to", path, err);
    restored = false;
  }
  await unlink(aside).catch((err: unknown) => {
    // already removed by another process restoring it too
    if (errorCode(err) !== "ENOENT") throw filesystemError("remove", aside, err);
  });
  return restored;
}

/** Quarantined content no install links any more (its name there is its only link). */
async function sweepQuarantine(store: ContentStore, dryRun: boolean, garbage: Garbage): Promise<void> {
  let names: string[];
  try {
    names = await readdir(store.quarantineDir);
  } catch (err) {
    // nothing was ever condemned
    if (errorCode(err) === "ENOENT") return;
    throw filesystemError("list", store.quarantineDir, err);
  }
  for (const name of names.sort()) {
    const [sha256] = name.split(".");
    if (!sha256 || !SHA256.test(sha256)) continue;
    const path = join(store.quarantineDir, name);
    await store.withBlob(sha256, undefined, async () => {
      const stats = await statBlob(path);
      if (!stats?.isFile() || stats.nlink !== 1n) return;
      if (!dryRun) {
        await unlinkOwn(path);
        store.markCondemned(sha256, stats.ino, false);
      }
      garbage.freedBytes += Number(stats.size);
      garbage.removed += 1;
    });
  }
}
