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
import { link, readdir, rename, unlink } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";
import { SHA256, type ContentStore, statBlob } from "./content-store.js";
import { recordSignature } from "./link-content.js";
import { forget } from "./verify-content.js";

/** The prefix of a blob's name moved aside while it is collected, in the collecting process's ingest area. */
export const COLLECTING = "collect-";

export interface Collected {
  freedBytes: number;
  removed: number;
}

/**
 * After an install was removed: each of its blobs left without a reference
 * goes; the others get the signature the removal left recorded (it changed
 * their ctime), so their next reuse need not hash them again.
 */
export async function releaseContent(store: ContentStore, sha256s: Iterable<string>): Promise<Collected> {
  const collected: Collected = { freedBytes: 0, removed: 0 };
  // one blob that fails (its record cannot be written on a full disk) does not keep the others' space
  const failures: unknown[] = [];
  for (const sha256 of new Set(sha256s)) {
    if (!SHA256.test(sha256)) continue;
    await store.withBlob(sha256, undefined, async () => {
      const stats = await statBlob(store.blobPath(sha256));
      if (!stats?.isFile()) return;
      // content an admitted pull counts on linking stays, as if referenced
      if (stats.nlink === 1n && !store.isHeld(sha256) && (await collectBlob(store, sha256, Number(stats.size)))) {
        collected.freedBytes += Number(stats.size);
        collected.removed += 1;
      } else if (stats.nlink > 1n || store.isHeld(sha256)) {
        await recordSignature(store, sha256);
      }
    }).catch((err: unknown) => failures.push(err));
  }
  if (failures.length > 0) throw failures[0];
  return collected;
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
      await forget(store, sha256);
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
