// Removes content nothing references: a blob whose only link is its own
// name in the store. Installs, staging dirs of running pulls and parked
// installs all hold links, so what a pull is installing is never collected;
// nor is what an admitted pull counts on linking (the store's holds).
// Each blob is checked and removed holding its lock, so a pull cannot link
// it in between.
import { readdir } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";
import { SHA256, type ContentStore, statBlob } from "./content-store.js";
import { recordSignature } from "./link-content.js";
import { removeBlob } from "./verify-content.js";

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
  for (const sha256 of new Set(sha256s)) {
    if (!SHA256.test(sha256)) continue;
    await store.withBlob(sha256, undefined, async () => {
      const stats = await statBlob(store.blobPath(sha256));
      if (!stats?.isFile()) return;
      // content an admitted pull counts on linking stays, as if referenced
      if (stats.nlink === 1n && !store.isHeld(sha256)) {
        await removeBlob(store, sha256, Number(stats.size));
        collected.freedBytes += Number(stats.size);
        collected.removed += 1;
      } else {
        await recordSignature(store, sha256);
      }
    });
  }
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
      if (!dryRun) await removeBlob(store, name, Number(stats.size));
      garbage.freedBytes += Number(stats.size);
      garbage.removed += 1;
    });
  }
  return garbage;
}
