// Removes content nothing references: a blob whose only link is its own
// name in the store. Installs, staging dirs of running pulls and parked
// installs all hold links, so what a pull is installing is never collected.
// Each blob is checked and removed holding its lock, so a pull cannot link
// it in between.
import { readdir, rm, unlink } from "node:fs/promises";
import { join } from "node:path";
import { errorCode, filesystemError } from "../errors.js";
import { SHA256, type ContentStore, statBlob } from "./content-store.js";
import { removeBlob, renewSignature } from "./verify-content.js";

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
  for (const file of files) {
    if (!SHA256.test(file.sha256)) continue;
    const path = join(dir, file.path);
    await store.withBlob(file.sha256, undefined, async () => {
      const held = await statBlob(path);
      if (!held?.isFile()) return;
      const stored = await statBlob(store.blobPath(file.sha256));
      if (stored?.ino === held.ino) {
        await renewSignature(store, file.sha256, () => unlinkOwn(path));
        if ((await statBlob(store.blobPath(file.sha256)))?.nlink === 1n) {
          await removeBlob(store, file.sha256, Number(stored.size));
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
    });
  }
  await rm(dir, { recursive: true, force: true });
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
      if (!stats?.isFile() || stats.nlink !== 1n) return;
      if (!dryRun) await removeBlob(store, name, Number(stats.size));
      garbage.freedBytes += Number(stats.size);
      garbage.removed += 1;
    });
  }
  return garbage;
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
