// Links stored content into an install being staged. Called holding the
// blob's lock, right after verifyContent or commitContent, with the
// signature that check vouched for: content changed since is not linked (the
// caller fetches or copies it again), so nothing reaches an install that was
// not checked as it is. Another server sharing the cache root may collect
// the blob all the same (its collections take no lock of ours): the link
// then finds nothing and says so, and the caller fetches or copies it again.
// A blob at its filesystem's link limit (EMLINK) is copied instead: the
// install gets its own file with the same bytes.
import { constants } from "node:fs";
import { chmod, copyFile, link, open, rm } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";
import { renewSignature } from "./verify-content.js";

/** Whether it linked (or copied) the content: false when the blob is no longer as `checked` says, or gone. */
export async function linkContent(store: ContentStore, sha256: string, target: string, checked: string): Promise<boolean> {
  const path = store.blobPath(sha256);
  const before = await statBlob(path);
  if (!before || signatureOf(before) !== checked) return false;
  let placed = false;
  await renewSignature(store, sha256, async () => void (placed = await placeContent(path, target)), checked);
  return placed;
}

/** Whether the content was placed: false when the blob went since it was looked at (collected by another process). */
async function placeContent(path: string, target: string): Promise<boolean> {
  try {
    await link(path, target);
    return true;
  } catch (err) {
    // gone since it was checked, unless what is missing is the target's dir
    if (errorCode(err) === "ENOENT" && (await statBlob(path)) === undefined) return false;
    if (errorCode(err) !== "EMLINK") throw filesystemError("link stored content into", target, err);
  }
  // the blob has as many links as its filesystem allows: this install gets a copy, synced like any stored file
  try {
    await copyFile(path, target, constants.COPYFILE_FICLONE);
    const handle = await open(target, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await chmod(target, 0o444);
  } catch (err) {
    await rm(target, { force: true });
    throw filesystemError("copy stored content (at its link limit) into", target, err);
  }
  return true;
}
